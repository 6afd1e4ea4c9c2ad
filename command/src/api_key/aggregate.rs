//! The API key aggregate: pure decide/apply. The handler brings the id, the time, the key's
//! hash and prefix, and the actor in the command.

use chrono::{DateTime, Utc};
use keyledger_events::api_key::{ApiKeyCreated, ApiKeyEvent, ApiKeyRevoked};
use uuid::Uuid;

use crate::execute::Aggregate;

#[derive(Debug, Clone, Default, PartialEq)]
pub enum ApiKey {
    #[default]
    Absent,
    Existing {
        api_key_id: Uuid,
        revoked: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyCommand {
    Create {
        api_key_id: Uuid,
        /// Already validated.
        name: String,
        prefix: String,
        key_hash: String,
        /// Known permission names, without duplicates.
        scopes: Vec<String>,
        created_by: String,
        at: DateTime<Utc>,
    },
    Revoke {
        by: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeyError {
    NotFound,
    AlreadyExists,
}

impl Aggregate for ApiKey {
    type Event = ApiKeyEvent;
    type Command = ApiKeyCommand;
    type Error = ApiKeyError;

    fn apply(self, event: &ApiKeyEvent) -> ApiKey {
        match (self, event) {
            (_, ApiKeyEvent::ApiKeyCreated(e)) => ApiKey::Existing {
                api_key_id: e.api_key_id,
                revoked: false,
            },
            (ApiKey::Existing { api_key_id, .. }, ApiKeyEvent::ApiKeyRevoked(_)) => {
                ApiKey::Existing {
                    api_key_id,
                    revoked: true,
                }
            }
            (state, _) => state,
        }
    }

    fn decide(&self, command: &ApiKeyCommand) -> Result<Vec<ApiKeyEvent>, ApiKeyError> {
        match (self, command) {
            (
                ApiKey::Absent,
                ApiKeyCommand::Create {
                    api_key_id,
                    name,
                    prefix,
                    key_hash,
                    scopes,
                    created_by,
                    at,
                },
            ) => Ok(vec![ApiKeyEvent::ApiKeyCreated(ApiKeyCreated {
                api_key_id: *api_key_id,
                name: name.clone(),
                prefix: prefix.clone(),
                key_hash: key_hash.clone(),
                scopes: scopes.clone(),
                created_by: created_by.clone(),
                at: *at,
            })]),
            (ApiKey::Existing { .. }, ApiKeyCommand::Create { .. }) => {
                Err(ApiKeyError::AlreadyExists)
            }
            (ApiKey::Absent, ApiKeyCommand::Revoke { .. }) => Err(ApiKeyError::NotFound),
            // Revoking a revoked key changes nothing.
            (ApiKey::Existing { revoked: true, .. }, ApiKeyCommand::Revoke { .. }) => Ok(vec![]),
            (
                ApiKey::Existing {
                    api_key_id,
                    revoked: false,
                },
                ApiKeyCommand::Revoke { by, at },
            ) => Ok(vec![ApiKeyEvent::ApiKeyRevoked(ApiKeyRevoked {
                api_key_id: *api_key_id,
                by: by.clone(),
                at: *at,
            })]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn create() -> ApiKeyCommand {
        ApiKeyCommand::Create {
            api_key_id: Uuid::nil(),
            name: "llm-service".into(),
            prefix: "klk_7Hq2Xv9R".into(),
            key_hash: "ab".repeat(32),
            scopes: vec!["requests:write".into()],
            created_by: "admin_token".into(),
            at: at(),
        }
    }

    fn created() -> ApiKeyEvent {
        ApiKeyEvent::ApiKeyCreated(ApiKeyCreated {
            api_key_id: Uuid::nil(),
            name: "llm-service".into(),
            prefix: "klk_7Hq2Xv9R".into(),
            key_hash: "ab".repeat(32),
            scopes: vec!["requests:write".into()],
            created_by: "admin_token".into(),
            at: at(),
        })
    }

    fn revoke() -> ApiKeyCommand {
        ApiKeyCommand::Revoke {
            by: "user:x".into(),
            at: at(),
        }
    }

    fn revoked() -> ApiKeyEvent {
        ApiKeyEvent::ApiKeyRevoked(ApiKeyRevoked {
            api_key_id: Uuid::nil(),
            by: "user:x".into(),
            at: at(),
        })
    }

    #[test]
    fn given_nothing_when_created_then_the_key_exists_with_its_hash_only() {
        ApiKey::given([]).when(create()).then([created()]);
        ApiKey::given([created()])
            .when(create())
            .then_error(ApiKeyError::AlreadyExists);
    }

    #[test]
    fn given_a_key_when_revoked_then_once_and_never_again() {
        ApiKey::given([created()]).when(revoke()).then([revoked()]);
        ApiKey::given([created(), revoked()])
            .when(revoke())
            .then([]);
    }

    #[test]
    fn given_no_key_when_revoked_then_not_found() {
        ApiKey::given([])
            .when(revoke())
            .then_error(ApiKeyError::NotFound);
    }
}
