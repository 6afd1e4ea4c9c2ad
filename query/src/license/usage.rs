//! `GET /v1/licenses/{id}/usage`: the license's validations, newest first, keyset-paginated.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppPath, AppQuery, ConsistencyPosition};
use keyledger_projections::license::{licenses, usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{ConsistencyHeader, QueryState, page_limit};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// Validations per page: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Opaque: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One validation of the license.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageItem {
    /// The position of the validation's event.
    pub position: i64,
    pub validated_at: DateTime<Utc>,
    /// The validation's answer (`VALID`, `EXPIRED`, `REVOKED`, …).
    pub code: String,
    /// The feature the validation asked about, if any.
    pub feature: Option<String>,
    /// The client's JSON object.
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// A page of validations, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsagePage {
    pub items: Vec<UsageItem>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

pub async fn page(
    client: &impl GenericClient,
    license_id: Uuid,
    before: i64,
    limit: i64,
) -> Result<Vec<UsageItem>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "SELECT position, validated_at, code, feature, metadata FROM license_usage \
             WHERE license_id = $1 AND position < $2 ORDER BY position DESC LIMIT $3",
        )
        .await?;
    client
        .query(&statement, &[&license_id, &before, &limit])
        .await?
        .iter()
        .map(|row| {
            Ok(UsageItem {
                position: row.try_get(0)?,
                validated_at: row.try_get(1)?,
                code: row.try_get(2)?,
                feature: row.try_get(3)?,
                metadata: row.try_get(4)?,
            })
        })
        .collect()
}

/// Lists a license's validations, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/licenses/{id}/usage",
    tag = "licenses",
    params(("id" = Uuid, Path, description = "The license's id."), UsageParams, ConsistencyHeader),
    responses(
        (status = 200, description = "A page of the license's validations.", body = UsagePage),
        (status = 400, description = "`VAL_INVALID_PARAMETER`: a `limit` out of range or a cursor not from this API."),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id."),
    ),
)]
pub async fn handle(
    State(state): State<QueryState>,
    ConsistencyPosition(position): ConsistencyPosition,
    AppPath(license_id): AppPath<Uuid>,
    AppQuery(params): AppQuery<UsageParams>,
) -> Result<Json<UsagePage>, ApiError> {
    let limit = page_limit(params.limit, 100, 1000)?;
    let before = match params.cursor.as_deref() {
        None => i64::MAX,
        Some(cursor) => cursor
            .parse::<i64>()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| {
                ApiError::invalid_parameter("cursor", "is not a cursor from this API")
            })?,
    };
    let projections = [licenses::NAME, usage::NAME];
    state.consistent(&projections, position).await?;
    super::get::require(&state, license_id, &projections).await?;
    let client = state.client().await?;
    let items = page(&client, license_id, before, limit)
        .await
        .map_err(ApiError::from)?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| i.position.to_string()))
        .flatten();
    Ok(Json(UsagePage { items, next_cursor }))
}
