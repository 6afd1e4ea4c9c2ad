//! `POST /v1/licenses/{id}/revoke`: revoke a license for good.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_api::{ApiError, AppJson, AppPath, RequestId};
use keyledger_events::license::license_stream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::aggregate::{License, LicenseCommand};
use super::request_metadata;
use crate::CommandState;
use crate::execute::execute;
use crate::idempotency::{Idempotency, renderer};

const MAX_REASON_CHARS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct RevokeResponse {
    pub license_id: Uuid,
    pub status: &'static str,
    pub revoked_at: DateTime<Utc>,
    pub position: i64,
}

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
        status: "revoked",
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
