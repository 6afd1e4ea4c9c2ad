//! `POST /v1/sessions/{id}/transition`: move a session along its lifecycle.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyledger_api::openapi::IdempotencyKeyHeader;
use keyledger_api::{ApiError, AppJson, AppPath, RequestId};
use keyledger_events::session::{SessionStatus, session_stream};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::aggregate::{Session, SessionCommand};
use crate::CommandState;
use crate::execute::execute;
use crate::idempotency::{Idempotency, renderer};
use crate::license::request_metadata;

const MAX_REASON_CHARS: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TransitionSessionRequest)]
#[schema(example = json!({"to": "active"}))]
pub struct TransitionRequest {
    pub to: SessionStatus,
    /// At most 1000 characters.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = TransitionSessionResponse)]
pub struct TransitionResponse {
    pub session_id: Uuid,
    pub status: SessionStatus,
    pub position: i64,
}

/// Moves a session along its lifecycle: pending → active → completed | failed | expired, and
/// pending → expired.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/transition",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "The session's id."), IdempotencyKeyHeader),
    request_body = TransitionRequest,
    responses(
        (status = 200, description = "The session's new status.", body = TransitionResponse),
        (status = 404, description = "`RES_SESSION_NOT_FOUND`: no session has this id."),
        (status = 409, description = "`BIZ_INVALID_TRANSITION`: the lifecycle does not allow this move (or the session is not due to expire); `BIZ_SESSION_TERMINAL`: the session has ended; `BIZ_CONCURRENCY_CONFLICT`: the session kept changing while the command ran; retry it."),
    ),
)]
#[tracing::instrument(skip_all, fields(session.id = %session_id))]
pub async fn handle(
    State(state): State<CommandState>,
    request_id: RequestId,
    idempotency: Idempotency,
    AppPath(session_id): AppPath<Uuid>,
    AppJson(request): AppJson<TransitionRequest>,
) -> Result<Response, ApiError> {
    let reason = match request.reason.as_deref().map(str::trim) {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => {
            return Err(ApiError::invalid_field(
                "reason",
                format!("must be at most {MAX_REASON_CHARS} characters"),
            ));
        }
        Some("") | None => None,
        Some(r) => Some(r.to_owned()),
    };
    let to = request.to;
    let command = SessionCommand::Transition {
        to,
        reason,
        at: keyledger_events::chain::to_micros((state.clock)()),
    };
    let render = renderer(StatusCode::OK, move |outcome| TransitionResponse {
        session_id,
        status: to,
        position: outcome.position,
    });
    let executed = execute::<Session>(
        state.store.as_ref(),
        &session_stream(session_id),
        &command,
        &request_metadata(&request_id, &idempotency),
        &|_, _| idempotency.completion(&render),
    )
    .await?;
    let outcome = executed.outcome;
    Ok(idempotency.reply(render(&outcome)))
}
