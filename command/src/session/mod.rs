//! Agent sessions: the aggregate, its command routes and the retention job.

pub mod aggregate;
pub mod create;
pub mod expiry;
pub mod merge_patch;
pub mod transition;
pub mod update;

use axum::http::StatusCode;
use keyledger_api::{ApiError, Code};

use crate::execute::CommandError;
use aggregate::{MAX_METADATA_BYTES, SessionError};

impl From<CommandError<SessionError>> for ApiError {
    fn from(error: CommandError<SessionError>) -> Self {
        match error {
            CommandError::Domain(SessionError::NotFound) => {
                ApiError::not_found(Code::ResSessionNotFound, "no session has this id")
            }
            CommandError::Domain(SessionError::AlreadyExists) => {
                ApiError::internal("a new session id was already taken")
            }
            CommandError::Domain(SessionError::InvalidTransition { from, to }) => {
                let allowed: Vec<&str> =
                    from.allowed_targets().iter().map(|s| s.as_str()).collect();
                let detail = if allowed.is_empty() {
                    format!(
                        "the session is {} (final); it cannot move to {}",
                        from.as_str(),
                        to.as_str()
                    )
                } else {
                    format!(
                        "the session is {}; it can move to {}, not to {}",
                        from.as_str(),
                        allowed.join(", "),
                        to.as_str()
                    )
                };
                ApiError::conflict(Code::BizInvalidTransition, detail)
                    .with_member("current_status", from.as_str())
                    .with_member("allowed", allowed)
            }
            CommandError::Domain(SessionError::Terminal(status)) => ApiError::conflict(
                Code::BizSessionTerminal,
                format!(
                    "the session is {} (final) and cannot change",
                    status.as_str()
                ),
            )
            .with_member("current_status", status.as_str()),
            CommandError::Domain(SessionError::MetadataTooLarge) => ApiError::invalid_field(
                "metadata",
                format!("the merged metadata must be at most {MAX_METADATA_BYTES} bytes of JSON"),
            ),
            CommandError::Domain(SessionError::NotDue) => ApiError::new(
                StatusCode::CONFLICT,
                Code::BizInvalidTransition,
                "the session is not due for expiry",
            ),
            CommandError::Conflict(cause) => ApiError {
                internal: Some(cause.to_string()),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    Code::BizConcurrencyConflict,
                    "the session kept changing while this command ran; retry it",
                )
            },
            CommandError::Store(cause) => ApiError::store(cause),
        }
    }
}
