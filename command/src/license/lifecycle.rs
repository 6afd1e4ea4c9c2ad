//! `POST /v1/licenses/{id}/suspend`, `/reinstate`, `/renew` and `/policy`: the reversible
//! changes of a license's life. Revoked is final: each of these answers 409 on it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_api::{ApiError, AppJson, AppPath, RequestId};
use keyledger_events::license::license_stream;
use keyledger_events::{AppendOutcome, RenderResponse};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::aggregate::{License, LicenseCommand, Status};
use super::issue::{parse_entitlements, parse_max_installations};
use super::request_metadata;
use crate::CommandState;
use crate::execute::execute;
use crate::idempotency::{Idempotency, json_response};

const MAX_REASON_CHARS: usize = 1000;
const MAX_VALID_DAYS: u32 = 36_500;

/// The answer of every lifecycle command: the license as it now stands.
#[derive(Debug, Clone, Serialize)]
pub struct LicenseStatusResponse {
    pub license_id: Uuid,
    pub status: &'static str,
    /// `null` for a perpetual license.
    pub expires_at: Option<DateTime<Utc>>,
    pub entitlements: Vec<String>,
    pub max_installations: Option<u32>,
    pub position: i64,
}

pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Active => "active",
        Status::Suspended => "suspended",
        Status::Revoked => "revoked",
    }
}

fn render(license: &License, outcome: &AppendOutcome) -> keyledger_events::StoredResponse {
    match license {
        License::Existing(state) => json_response(
            StatusCode::OK,
            &LicenseStatusResponse {
                license_id: state.license_id,
                status: status_name(state.status),
                expires_at: state.expires_at,
                entitlements: state.extra_entitlements.clone(),
                max_installations: state.max_installations,
                position: outcome.position,
            },
        ),
        License::Absent => json_response(StatusCode::NOT_FOUND, &serde_json::Value::Null),
    }
}

/// Runs `command` on the license and answers with its new standing.
async fn run(
    state: &CommandState,
    request_id: &RequestId,
    idempotency: &Idempotency,
    license_id: Uuid,
    command: LicenseCommand,
) -> Result<Response, ApiError> {
    let executed = execute::<License>(
        state.store.as_ref(),
        &license_stream(license_id),
        &command,
        &request_metadata(request_id, idempotency),
        &|license, _| {
            let license = license.clone();
            let render: RenderResponse = Arc::new(move |outcome| render(&license, outcome));
            idempotency.completion(&render)
        },
    )
    .await?;
    Ok(idempotency.reply(render(&executed.state, &executed.outcome)))
}

fn reason(text: &str, required: bool) -> Result<Option<String>, ApiError> {
    let text = text.trim();
    if text.chars().count() > MAX_REASON_CHARS || (required && text.is_empty()) {
        return Err(ApiError::invalid_field(
            "reason",
            format!("must be 1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

fn now(state: &CommandState) -> DateTime<Utc> {
    keyledger_events::chain::to_micros((state.clock)())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    pub reason: String,
}

pub async fn suspend(
    State(state): State<CommandState>,
    request_id: RequestId,
    idempotency: Idempotency,
    AppPath(license_id): AppPath<Uuid>,
    AppJson(request): AppJson<SuspendRequest>,
) -> Result<Response, ApiError> {
    let reason = reason(&request.reason, true)?.unwrap_or_default();
    let command = LicenseCommand::Suspend {
        reason,
        at: now(&state),
    };
    run(&state, &request_id, &idempotency, license_id, command).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReinstateRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

pub async fn reinstate(
    State(state): State<CommandState>,
    request_id: RequestId,
    idempotency: Idempotency,
    AppPath(license_id): AppPath<Uuid>,
    AppJson(request): AppJson<ReinstateRequest>,
) -> Result<Response, ApiError> {
    let reason = reason(request.reason.as_deref().unwrap_or(""), false)?;
    let command = LicenseCommand::Reinstate {
        reason,
        at: now(&state),
    };
    run(&state, &request_id, &idempotency, license_id, command).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub valid_days: u32,
}

pub async fn renew(
    State(state): State<CommandState>,
    request_id: RequestId,
    idempotency: Idempotency,
    AppPath(license_id): AppPath<Uuid>,
    AppJson(request): AppJson<RenewRequest>,
) -> Result<Response, ApiError> {
    if !(1..=MAX_VALID_DAYS).contains(&request.valid_days) {
        return Err(ApiError::invalid_field(
            "valid_days",
            format!("must be between 1 and {MAX_VALID_DAYS}"),
        ));
    }
    let command = LicenseCommand::Renew {
        valid_days: request.valid_days,
        at: now(&state),
    };
    run(&state, &request_id, &idempotency, license_id, command).await
}

/// The license's overrides: `entitlements` replace its own (the tier's stay), and
/// `max_installations` replaces the tier's limit (`null` goes back to the tier's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    #[serde(default)]
    pub entitlements: Option<Vec<String>>,
    #[serde(default)]
    pub max_installations: Option<u32>,
}

pub async fn change_policy(
    State(state): State<CommandState>,
    request_id: RequestId,
    idempotency: Idempotency,
    AppPath(license_id): AppPath<Uuid>,
    AppJson(request): AppJson<PolicyRequest>,
) -> Result<Response, ApiError> {
    let command = LicenseCommand::ChangePolicy {
        entitlements: parse_entitlements(request.entitlements)?,
        max_installations: parse_max_installations(request.max_installations)?,
        at: now(&state),
    };
    run(&state, &request_id, &idempotency, license_id, command).await
}
