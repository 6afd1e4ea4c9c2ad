//! `POST /v1/licenses/{id}/revoke`: revoke a license for good.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_api::openapi::IdempotencyKeyHeader;
use keyledger_api::{ApiError, AppJson, AppPath, RequestId};
use keyledger_events::license::{LicenseStatus, license_stream};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::aggregate::{License, LicenseCommand};
use super::request_metadata;
use crate::CommandState;
use crate::execute::execute;
use crate::idempotency::{Idempotency, renderer};

const MAX_REASON_CHARS: usize = 1000;

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
    State(state): State<CommandState>,
    request_id: RequestId,
    idempotency: Idempotency,
    AppPath(license_id): AppPath<Uuid>,
    AppJson(request): AppJson<RevokeRequest>,
) -> Result<Response, ApiError> {
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::invalid_field(
            "reason",
            format!("must be 1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    let revoked_at = keyledger_events::chain::to_micros((state.clock)());
    let command = LicenseCommand::Revoke {
        reason: reason.to_owned(),
        at: revoked_at,
    };
    let render = renderer(StatusCode::OK, move |outcome| RevokeResponse {
        license_id,
        status: LicenseStatus::Revoked,
        revoked_at,
        position: outcome.position,
    });
    let executed = execute::<License>(
        state.store.as_ref(),
        &license_stream(license_id),
        &command,
        &request_metadata(&request_id, &idempotency),
        &|_, _| idempotency.completion(&render),
    )
    .await?;
    let outcome = executed.outcome;
    Ok(idempotency.reply(render(&outcome)))
}
