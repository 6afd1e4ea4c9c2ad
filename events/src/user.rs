//! User events (`user-<id>` streams) and refresh-token family events (`refresh_family-<id>`
//! streams). Passwords and tokens never appear here: only an argon2id PHC hash of a password
//! and SHA-256 hashes (hex) of refresh tokens.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const USER_CATEGORY: &str = "user";
pub const REFRESH_FAMILY_CATEGORY: &str = "refresh_family";

pub fn user_stream(user_id: Uuid) -> String {
    crate::envelope::stream_id(USER_CATEGORY, user_id)
}

pub fn refresh_family_stream(family_id: Uuid) -> String {
    crate::envelope::stream_id(REFRESH_FAMILY_CATEGORY, family_id)
}

/// What an operator may do (enforced with the permission table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Auditor,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Auditor, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    UserCreated(UserCreated),
    UserRoleChanged(UserRoleChanged),
    UserPasswordChanged(UserPasswordChanged),
    UserDisabled(UserDisabled),
    UserEnabled(UserEnabled),
    /// Every access token issued to the user before this event is refused from here on (their
    /// refresh families are revoked by events of their own).
    UserTokensRevoked(UserTokensRevoked),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserCreated {
    pub user_id: Uuid,
    /// Lower-cased.
    pub email: String,
    pub role: Role,
    /// argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
    pub password_hash: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRoleChanged {
    pub user_id: Uuid,
    pub from: Role,
    pub to: Role,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPasswordChanged {
    pub user_id: Uuid,
    /// argon2id PHC string.
    pub password_hash: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDisabled {
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEnabled {
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserTokensRevoked {
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}

crate::event_payload!(UserEvent {
    UserCreated,
    UserRoleChanged,
    UserPasswordChanged,
    UserDisabled,
    UserEnabled,
    UserTokensRevoked,
});

/// Why a refresh family ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// A token already rotated was presented again (RFC 9700 reuse detection).
    Reuse,
    Logout,
    /// An admin ended the user's sessions (`POST /v1/users/{id}/revoke-tokens`).
    Admin,
    UserDisabled,
    /// The user's password changed: every login made with the old one ends.
    PasswordChanged,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Reuse => "reuse",
            RevokeReason::Logout => "logout",
            RevokeReason::Admin => "admin",
            RevokeReason::UserDisabled => "user_disabled",
            RevokeReason::PasswordChanged => "password_changed",
        }
    }
}

/// A login's chain of refresh tokens: each refresh replaces the family's one live token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum RefreshFamilyEvent {
    RefreshFamilyStarted(RefreshFamilyStarted),
    RefreshTokenRotated(RefreshTokenRotated),
    RefreshFamilyRevoked(RefreshFamilyRevoked),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshFamilyStarted {
    pub family_id: Uuid,
    pub user_id: Uuid,
    /// SHA-256 (hex) of the first refresh token.
    pub token_hash: String,
    pub expires_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshTokenRotated {
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub old_hash: String,
    pub new_hash: String,
    pub expires_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshFamilyRevoked {
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub reason: RevokeReason,
    /// With `reuse`: the hash of the rotated token that was presented again.
    #[serde(default)]
    pub presented_hash: Option<String>,
    pub at: DateTime<Utc>,
}

crate::event_payload!(RefreshFamilyEvent {
    RefreshFamilyStarted,
    RefreshTokenRotated,
    RefreshFamilyRevoked,
});
