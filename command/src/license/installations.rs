//! Installations (machine activations): activate, release, heartbeat. Activations and
//! releases are license events (the limit holds under concurrency through the license
//! stream's version); heartbeats go to the license's `installation_heartbeat-` stream so they
//! never grow the license's own.

use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use keyledger_api::openapi::IdempotencyKeyHeader;
use keyledger_api::{ApiError, AppJson, AppPath, Code, redact_text};
use keyledger_events::license::{
    DeactivationReason, HeartbeatEvent, InstallationHeartbeat, heartbeat_stream, license_stream,
};
use keyledger_events::{AppendOutcome, EventPayload, EventStore, ExpectedVersion, Metadata};
use keyledger_projections::license::validation;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::aggregate::{License, LicenseCommand, LicenseError};
use crate::execute::{CommandError, execute};
use crate::handler::CommandRequest;
use crate::idempotency::StoredResponse;
use crate::metadata::parse_metadata;
use crate::values::InstallationId;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"installation_id": "host-42", "hostname": "build-01"}))]
pub struct ActivateRequest {
    /// The machine's id: 1 to 128 visible ASCII characters.
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub installation_id: String,
    /// 1 to 255 characters (trimmed), no control characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    pub hostname: Option<String>,
    /// A JSON object of the client's (at most 16 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstallationResponse {
    pub license_id: Uuid,
    pub installation_id: String,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<DateTime<Utc>>,
    pub position: i64,
}

fn installation_response(
    license: &License,
    installation_id: &str,
    outcome: &AppendOutcome,
    status: StatusCode,
) -> StoredResponse {
    let (license_id, activated_at) = match license {
        License::Existing(state) => (
            state.license_id,
            state.installations.get(installation_id).copied(),
        ),
        License::Absent => (Uuid::nil(), None),
    };
    StoredResponse::json(
        status,
        &InstallationResponse {
            license_id,
            installation_id: installation_id.to_owned(),
            active: activated_at.is_some(),
            activated_at,
            position: outcome.position,
        },
    )
}

/// `POST /v1/licenses/{id}/installations`: 201 when it takes a seat, 200 when it already had one.
#[utoipa::path(
    post,
    path = "/v1/licenses/{id}/installations",
    tag = "licenses",
    params(("id" = Uuid, Path, description = "The license's id."), IdempotencyKeyHeader),
    request_body = ActivateRequest,
    responses(
        (status = 201, description = "The installation took a seat.", body = InstallationResponse),
        (status = 200, description = "The installation had a seat already.", body = InstallationResponse),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id."),
        (status = 409, description = "`BIZ_LICENSE_REVOKED`: the license is revoked, which is final; `BIZ_LICENSE_SUSPENDED`: a suspended license takes no new installation; `BIZ_TOO_MANY_INSTALLATIONS`: every seat is taken; `BIZ_CONCURRENCY_CONFLICT`: the license kept changing while the command ran; retry it."),
    ),
)]
pub async fn activate(
    request: CommandRequest,
    AppPath(license_id): AppPath<Uuid>,
    AppJson(body): AppJson<ActivateRequest>,
) -> Result<Response, ApiError> {
    let installation = InstallationId::parse(&body.installation_id)?;
    let hostname = match body.hostname.map(|h| h.trim().to_owned()) {
        Some(h) if h.is_empty() || h.len() > 255 || h.chars().any(char::is_control) => {
            return Err(ApiError::invalid_field(
                "hostname",
                "must be 1 to 255 characters",
            ));
        }
        other => other.map(|h| redact_text(&h)),
    };
    let metadata = parse_metadata(body.metadata)?;
    let command = LicenseCommand::Activate {
        installation_id: installation.clone(),
        hostname,
        metadata,
        at: request.now,
        policy: request.state().policy.clone(),
    };
    let id = String::from(installation);
    request
        .run::<License>(
            &license_stream(license_id),
            &command,
            move |license, events, outcome| {
                // Nothing decided: the installation had its seat already.
                let status = if events.is_empty() {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                installation_response(license, &id, outcome, status)
            },
        )
        .await
}

/// `DELETE /v1/licenses/{id}/installations/{installation_id}`: frees the seat.
#[utoipa::path(
    delete,
    path = "/v1/licenses/{id}/installations/{installation_id}",
    tag = "licenses",
    params(("id" = Uuid, Path, description = "The license's id."), ("installation_id" = String, Path, description = "The installation's id: 1 to 128 visible ASCII characters.")),
    responses(
        (status = 200, description = "The seat is free (`active` is false).", body = InstallationResponse),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id; `RES_INSTALLATION_NOT_FOUND`: the installation is not active on it."),
        (status = 422, description = "`VAL_INVALID_FIELD`: the installation id is not 1 to 128 visible ASCII characters."),
        (status = 409, description = "`BIZ_LICENSE_REVOKED`: the license is revoked, which is final; `BIZ_CONCURRENCY_CONFLICT`: the license kept changing while the command ran; retry it."),
    ),
)]
pub async fn deactivate(
    request: CommandRequest,
    AppPath((license_id, installation_id)): AppPath<(Uuid, String)>,
) -> Result<Response, ApiError> {
    let installation = InstallationId::parse(&installation_id)?;
    let command = LicenseCommand::Deactivate {
        installation_id: installation.clone(),
        reason: DeactivationReason::Released,
        at: request.now,
    };
    let id = String::from(installation);
    request
        .run::<License>(
            &license_stream(license_id),
            &command,
            move |license, _, outcome| installation_response(license, &id, outcome, StatusCode::OK),
        )
        .await
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HeartbeatResponse {
    pub license_id: Uuid,
    pub installation_id: String,
    pub last_seen: DateTime<Utc>,
    pub next_heartbeat_due: DateTime<Utc>,
    pub position: i64,
}

/// `POST /v1/licenses/{id}/installations/{installation_id}/heartbeat`.
#[utoipa::path(
    post,
    path = "/v1/licenses/{id}/installations/{installation_id}/heartbeat",
    tag = "licenses",
    params(("id" = Uuid, Path, description = "The license's id."), ("installation_id" = String, Path, description = "The installation's id: 1 to 128 visible ASCII characters."), IdempotencyKeyHeader),
    responses(
        (status = 200, description = "Seen now; the next heartbeat is due by `next_heartbeat_due`.", body = HeartbeatResponse),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id; `RES_INSTALLATION_NOT_FOUND`: the installation is not active on it."),
        (status = 422, description = "`VAL_INVALID_FIELD`: the installation id is not 1 to 128 visible ASCII characters."),
    ),
)]
pub async fn heartbeat(
    request: CommandRequest,
    AppPath((license_id, installation_id)): AppPath<(Uuid, String)>,
) -> Result<Response, ApiError> {
    let installation = InstallationId::parse(&installation_id)?;
    let state = request.state();
    let client = state.pool.get().await.map_err(ApiError::from)?;
    let active = validation::installation_active(&client, license_id, installation.as_str())
        .await
        .map_err(ApiError::from)?;
    drop(client);
    match active {
        None => {
            return Err(ApiError::not_found(
                Code::ResLicenseNotFound,
                "no license has this id",
            ));
        }
        Some(false) => {
            return Err(ApiError::not_found(
                Code::ResInstallationNotFound,
                "this installation is not active on the license; activate it first",
            ));
        }
        Some(true) => {}
    }
    let now = request.now;
    let due = now
        + chrono::Duration::from_std(state.heartbeat_ttl).unwrap_or(chrono::Duration::minutes(10));
    let event = HeartbeatEvent::InstallationHeartbeat(InstallationHeartbeat {
        license_id,
        installation_id: installation.to_string(),
        at: now,
    });
    let id = String::from(installation);
    request
        .append(
            heartbeat_stream(license_id),
            ExpectedVersion::Any,
            vec![event.to_new_event(Uuid::new_v4())],
            move |outcome| {
                StoredResponse::json(
                    StatusCode::OK,
                    &HeartbeatResponse {
                        license_id,
                        installation_id: id.clone(),
                        last_seen: now,
                        next_heartbeat_due: due,
                        position: outcome.position,
                    },
                )
            },
        )
        .await
}

/// Deactivates installations whose last heartbeat (or activation) is older than `ttl`, through
/// the license command path (actor `system`). Returns how many seats it freed.
pub async fn deactivate_dead(
    store: &dyn EventStore,
    pool: &Pool,
    now: DateTime<Utc>,
    ttl: Duration,
) -> anyhow::Result<usize> {
    let cutoff = now - chrono::Duration::from_std(ttl).context("HEARTBEAT_TTL is too long")?;
    let client = pool.get().await.context("Failed to get a connection")?;
    let dead: Vec<(Uuid, String)> = client
        .query(
            "SELECT license_id, installation_id FROM installations \
             WHERE active AND coalesce(last_seen, activated_at) < $1 \
             ORDER BY coalesce(last_seen, activated_at) LIMIT 1000",
            &[&cutoff],
        )
        .await
        .context("Failed to find dead installations")?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    drop(client);
    let run = format!("heartbeat-timeout-{}", Uuid::new_v4());
    let metadata = Metadata {
        correlation_id: Some(run.clone()),
        // The job run caused it.
        causation_id: Some(run),
        actor: Some("system".into()),
        idempotency_key: None,
    };
    let mut freed = 0;
    for (license_id, installation_id) in dead {
        let command = LicenseCommand::Deactivate {
            installation_id: InstallationId::recorded(installation_id),
            reason: DeactivationReason::HeartbeatTimeout,
            at: keyledger_events::chain::to_micros(now),
        };
        match execute::<License>(
            store,
            &license_stream(license_id),
            &command,
            &metadata,
            &|_, _| None,
        )
        .await
        {
            Ok(_) => freed += 1,
            Err(CommandError::Domain(
                LicenseError::InstallationNotFound | LicenseError::Revoked | LicenseError::NotFound,
            ))
            | Err(CommandError::Conflict(_)) => {}
            Err(CommandError::Domain(other)) => {
                tracing::warn!(license.id = %license_id, error = ?other, "heartbeat timeout refused");
            }
            Err(CommandError::Store(error)) => {
                return Err(anyhow::anyhow!(error)).context("Failed to deactivate an installation");
            }
        }
    }
    Ok(freed)
}
