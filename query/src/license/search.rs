//! `GET /v1/licenses?owner=&status=&tier=&expires_before=&limit=&cursor=` (newest first,
//! keyset pagination) and the lookup by key for support staff (`GET /v1/licenses/by-key` with
//! the key in the `X-License-Key` header, or `POST /v1/licenses/by-key` with it in the body;
//! never in a URL, where it would land in access logs).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppJson, AppQuery, Code, ConsistencyPosition};
use keyledger_events::license::LicenseStatus;
use keyledger_projections::license::licenses;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::get::{LICENSE_COLUMNS, LicenseView, find, license_from_row};
use crate::{ConsistencyHeader, QueryState, page_limit};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// The owner, exactly but in any case.
    pub owner: Option<String>,
    /// `active`, `suspended` or `revoked`.
    #[param(pattern = "^(active|suspended|revoked)$")]
    pub status: Option<String>,
    /// `free`, `basic`, `pro` or `enterprise`.
    #[param(pattern = "^(free|basic|pro|enterprise)$")]
    pub tier: Option<String>,
    /// Only licenses that end before this instant (perpetual ones never do).
    pub expires_before: Option<DateTime<Utc>>,
    /// Licenses per page: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Opaque: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of licenses, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LicensePage {
    pub items: Vec<LicenseView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A cursor: the last item's issue time and id.
pub fn encode_cursor(item: &LicenseView) -> String {
    crate::cursor::encode(item.issued_at, item.license_id)
}

pub struct Filter<'a> {
    pub owner: Option<&'a str>,
    pub status: Option<LicenseStatus>,
    pub tier: Option<&'a str>,
    pub expires_before: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

pub async fn search(
    client: &impl GenericClient,
    filter: &Filter<'_>,
) -> Result<Vec<LicenseView>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {LICENSE_COLUMNS} FROM licenses \
             WHERE ($1::text IS NULL OR lower(owner) = lower($1)) \
               AND ($2::text IS NULL OR status = $2) \
               AND ($3::text IS NULL OR tier = $3) \
               AND ($4::timestamptz IS NULL OR expires_at < $4) \
               AND ($5::timestamptz IS NULL OR (issued_at, license_id) < ($5, $6::uuid)) \
             ORDER BY issued_at DESC, license_id DESC LIMIT $7"
        ))
        .await?;
    let (after_at, after_id) = match filter.after {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    client
        .query(
            &statement,
            &[
                &filter.owner,
                &filter.status,
                &filter.tier,
                &filter.expires_before,
                &after_at,
                &after_id,
                &filter.limit,
            ],
        )
        .await?
        .iter()
        .map(license_from_row)
        .collect()
}

/// Searches licenses, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/licenses",
    tag = "licenses",
    params(SearchParams, ConsistencyHeader),
    responses(
        (status = 200, description = "A page of licenses.", body = LicensePage),
        (status = 400, description = "`VAL_INVALID_PARAMETER`: an unknown `status` or `tier`, a `limit` out of range or a cursor not from this API."),
    ),
)]
pub async fn handle(
    State(state): State<QueryState>,
    ConsistencyPosition(position): ConsistencyPosition,
    AppQuery(params): AppQuery<SearchParams>,
) -> Result<Json<LicensePage>, ApiError> {
    let limit = page_limit(params.limit, 100, 1000)?;
    let status = params
        .status
        .as_deref()
        .map(|text| {
            LicenseStatus::parse(text).ok_or_else(|| {
                ApiError::invalid_parameter(
                    "status",
                    "must be active, suspended or revoked (expiry is a date: use expires_before)",
                )
            })
        })
        .transpose()?;
    if let Some(tier) = params.tier.as_deref()
        && keyledger_events::license::Tier::parse(tier).is_none()
    {
        return Err(ApiError::invalid_parameter(
            "tier",
            "must be free, basic, pro or enterprise",
        ));
    }
    let after = match params.cursor.as_deref() {
        None => None,
        Some(text) => Some(crate::cursor::decode(text).ok_or_else(|| {
            ApiError::invalid_parameter("cursor", "is not a cursor from this API")
        })?),
    };
    state.consistent(&[licenses::NAME], position).await?;
    let client = state.client().await?;
    let items = search(
        &client,
        &Filter {
            owner: params.owner.as_deref(),
            status,
            tier: params.tier.as_deref(),
            expires_before: params.expires_before,
            after,
            limit,
        },
    )
    .await
    .map_err(ApiError::from)?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(encode_cursor))
        .flatten();
    Ok(Json(LicensePage { items, next_cursor }))
}

pub const KEY_HEADER: &str = "x-license-key";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ByKeyRequest {
    /// The license key (surrounding whitespace is ignored).
    pub key: String,
}

/// The `X-License-Key` header of `GET /v1/licenses/by-key`.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct LicenseKeyHeader {
    /// The license key (surrounding whitespace is ignored): in a header, never in the URL.
    #[param(rename = "X-License-Key")]
    license_key: String,
}

async fn by_key(
    state: &QueryState,
    key: &str,
    position: Option<i64>,
) -> Result<Json<LicenseView>, ApiError> {
    let hash = hex::encode(Sha256::digest(key.trim().as_bytes()));
    state.consistent(&[licenses::NAME], position).await?;
    let client = state.client().await?;
    let statement = client
        .prepare_cached("SELECT license_id FROM license_validation WHERE key_hash = $1")
        .await
        .map_err(ApiError::from)?;
    let not_found = || ApiError::not_found(Code::ResLicenseNotFound, "no license has this key");
    let row = client
        .query_opt(&statement, &[&hash])
        .await
        .map_err(ApiError::from)?
        .ok_or_else(not_found)?;
    let license_id: Uuid = row.try_get(0).map_err(ApiError::internal)?;
    find(&client, license_id)
        .await
        .map_err(ApiError::from)?
        .map(Json)
        .ok_or_else(not_found)
}

/// Finds the license of a key sent in the `X-License-Key` header.
#[utoipa::path(
    get,
    path = "/v1/licenses/by-key",
    tag = "licenses",
    params(LicenseKeyHeader, ConsistencyHeader),
    responses(
        (status = 200, description = "The key's license.", body = LicenseView),
        (status = 400, description = "`VAL_INVALID_PARAMETER`: no `X-License-Key` header (or not visible ASCII)."),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this key."),
    ),
)]
pub async fn by_key_header(
    State(state): State<QueryState>,
    ConsistencyPosition(position): ConsistencyPosition,
    headers: HeaderMap,
) -> Result<Json<LicenseView>, ApiError> {
    let key = headers
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::invalid_parameter("X-License-Key", "send the key in this header")
        })?;
    by_key(&state, key, position).await
}

/// Finds the license of a key sent in the body.
#[utoipa::path(
    post,
    path = "/v1/licenses/by-key",
    tag = "licenses",
    params(ConsistencyHeader),
    request_body = ByKeyRequest,
    responses(
        (status = 200, description = "The key's license.", body = LicenseView),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this key."),
    ),
)]
pub async fn by_key_body(
    State(state): State<QueryState>,
    ConsistencyPosition(position): ConsistencyPosition,
    AppJson(request): AppJson<ByKeyRequest>,
) -> Result<Json<LicenseView>, ApiError> {
    by_key(&state, &request.key, position).await
}
