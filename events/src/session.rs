//! Agent session events (`session-<id>` streams).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub const SESSION_CATEGORY: &str = "session";

pub fn session_stream(session_id: Uuid) -> String {
    crate::envelope::stream_id(SESSION_CATEGORY, session_id)
}

/// A session's lifecycle: pending → active → completed | failed | expired; pending → expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Pending,
    Active,
    Completed,
    Failed,
    Expired,
}

impl SessionStatus {
    pub const ALL: [SessionStatus; 5] = [
        SessionStatus::Pending,
        SessionStatus::Active,
        SessionStatus::Completed,
        SessionStatus::Failed,
        SessionStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Pending => "pending",
            SessionStatus::Active => "active",
            SessionStatus::Completed => "completed",
            SessionStatus::Failed => "failed",
            SessionStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<SessionStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The statuses this one may move to.
    pub fn allowed_targets(self) -> &'static [SessionStatus] {
        match self {
            SessionStatus::Pending => &[SessionStatus::Active, SessionStatus::Expired],
            SessionStatus::Active => &[
                SessionStatus::Completed,
                SessionStatus::Failed,
                SessionStatus::Expired,
            ],
            SessionStatus::Completed | SessionStatus::Failed | SessionStatus::Expired => &[],
        }
    }

    pub fn is_terminal(self) -> bool {
        self.allowed_targets().is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SessionEvent {
    SessionCreated(SessionCreated),
    SessionTransitioned(SessionTransitioned),
    SessionExpired(SessionExpired),
    SessionUpdated(SessionUpdated),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionCreated {
    pub session_id: Uuid,
    pub agent_role: String,
    #[serde(default)]
    pub task_id: Option<Uuid>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

/// A move to active, completed or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionTransitioned {
    pub session_id: Uuid,
    pub from: SessionStatus,
    pub to: SessionStatus,
    #[serde(default)]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// A move to expired: by the retention job (actor `system`, reason `retention`) or a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionExpired {
    pub session_id: Uuid,
    pub from: SessionStatus,
    #[serde(default)]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// `task_id` set and/or metadata merged (RFC 7396); `metadata` is the result of the merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionUpdated {
    pub session_id: Uuid,
    #[serde(default)]
    pub task_id: Option<Uuid>,
    #[serde(default)]
    pub metadata_patch: Option<Value>,
    pub metadata: Value,
    pub at: DateTime<Utc>,
}

crate::event_payload!(SessionEvent {
    SessionCreated,
    SessionTransitioned,
    SessionExpired,
    SessionUpdated,
});
