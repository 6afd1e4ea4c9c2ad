//! `PATCH /v1/sessions/{id}`: set the task and merge metadata (JSON merge patch, RFC 7396).

use axum::http::StatusCode;
use axum::response::Response;
use keyledger_api::openapi::IdempotencyKeyHeader;
use keyledger_api::{ApiError, AppJson, AppPath};
use keyledger_events::session::{SessionStatus, session_stream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::aggregate::{Session, SessionCommand};
use crate::handler::CommandRequest;
use crate::idempotency::StoredResponse;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateSessionRequest)]
pub struct UpdateRequest {
    #[serde(default)]
    pub task_id: Option<Uuid>,
    /// A JSON merge patch (RFC 7396) of the session's metadata: `null` members remove.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = UpdateSessionResponse)]
pub struct UpdateResponse {
    pub session_id: Uuid,
    pub status: SessionStatus,
    pub task_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub position: i64,
}

/// Changes a session's task or merges a patch into its metadata (at least one of them).
#[utoipa::path(
    patch,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "The session's id."), IdempotencyKeyHeader),
    request_body = UpdateRequest,
    responses(
        (status = 200, description = "The session after the change.", body = UpdateResponse),
        (status = 404, description = "`RES_SESSION_NOT_FOUND`: no session has this id."),
        (status = 409, description = "`BIZ_SESSION_TERMINAL`: the session has ended; `BIZ_CONCURRENCY_CONFLICT`: the session kept changing while the command ran; retry it."),
    ),
)]
#[tracing::instrument(skip_all, fields(session.id = %session_id))]
pub async fn handle(
    command_request: CommandRequest,
    AppPath(session_id): AppPath<Uuid>,
    AppJson(request): AppJson<UpdateRequest>,
) -> Result<Response, ApiError> {
    match &request.metadata {
        None | Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(ApiError::invalid_field(
                "metadata",
                "must be a JSON object (a merge patch)",
            ));
        }
    }
    if request.task_id.is_none() && request.metadata.is_none() {
        return Err(ApiError::invalid_field(
            "body",
            "give task_id and/or metadata to change",
        ));
    }
    let metadata_patch = request.metadata.map(|mut patch| {
        keyledger_api::redact_json(&mut patch);
        patch
    });
    let command = SessionCommand::Update {
        task_id: request.task_id,
        metadata_patch,
        at: command_request.now,
    };
    // The response shows the merged state, known once the command is decided.
    let answer = move |session: &Session, _: &[_], outcome: &keyledger_events::AppendOutcome| {
        match session {
            Session::Existing {
                status,
                metadata,
                task_id,
                ..
            } => StoredResponse::json(
                StatusCode::OK,
                &UpdateResponse {
                    session_id,
                    status: *status,
                    task_id: *task_id,
                    metadata: metadata.clone(),
                    position: outcome.position,
                },
            ),
            Session::Absent => StoredResponse::json(StatusCode::NOT_FOUND, &Value::Null),
        }
    };
    command_request
        .run::<Session>(&session_stream(session_id), &command, answer)
        .await
}
