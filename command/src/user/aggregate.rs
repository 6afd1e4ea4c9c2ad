//! The user aggregate: pure decide/apply. The handler brings the id, the time and the
//! password's hash in the command.

use chrono::{DateTime, Utc};
use keyledger_events::user::{
    Role, UserCreated, UserDisabled, UserEnabled, UserEvent, UserPasswordChanged, UserRoleChanged,
    UserTokensRevoked,
};
use uuid::Uuid;

use crate::execute::Aggregate;

#[derive(Debug, Clone, Default, PartialEq)]
pub enum User {
    #[default]
    Absent,
    Existing {
        user_id: Uuid,
        email: String,
        role: Role,
        disabled: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Create {
        user_id: Uuid,
        /// Already validated and lower-cased.
        email: String,
        role: Role,
        /// argon2id PHC string.
        password_hash: String,
        at: DateTime<Utc>,
    },
    ChangeRole {
        role: Role,
        at: DateTime<Utc>,
    },
    ChangePassword {
        password_hash: String,
        at: DateTime<Utc>,
    },
    Disable {
        at: DateTime<Utc>,
    },
    Enable {
        at: DateTime<Utc>,
    },
    /// Ends the access tokens issued so far (the refresh families are revoked on their own
    /// streams).
    RevokeTokens {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserError {
    NotFound,
    AlreadyExists,
    /// A disabled user's role and password stay as they are until the user is enabled.
    Disabled,
}

impl Aggregate for User {
    type Event = UserEvent;
    type Command = UserCommand;
    type Error = UserError;

    fn apply(self, event: &UserEvent) -> User {
        match (self, event) {
            (_, UserEvent::UserCreated(e)) => User::Existing {
                user_id: e.user_id,
                email: e.email.clone(),
                role: e.role,
                disabled: false,
            },
            (
                User::Existing {
                    user_id,
                    email,
                    disabled,
                    ..
                },
                UserEvent::UserRoleChanged(e),
            ) => User::Existing {
                user_id,
                email,
                role: e.to,
                disabled,
            },
            (
                User::Existing {
                    user_id,
                    email,
                    role,
                    ..
                },
                UserEvent::UserDisabled(_),
            ) => User::Existing {
                user_id,
                email,
                role,
                disabled: true,
            },
            (
                User::Existing {
                    user_id,
                    email,
                    role,
                    ..
                },
                UserEvent::UserEnabled(_),
            ) => User::Existing {
                user_id,
                email,
                role,
                disabled: false,
            },
            (state, _) => state,
        }
    }

    fn decide(&self, command: &UserCommand) -> Result<Vec<UserEvent>, UserError> {
        let (user_id, current_role, disabled) = match (self, command) {
            (
                User::Absent,
                UserCommand::Create {
                    user_id,
                    email,
                    role,
                    password_hash,
                    at,
                },
            ) => {
                return Ok(vec![UserEvent::UserCreated(UserCreated {
                    user_id: *user_id,
                    email: email.clone(),
                    role: *role,
                    password_hash: password_hash.clone(),
                    at: *at,
                })]);
            }
            (User::Existing { .. }, UserCommand::Create { .. }) => {
                return Err(UserError::AlreadyExists);
            }
            (User::Absent, _) => return Err(UserError::NotFound),
            (
                User::Existing {
                    user_id,
                    role,
                    disabled,
                    ..
                },
                _,
            ) => (*user_id, *role, *disabled),
        };
        match command {
            UserCommand::Create { .. } => Err(UserError::AlreadyExists),
            UserCommand::Disable { .. } if disabled => Ok(vec![]),
            UserCommand::Disable { at } => Ok(vec![UserEvent::UserDisabled(UserDisabled {
                user_id,
                at: *at,
            })]),
            UserCommand::Enable { .. } if !disabled => Ok(vec![]),
            UserCommand::Enable { at } => Ok(vec![UserEvent::UserEnabled(UserEnabled {
                user_id,
                at: *at,
            })]),
            UserCommand::RevokeTokens { at } => {
                Ok(vec![UserEvent::UserTokensRevoked(UserTokensRevoked {
                    user_id,
                    at: *at,
                })])
            }
            _ if disabled => Err(UserError::Disabled),
            UserCommand::ChangeRole { role, .. } if *role == current_role => Ok(vec![]),
            UserCommand::ChangeRole { role, at } => {
                Ok(vec![UserEvent::UserRoleChanged(UserRoleChanged {
                    user_id,
                    from: current_role,
                    to: *role,
                    at: *at,
                })])
            }
            UserCommand::ChangePassword { password_hash, at } => {
                Ok(vec![UserEvent::UserPasswordChanged(UserPasswordChanged {
                    user_id,
                    password_hash: password_hash.clone(),
                    at: *at,
                })])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn given(events: &[UserEvent]) -> User {
        events.iter().fold(User::default(), |s, e| s.apply(e))
    }

    fn created() -> UserEvent {
        UserEvent::UserCreated(UserCreated {
            user_id: Uuid::nil(),
            email: "ops@example.com".into(),
            role: Role::Operator,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            at: at(),
        })
    }

    #[test]
    fn given_nothing_when_created_then_the_user_exists_with_the_hash_only() {
        let events = given(&[])
            .decide(&UserCommand::Create {
                user_id: Uuid::nil(),
                email: "ops@example.com".into(),
                role: Role::Admin,
                password_hash: "$argon2id$hash".into(),
                at: at(),
            })
            .unwrap();
        let [UserEvent::UserCreated(e)] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert_eq!(e.role, Role::Admin);
        assert_eq!(e.password_hash, "$argon2id$hash");
    }

    #[test]
    fn given_a_user_when_created_again_then_it_is_refused() {
        let command = UserCommand::Create {
            user_id: Uuid::nil(),
            email: "x@example.com".into(),
            role: Role::Admin,
            password_hash: "h".into(),
            at: at(),
        };
        assert_eq!(
            given(&[created()]).decide(&command),
            Err(UserError::AlreadyExists)
        );
    }

    #[test]
    fn given_a_user_when_the_role_changes_then_the_event_names_both_roles() {
        let events = given(&[created()])
            .decide(&UserCommand::ChangeRole {
                role: Role::Auditor,
                at: at(),
            })
            .unwrap();
        assert_eq!(
            events,
            vec![UserEvent::UserRoleChanged(UserRoleChanged {
                user_id: Uuid::nil(),
                from: Role::Operator,
                to: Role::Auditor,
                at: at(),
            })]
        );
        let same = given(&[created()]).decide(&UserCommand::ChangeRole {
            role: Role::Operator,
            at: at(),
        });
        assert_eq!(same, Ok(vec![]));
    }

    #[test]
    fn given_a_disabled_user_when_disabled_again_or_changed_then_nothing_or_refused() {
        let disabled = given(&[
            created(),
            UserEvent::UserDisabled(UserDisabled {
                user_id: Uuid::nil(),
                at: at(),
            }),
        ]);
        assert_eq!(
            disabled.decide(&UserCommand::Disable { at: at() }),
            Ok(vec![])
        );
        assert_eq!(
            disabled.decide(&UserCommand::ChangePassword {
                password_hash: "h".into(),
                at: at()
            }),
            Err(UserError::Disabled)
        );
    }

    #[test]
    fn given_a_disabled_user_when_enabled_then_they_can_change_again() {
        let disabled_event = UserEvent::UserDisabled(UserDisabled {
            user_id: Uuid::nil(),
            at: at(),
        });
        let events = given(&[created(), disabled_event.clone()])
            .decide(&UserCommand::Enable { at: at() })
            .unwrap();
        assert_eq!(
            events,
            vec![UserEvent::UserEnabled(UserEnabled {
                user_id: Uuid::nil(),
                at: at()
            })]
        );
        let enabled = given(&[created(), disabled_event, events[0].clone()]);
        assert_eq!(
            enabled.decide(&UserCommand::Enable { at: at() }),
            Ok(vec![])
        );
        assert!(
            enabled
                .decide(&UserCommand::ChangeRole {
                    role: Role::Viewer,
                    at: at()
                })
                .is_ok_and(|events| events.len() == 1)
        );
    }

    #[test]
    fn given_a_user_when_tokens_are_revoked_then_each_revocation_is_an_event() {
        let state = given(&[created()]);
        for _ in 0..2 {
            assert_eq!(
                state.decide(&UserCommand::RevokeTokens { at: at() }),
                Ok(vec![UserEvent::UserTokensRevoked(UserTokensRevoked {
                    user_id: Uuid::nil(),
                    at: at()
                })])
            );
        }
        assert_eq!(
            given(&[]).decide(&UserCommand::RevokeTokens { at: at() }),
            Err(UserError::NotFound)
        );
    }

    #[test]
    fn given_no_user_when_disabled_then_not_found() {
        assert_eq!(
            given(&[]).decide(&UserCommand::Disable { at: at() }),
            Err(UserError::NotFound)
        );
    }
}
