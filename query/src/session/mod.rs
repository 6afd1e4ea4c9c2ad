//! Session queries: the detail with its transition history, and the paged list.

pub mod get;
pub mod list;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

/// An agent session as the `sessions` read table has it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub session_id: Uuid,
    pub agent_role: String,
    pub task_id: Option<Uuid>,
    /// `pending`, `active`, `completed`, `failed` or `expired`.
    #[schema(example = "active")]
    pub status: String,
    /// The client's JSON object.
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub position: i64,
}

pub(crate) const SESSION_COLUMNS: &str =
    "session_id, agent_role, task_id, status, metadata, created_at, updated_at, position";

pub(crate) fn session_from_row(row: &Row) -> Result<SessionView, tokio_postgres::Error> {
    Ok(SessionView {
        session_id: row.try_get(0)?,
        agent_role: row.try_get(1)?,
        task_id: row.try_get(2)?,
        status: row.try_get(3)?,
        metadata: row.try_get(4)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
        position: row.try_get(7)?,
    })
}
