//! Users (operators): the aggregate, emails, argon2id password hashing, and the commands the
//! CLI and the API run to create and disable users.

pub mod aggregate;
pub mod password;

use chrono::{DateTime, Utc};
use keyledger_api::Role;
use keyledger_events::user::user_stream;
use keyledger_events::{EventStore, Metadata};
use uuid::Uuid;

use crate::execute::{CommandError, execute, execute_on_new_stream};
use aggregate::{User, UserCommand, UserError};

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

/// Disables a user: they can no longer log in, refresh, or use their access tokens.
pub async fn disable_user(
    store: &dyn EventStore,
    user_id: Uuid,
    metadata: &Metadata,
    now: DateTime<Utc>,
) -> Result<(), CommandError<UserError>> {
    execute::<User>(
        store,
        &user_stream(user_id),
        &UserCommand::Disable { at: now },
        metadata,
        &|_, _| None,
    )
    .await
    .map(|_| ())
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
