//! `POST /v1/sessions`: start an agent session (pending).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_api::openapi::IdempotencyKeyHeader;
use keyledger_api::{ApiError, AppJson, RequestId};
use keyledger_events::session::{SessionStatus, session_stream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::aggregate::{Session, SessionCommand};
use crate::CommandState;
use crate::execute::execute_on_new_stream;
use crate::idempotency::{Idempotency, renderer};
use crate::license::request_metadata;
use crate::metadata::parse_metadata;

const MAX_ROLE_CHARS: usize = 64;

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

/// An agent role: 1 to 64 characters, no control characters, trimmed.
pub struct AgentRole(String);

impl AgentRole {
    pub fn parse(text: &str) -> Result<AgentRole, ApiError> {
        let trimmed = text.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > MAX_ROLE_CHARS || trimmed.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                "agent_role",
                format!("must be 1 to {MAX_ROLE_CHARS} characters without control characters"),
            ));
        }
        Ok(AgentRole(trimmed.to_owned()))
    }
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
    State(state): State<CommandState>,
    request_id: RequestId,
    idempotency: Idempotency,
    AppJson(request): AppJson<CreateRequest>,
) -> Result<Response, ApiError> {
    let role = AgentRole::parse(&request.agent_role)?;
    let metadata = parse_metadata(request.metadata)?;
    let now = keyledger_events::chain::to_micros((state.clock)());
    let session_id = Uuid::new_v4();
    tracing::Span::current().record("session.id", tracing::field::display(session_id));
    let command = SessionCommand::Create {
        session_id,
        agent_role: role.0.clone(),
        task_id: request.task_id,
        metadata: metadata.clone(),
        at: now,
    };
    let body = CreateResponse {
        session_id,
        agent_role: role.0,
        task_id: request.task_id,
        status: SessionStatus::Pending,
        metadata,
        created_at: now,
        position: 0,
    };
    let render = renderer(StatusCode::CREATED, move |outcome| CreateResponse {
        position: outcome.position,
        ..body.clone()
    });
    let executed = execute_on_new_stream::<Session>(
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
