//! `POST /v1/sessions/{id}/transition`: move a session along its lifecycle.

use axum::http::StatusCode;
use axum::response::Response;
use keyledger_api::openapi::IdempotencyKeyHeader;
use keyledger_api::{ApiError, AppJson, AppPath};
use keyledger_events::session::{SessionStatus, session_stream};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::aggregate::{Session, SessionCommand};
use crate::handler::CommandRequest;
use crate::idempotency::StoredResponse;
use crate::values::Reason;

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
    command_request: CommandRequest,
    AppPath(session_id): AppPath<Uuid>,
    AppJson(request): AppJson<TransitionRequest>,
) -> Result<Response, ApiError> {
    let reason = Reason::optional(request.reason.as_deref())?;
    let to = request.to;
    let command = SessionCommand::Transition {
        to,
        reason,
        at: command_request.now,
    };
    command_request
        .run::<Session>(
            &session_stream(session_id),
            &command,
            move |_, _, outcome| {
                StoredResponse::json(
                    StatusCode::OK,
                    &TransitionResponse {
                        session_id,
                        status: to,
                        position: outcome.position,
                    },
                )
            },
        )
        .await
}
