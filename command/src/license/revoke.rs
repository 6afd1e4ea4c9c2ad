//! `POST /v1/licenses/{id}/revoke`: revoke a license for good.

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_api::openapi::IdempotencyKeyHeader;
use keyledger_api::{ApiError, AppJson, AppPath};
use keyledger_events::license::{LicenseStatus, license_stream};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::aggregate::{License, LicenseCommand};
use crate::handler::CommandRequest;
use crate::idempotency::StoredResponse;
use crate::values::Reason;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why, for the license's history: 1 to 1000 characters.
    #[schema(min_length = 1, max_length = 1000, example = "chargeback")]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeResponse {
    pub license_id: Uuid,
    #[schema(value_type = String, example = "revoked")]
    pub status: LicenseStatus,
    pub revoked_at: DateTime<Utc>,
    pub position: i64,
}

/// Revokes a license for good: every later validation answers `REVOKED`.
#[utoipa::path(
    post,
    path = "/v1/licenses/{id}/revoke",
    tag = "licenses",
    params(("id" = Uuid, Path, description = "The license's id."), IdempotencyKeyHeader),
    request_body = RevokeRequest,
    responses(
        (status = 200, description = "The license is revoked.", body = RevokeResponse),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id."),
        (status = 409, description = "`BIZ_LICENSE_REVOKED`: it was revoked already; `BIZ_CONCURRENCY_CONFLICT`: a concurrent command won."),
    ),
)]
#[tracing::instrument(skip_all, fields(license.id = %license_id))]
pub async fn handle(
    request: CommandRequest,
    AppPath(license_id): AppPath<Uuid>,
    AppJson(body): AppJson<RevokeRequest>,
) -> Result<Response, ApiError> {
    let reason = Reason::required(&body.reason)?;
    let revoked_at = request.now;
    let command = LicenseCommand::Revoke {
        reason,
        at: revoked_at,
    };
    request
        .run::<License>(
            &license_stream(license_id),
            &command,
            move |_, _, outcome| {
                StoredResponse::json(
                    StatusCode::OK,
                    &RevokeResponse {
                        license_id,
                        status: LicenseStatus::Revoked,
                        revoked_at,
                        position: outcome.position,
                    },
                )
            },
        )
        .await
}
