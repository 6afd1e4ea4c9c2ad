//! `GET /v1/licenses/{id}`: the license as the `licenses` projection has it (never the key).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppPath, AppQuery, Code, ConsistencyPosition};
use keyledger_events::license::{LicenseStatus, license_stream};
use keyledger_projections::license::licenses;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{AsOfParams, ConsistencyHeader, QueryState};

/// A license as the `licenses` read table has it (never the key).
#[derive(Debug, Serialize, ToSchema)]
pub struct LicenseView {
    pub license_id: Uuid,
    /// The key's first characters, to recognise it by.
    pub key_prefix: String,
    pub owner: String,
    /// `free`, `basic`, `pro` or `enterprise`.
    #[schema(example = "pro")]
    pub tier: String,
    /// `active`, `suspended` or `revoked` (expiry is `expires_at`, not a status).
    #[schema(value_type = String, example = "active")]
    pub status: LicenseStatus,
    /// The client's JSON object.
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub issued_at: DateTime<Utc>,
    /// `null` for a perpetual license.
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoke_reason: Option<String>,
    pub suspended_at: Option<DateTime<Utc>>,
    pub suspend_reason: Option<String>,
    /// The license's own entitlements, on top of its tier's.
    pub entitlements: Vec<String>,
    /// Replaces the tier's installation limit when set.
    pub max_installations: Option<i32>,
    /// The row id in the legacy service, for imported licenses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_id: Option<i64>,
    pub position: i64,
}

pub(crate) const LICENSE_COLUMNS: &str = "license_id, key_prefix, owner, tier, status, metadata, \
     issued_at, expires_at, revoked_at, revoke_reason, suspended_at, suspend_reason, entitlements, \
     max_installations, legacy_id, position";

pub(crate) fn license_from_row(
    row: &tokio_postgres::Row,
) -> Result<LicenseView, tokio_postgres::Error> {
    Ok(LicenseView {
        license_id: row.try_get(0)?,
        key_prefix: row.try_get(1)?,
        owner: row.try_get(2)?,
        tier: row.try_get(3)?,
        status: row.try_get(4)?,
        metadata: row.try_get(5)?,
        issued_at: row.try_get(6)?,
        expires_at: row.try_get(7)?,
        revoked_at: row.try_get(8)?,
        revoke_reason: row.try_get(9)?,
        suspended_at: row.try_get(10)?,
        suspend_reason: row.try_get(11)?,
        entitlements: row.try_get(12)?,
        max_installations: row.try_get(13)?,
        legacy_id: row.try_get(14)?,
        position: row.try_get(15)?,
    })
}

pub async fn find(
    client: &impl GenericClient,
    license_id: Uuid,
) -> Result<Option<LicenseView>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {LICENSE_COLUMNS} FROM licenses WHERE license_id = $1"
        ))
        .await?;
    let row = client.query_opt(&statement, &[&license_id]).await?;
    row.as_ref().map(license_from_row).transpose()
}

/// The license, or 404 `RES_LICENSE_NOT_FOUND` when the log has no such license; a license
/// the read tables of `projections` have not applied yet is waited for.
pub async fn require(
    state: &QueryState,
    license_id: Uuid,
    projections: &[&str],
) -> Result<LicenseView, ApiError> {
    state
        .found(
            &license_stream(license_id),
            projections,
            |client| async move { find(&client, license_id).await },
            || ApiError::not_found(Code::ResLicenseNotFound, "no license has this id"),
        )
        .await
}

/// Reads a license, now or as it stood at an instant.
#[utoipa::path(
    get,
    path = "/v1/licenses/{id}",
    tag = "licenses",
    params(("id" = Uuid, Path, description = "The license's id."), AsOfParams, ConsistencyHeader),
    responses(
        (status = 200, description = "The license.", body = LicenseView),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id (or had it at `as_of`)."),
    ),
)]
pub async fn handle(
    State(state): State<QueryState>,
    ConsistencyPosition(position): ConsistencyPosition,
    AppPath(license_id): AppPath<Uuid>,
    AppQuery(params): AppQuery<AsOfParams>,
) -> Result<Json<LicenseView>, ApiError> {
    if let Some(as_of) = params.as_of {
        let client = state.client().await?;
        return super::as_of::at(&client, license_id, as_of)
            .await?
            .map(Json)
            .ok_or_else(|| {
                ApiError::not_found(
                    Code::ResLicenseNotFound,
                    format!("no license had this id at {}", as_of.to_rfc3339()),
                )
            });
    }
    state.consistent(&[licenses::NAME], position).await?;
    require(&state, license_id, &[licenses::NAME])
        .await
        .map(Json)
}
