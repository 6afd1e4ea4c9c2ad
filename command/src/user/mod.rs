//! Users (operators): the aggregate, emails, argon2id password hashing, the commands the CLI
//! and the API run to manage users and end their access, and the `/v1/users` routes.
//!
//! Ending a user's access is two kinds of events: one on the user's stream (`UserDisabled`,
//! `UserPasswordChanged`, `UserTokensRevoked`), which refuses their access tokens from the next
//! request on, then one `RefreshFamilyRevoked` per live login, which ends their refresh tokens.

pub mod aggregate;
pub mod password;
pub mod routes;

pub use routes::{UserApi, unless_last_admin};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use keyledger_api::{ApiError, Code, Role};
use keyledger_events::user::{RevokeReason, refresh_family_stream, user_stream};
use keyledger_events::{EventStore, Metadata};
use uuid::Uuid;

use crate::auth::family::{FamilyCommand, RefreshFamily};
use crate::execute::{CommandError, execute, execute_on_new_stream};
use aggregate::{User, UserCommand, UserError};

impl From<CommandError<UserError>> for ApiError {
    fn from(error: CommandError<UserError>) -> Self {
        match error {
            CommandError::Domain(UserError::NotFound) => {
                ApiError::not_found(Code::ResUserNotFound, "no user has this id")
            }
            CommandError::Domain(UserError::AlreadyExists) => {
                ApiError::conflict(Code::BizUserExists, "a user with this id already exists")
            }
            CommandError::Domain(UserError::Disabled) => ApiError::conflict(
                Code::BizUserDisabled,
                "the user is disabled; enable them first",
            ),
            CommandError::Conflict(cause) | CommandError::Store(cause) => ApiError::store(cause),
        }
    }
}

/// Longest email accepted (RFC 5321's path limit).
const MAX_EMAIL_CHARS: usize = 254;

/// An email address: trimmed, lower-cased, `local@domain` with a dot in the domain, no spaces
/// or control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(text: &str) -> Result<Email, String> {
        let email = text.trim().to_lowercase();
        let refuse = || Err("must be an email address like name@example.com".to_owned());
        if email.chars().count() > MAX_EMAIL_CHARS
            || email
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ','))
        {
            return refuse();
        }
        let Some((local, domain)) = email.split_once('@') else {
            return refuse();
        };
        if local.is_empty()
            || local.chars().count() > 64
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return refuse();
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("email: {0}")]
    Email(String),
    #[error("password: {0}")]
    Password(String),
    #[error("a user with this email exists")]
    EmailTaken,
    #[error("{0}")]
    Store(String),
}

/// Creates a user through the aggregate; returns the new user's id. `email_taken` is the
/// caller's check of the `users` table (the table's unique email refuses a race).
pub async fn create_user(
    store: &dyn EventStore,
    email: &str,
    password: String,
    role: Role,
    email_taken: bool,
    metadata: &Metadata,
    now: DateTime<Utc>,
) -> Result<Uuid, CreateUserError> {
    let email = Email::parse(email).map_err(CreateUserError::Email)?;
    password::check_new(&password).map_err(CreateUserError::Password)?;
    if email_taken {
        return Err(CreateUserError::EmailTaken);
    }
    let password_hash = password::hash(password)
        .await
        .map_err(|e| CreateUserError::Store(e.to_string()))?;
    let user_id = Uuid::new_v4();
    let command = UserCommand::Create {
        user_id,
        email: email.0,
        role,
        password_hash,
        at: now,
    };
    execute_on_new_stream::<User>(store, &user_stream(user_id), &command, metadata, &|_, _| {
        None
    })
    .await
    .map_err(|e| match e {
        CommandError::Store(keyledger_events::StoreError::Rejected(_)) => {
            CreateUserError::EmailTaken
        }
        other => CreateUserError::Store(format!("{other:?}")),
    })?;
    Ok(user_id)
}

/// Runs a command on a user's stream; returns how many events it appended.
async fn on_user(
    store: &dyn EventStore,
    user_id: Uuid,
    command: UserCommand,
    metadata: &Metadata,
) -> Result<usize, ApiError> {
    let executed = execute::<User>(store, &user_stream(user_id), &command, metadata, &|_, _| {
        None
    })
    .await?;
    Ok(executed.events.len())
}

/// Revokes every live refresh family of a user, one `RefreshFamilyRevoked` each; returns how
/// many were live.
pub async fn revoke_families(
    store: &dyn EventStore,
    pool: &Pool,
    user_id: Uuid,
    reason: RevokeReason,
    metadata: &Metadata,
    now: DateTime<Utc>,
) -> Result<usize, ApiError> {
    let families = {
        let client = pool.get().await?;
        keyledger_projections::user::live_families(&client, user_id).await?
    };
    let mut revoked = 0;
    for family_id in families {
        let executed = execute::<RefreshFamily>(
            store,
            &refresh_family_stream(family_id),
            &FamilyCommand::Revoke { reason, at: now },
            metadata,
            &|_, _| None,
        )
        .await
        .map_err(crate::auth::family_error)?;
        revoked += executed.events.len();
    }
    Ok(revoked)
}

/// Disables a user: they can no longer log in, their access tokens are refused at once, and
/// their logins are revoked (so enabling them again revives none of them).
pub async fn disable_user(
    store: &dyn EventStore,
    pool: &Pool,
    user_id: Uuid,
    metadata: &Metadata,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    on_user(store, user_id, UserCommand::Disable { at: now }, metadata).await?;
    revoke_families(
        store,
        pool,
        user_id,
        RevokeReason::UserDisabled,
        metadata,
        now,
    )
    .await?;
    Ok(())
}

/// Enables a disabled user: they can log in again (with a new login: their old tokens stay
/// dead).
pub async fn enable_user(
    store: &dyn EventStore,
    user_id: Uuid,
    metadata: &Metadata,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    on_user(store, user_id, UserCommand::Enable { at: now }, metadata).await?;
    Ok(())
}

/// Changes a user's role; it takes effect on the user's next request.
pub async fn change_role(
    store: &dyn EventStore,
    user_id: Uuid,
    role: Role,
    metadata: &Metadata,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    on_user(
        store,
        user_id,
        UserCommand::ChangeRole { role, at: now },
        metadata,
    )
    .await?;
    Ok(())
}

/// Sets a new password (checked like a new user's): the old one no longer logs in, the access
/// tokens issued so far are refused, and every login of the user is revoked.
pub async fn change_password(
    store: &dyn EventStore,
    pool: &Pool,
    user_id: Uuid,
    new_password: String,
    metadata: &Metadata,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    password::check_new(&new_password).map_err(|e| ApiError::invalid_field("password", e))?;
    let password_hash = password::hash(new_password)
        .await
        .map_err(ApiError::internal)?;
    on_user(
        store,
        user_id,
        UserCommand::ChangePassword {
            password_hash,
            at: now,
        },
        metadata,
    )
    .await?;
    revoke_families(
        store,
        pool,
        user_id,
        RevokeReason::PasswordChanged,
        metadata,
        now,
    )
    .await?;
    Ok(())
}

/// Ends every token of a user: their access tokens are refused from the next request on and
/// their logins are revoked. Returns how many logins were live.
pub async fn revoke_tokens(
    store: &dyn EventStore,
    pool: &Pool,
    user_id: Uuid,
    metadata: &Metadata,
    now: DateTime<Utc>,
) -> Result<usize, ApiError> {
    on_user(
        store,
        user_id,
        UserCommand::RevokeTokens { at: now },
        metadata,
    )
    .await?;
    revoke_families(store, pool, user_id, RevokeReason::Admin, metadata, now).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Ops@Example.COM ").unwrap().as_str(),
            "ops@example.com"
        );
        for bad in [
            "",
            "ops",
            "@example.com",
            "ops@",
            "ops@example",
            "ops@@example.com",
            "o ps@example.com",
            "ops@example..com",
            "ops@.example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn an_accepted_email_is_lower_case_has_one_at_and_parses_to_itself(text in "\\PC{0,80}") {
            if let Ok(email) = Email::parse(&text) {
                let s = email.as_str();
                prop_assert_eq!(s.to_lowercase(), s);
                prop_assert_eq!(s.matches('@').count(), 1);
                prop_assert!(!s.chars().any(char::is_whitespace));
                prop_assert_eq!(Email::parse(s).unwrap(), email.clone());
            }
        }

        #[test]
        fn every_plain_address_is_accepted(local in "[a-z0-9._+-]{1,20}", domain in "[a-z0-9-]{1,20}\\.[a-z]{2,6}") {
            let text = format!("{local}@{domain}");
            let email = Email::parse(&text).unwrap();
            prop_assert_eq!(email.as_str(), text.as_str());
        }
    }
}
