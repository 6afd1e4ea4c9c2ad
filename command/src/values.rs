//! The values commands are made of, parsed once where they enter: a handler turns its input
//! into these and the commands hold them, so an aggregate never sees an unchecked owner, agent
//! role, installation id or reason. Each refusal names the field it came in.

use std::fmt;

use keyledger_api::{ApiError, redact_text};

const MAX_OWNER_CHARS: usize = 256;
const MAX_ROLE_CHARS: usize = 64;
const MAX_INSTALLATION_ID_BYTES: usize = 128;
const MAX_REASON_CHARS: usize = 1000;

/// Trimmed text of 1 to `max` characters without control characters, or why not.
fn plain_text(text: &str, max: usize) -> Result<&str, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if trimmed.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(trimmed)
}

macro_rules! text_value {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        /// Tests state values they know to be valid.
        #[cfg(test)]
        impl From<&str> for $name {
            fn from(text: &str) -> $name {
                $name(text.to_owned())
            }
        }
    };
}

text_value!(
    /// Who holds a license: trimmed, 1 to 256 characters, no control characters.
    Owner
);
text_value!(
    /// An agent session's role: trimmed, 1 to 64 characters, no control characters.
    AgentRole
);
text_value!(
    /// A machine's id on a license: 1 to 128 visible ASCII characters.
    InstallationId
);
text_value!(
    /// Why, for a license's or a session's history: trimmed, 1 to 1000 characters.
    Reason
);

impl Owner {
    pub fn parse(text: &str) -> Result<Owner, ApiError> {
        plain_text(text, MAX_OWNER_CHARS)
            .map(|owner| Owner(redact_text(owner)))
            .map_err(|problem| ApiError::invalid_field("owner", problem))
    }
}

impl AgentRole {
    pub fn parse(text: &str) -> Result<AgentRole, ApiError> {
        plain_text(text, MAX_ROLE_CHARS)
            .map(|role| AgentRole(redact_text(role)))
            .map_err(|_| {
                ApiError::invalid_field(
                    "agent_role",
                    format!("must be 1 to {MAX_ROLE_CHARS} characters without control characters"),
                )
            })
    }
}

impl InstallationId {
    /// An id the log already holds: it was parsed when it came in.
    pub fn recorded(id: String) -> InstallationId {
        InstallationId(id)
    }

    pub fn parse(text: &str) -> Result<InstallationId, ApiError> {
        if text.is_empty()
            || text.len() > MAX_INSTALLATION_ID_BYTES
            || !text.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ApiError::invalid_field(
                "installation_id",
                "must be 1 to 128 visible ASCII characters",
            ));
        }
        Ok(InstallationId(redact_text(text)))
    }
}

impl Reason {
    /// A reason the command needs.
    pub fn required(text: &str) -> Result<Reason, ApiError> {
        Reason::optional(Some(text))?.ok_or_else(Reason::refused)
    }

    /// A reason the command may go without: absent or blank is none.
    pub fn optional(text: Option<&str>) -> Result<Option<Reason>, ApiError> {
        let text = text.map(str::trim).unwrap_or_default();
        if text.is_empty() {
            return Ok(None);
        }
        if text.chars().count() > MAX_REASON_CHARS {
            return Err(Reason::refused());
        }
        Ok(Some(Reason(redact_text(text))))
    }

    fn refused() -> ApiError {
        ApiError::invalid_field(
            "reason",
            format!("must be 1 to {MAX_REASON_CHARS} characters"),
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn values_are_trimmed_and_refusals_name_their_field() {
        assert_eq!(Owner::parse("  acme ").unwrap().as_str(), "acme");
        assert_eq!(AgentRole::parse(" planner ").unwrap().as_str(), "planner");
        assert_eq!(
            InstallationId::parse("host-42").unwrap().as_str(),
            "host-42"
        );
        assert_eq!(
            Reason::required(" refund ").unwrap(),
            Reason("refund".into())
        );
        assert_eq!(Reason::optional(Some("  ")).unwrap(), None);
        assert_eq!(Reason::optional(None).unwrap(), None);
        for (refused, field) in [
            (Owner::parse(" ").unwrap_err(), "owner"),
            (Owner::parse(&"o".repeat(257)).unwrap_err(), "owner"),
            (Owner::parse("a\u{7}b").unwrap_err(), "owner"),
            (AgentRole::parse(&"r".repeat(65)).unwrap_err(), "agent_role"),
            (
                InstallationId::parse("has space").unwrap_err(),
                "installation_id",
            ),
            (
                InstallationId::parse(&"i".repeat(129)).unwrap_err(),
                "installation_id",
            ),
            (Reason::required("").unwrap_err(), "reason"),
            (
                Reason::optional(Some(&"r".repeat(1001))).unwrap_err(),
                "reason",
            ),
        ] {
            assert!(
                refused.detail.starts_with(&format!("{field}: ")),
                "{refused:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn a_parsed_value_is_its_trimmed_input_within_the_rules(text in "\\PC{0,300}") {
            if let Ok(owner) = Owner::parse(&text) {
                prop_assert_eq!(owner.as_str(), text.trim());
                prop_assert!((1..=MAX_OWNER_CHARS).contains(&owner.as_str().chars().count()));
            }
            if let Ok(Some(reason)) = Reason::optional(Some(&text)) {
                prop_assert_eq!(reason.as_str(), text.trim());
            }
            if let Ok(id) = InstallationId::parse(&text) {
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }
}
