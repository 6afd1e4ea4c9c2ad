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
    use crate::spec::Spec;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
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

    fn disabled() -> UserEvent {
        UserEvent::UserDisabled(UserDisabled {
            user_id: Uuid::nil(),
            at: at(),
        })
    }

    fn enabled() -> UserEvent {
        UserEvent::UserEnabled(UserEnabled {
            user_id: Uuid::nil(),
            at: at(),
        })
    }

    fn role_changed(from: Role, to: Role) -> UserEvent {
        UserEvent::UserRoleChanged(UserRoleChanged {
            user_id: Uuid::nil(),
            from,
            to,
            at: at(),
        })
    }

    fn tokens_revoked() -> UserEvent {
        UserEvent::UserTokensRevoked(UserTokensRevoked {
            user_id: Uuid::nil(),
            at: at(),
        })
    }

    fn change_role(role: Role) -> UserCommand {
        UserCommand::ChangeRole { role, at: at() }
    }

    #[test]
    fn given_nothing_when_created_then_the_user_exists_with_the_hash_only() {
        User::given([])
            .when(UserCommand::Create {
                user_id: Uuid::nil(),
                email: "ops@example.com".into(),
                role: Role::Admin,
                password_hash: "$argon2id$hash".into(),
                at: at(),
            })
            .then([UserEvent::UserCreated(UserCreated {
                user_id: Uuid::nil(),
                email: "ops@example.com".into(),
                role: Role::Admin,
                password_hash: "$argon2id$hash".into(),
                at: at(),
            })]);
    }

    #[test]
    fn given_a_user_when_created_again_then_it_is_refused() {
        User::given([created()])
            .when(UserCommand::Create {
                user_id: Uuid::nil(),
                email: "x@example.com".into(),
                role: Role::Admin,
                password_hash: "h".into(),
                at: at(),
            })
            .then_error(UserError::AlreadyExists);
    }

    #[test]
    fn given_a_user_when_the_role_changes_then_the_event_names_both_roles() {
        User::given([created()])
            .when(change_role(Role::Auditor))
            .then([role_changed(Role::Operator, Role::Auditor)]);
        User::given([created()])
            .when(change_role(Role::Operator))
            .then([]);
    }

    #[test]
    fn given_a_disabled_user_when_disabled_again_or_changed_then_nothing_or_refused() {
        User::given([created(), disabled()])
            .when(UserCommand::Disable { at: at() })
            .then([]);
        User::given([created(), disabled()])
            .when(UserCommand::ChangePassword {
                password_hash: "h".into(),
                at: at(),
            })
            .then_error(UserError::Disabled);
    }

    #[test]
    fn given_a_disabled_user_when_enabled_then_they_can_change_again() {
        User::given([created(), disabled()])
            .when(UserCommand::Enable { at: at() })
            .then([enabled()]);
        User::given([created(), disabled(), enabled()])
            .when(UserCommand::Enable { at: at() })
            .then([]);
        User::given([created(), disabled(), enabled()])
            .when(change_role(Role::Viewer))
            .then([role_changed(Role::Operator, Role::Viewer)]);
    }

    #[test]
    fn given_a_user_when_tokens_are_revoked_then_each_revocation_is_an_event() {
        User::given([created()])
            .when(UserCommand::RevokeTokens { at: at() })
            .then([tokens_revoked()]);
        User::given([created(), tokens_revoked()])
            .when(UserCommand::RevokeTokens { at: at() })
            .then([tokens_revoked()]);
        User::given([])
            .when(UserCommand::RevokeTokens { at: at() })
            .then_error(UserError::NotFound);
    }

    #[test]
    fn given_no_user_when_disabled_then_not_found() {
        User::given([])
            .when(UserCommand::Disable { at: at() })
            .then_error(UserError::NotFound);
    }
}
