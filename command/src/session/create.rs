//! `POST /v1/sessions`: start an agent session (pending).

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_api::openapi::IdempotencyKeyHeader;
use keyledger_api::{ApiError, AppJson};
use keyledger_events::session::{SessionStatus, session_stream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::aggregate::{Session, SessionCommand};
use crate::handler::CommandRequest;
use crate::idempotency::StoredResponse;
use crate::metadata::parse_metadata;
use crate::values::AgentRole;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateSessionRequest)]
#[schema(example = json!({"agent_role": "reviewer", "task_id": "6f1c1b8e-1d1a-4c1e-9a4e-0c5f3f0b7a10"}))]
pub struct CreateRequest {
    /// The agent's role: 1 to 64 characters (trimmed), no control characters.
    #[schema(min_length = 1, max_length = 64, example = "reviewer")]
    pub agent_role: String,
    #[serde(default)]
    pub task_id: Option<Uuid>,
    /// A JSON object (at most 16 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = CreateSessionResponse)]
pub struct CreateResponse {
    pub session_id: Uuid,
    pub agent_role: String,
    pub task_id: Option<Uuid>,
    pub status: SessionStatus,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub position: i64,
}

/// Creates an agent session, pending until it is moved to `active`.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "sessions",
    params(IdempotencyKeyHeader),
    request_body = CreateRequest,
    responses(
        (status = 201, description = "The session.", body = CreateResponse),
    ),
)]
#[tracing::instrument(skip_all, fields(session.id))]
pub async fn handle(
    command_request: CommandRequest,
    AppJson(request): AppJson<CreateRequest>,
) -> Result<Response, ApiError> {
    let role = AgentRole::parse(&request.agent_role)?;
    let metadata = parse_metadata(request.metadata)?;
    let now = command_request.now;
    let session_id = Uuid::new_v4();
    tracing::Span::current().record("session.id", tracing::field::display(session_id));
    let command = SessionCommand::Create {
        session_id,
        agent_role: role.clone(),
        task_id: request.task_id,
        metadata: metadata.clone(),
        at: now,
    };
    let body = CreateResponse {
        session_id,
        agent_role: role.into(),
        task_id: request.task_id,
        status: SessionStatus::Pending,
        metadata,
        created_at: now,
        position: 0,
    };
    command_request
        .run_new::<Session>(
            &session_stream(session_id),
            &command,
            move |_, _, outcome| {
                StoredResponse::json(
                    StatusCode::CREATED,
                    &CreateResponse {
                        position: outcome.position,
                        ..body.clone()
                    },
                )
            },
        )
        .await
}
