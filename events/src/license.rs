//! License events: the license's own stream (`license-<id>`) and its usage stream
//! (`license_usage-<id>`), kept apart so loading the aggregate stays cheap.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::payload::EventPayload;

pub const LICENSE_CATEGORY: &str = "license";
pub const USAGE_CATEGORY: &str = "license_usage";

pub fn license_stream(license_id: Uuid) -> String {
    crate::envelope::stream_id(LICENSE_CATEGORY, license_id)
}

pub fn usage_stream(license_id: Uuid) -> String {
    crate::envelope::stream_id(USAGE_CATEGORY, license_id)
}

/// The tiers a license can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Basic,
    Pro,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Basic => "basic",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }

    pub fn parse(text: &str) -> Option<Tier> {
        match text {
            "free" => Some(Tier::Free),
            "basic" => Some(Tier::Basic),
            "pro" => Some(Tier::Pro),
            "enterprise" => Some(Tier::Enterprise),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum LicenseEvent {
    LicenseIssued(LicenseIssued),
    LicenseRevoked(LicenseRevoked),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseIssued {
    pub license_id: Uuid,
    /// SHA-256 of the key, hex. The key itself is never stored.
    pub key_hash: String,
    /// The key's first characters, for people to recognise it.
    pub key_prefix: String,
    pub owner: String,
    pub tier: Tier,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub metadata: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseRevoked {
    pub license_id: Uuid,
    pub reason: String,
    pub revoked_at: DateTime<Utc>,
}

impl EventPayload for LicenseEvent {
    const EVENT_TYPES: &'static [&'static str] = &["LicenseIssued", "LicenseRevoked"];

    fn event_type(&self) -> &'static str {
        match self {
            LicenseEvent::LicenseIssued(_) => "LicenseIssued",
            LicenseEvent::LicenseRevoked(_) => "LicenseRevoked",
        }
    }
}

/// The outcome codes of a validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValidationCode {
    Valid,
    NotFound,
    Expired,
    Revoked,
    MalformedKey,
}

impl ValidationCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ValidationCode::Valid => "VALID",
            ValidationCode::NotFound => "NOT_FOUND",
            ValidationCode::Expired => "EXPIRED",
            ValidationCode::Revoked => "REVOKED",
            ValidationCode::MalformedKey => "MALFORMED_KEY",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UsageEvent {
    LicenseValidated(LicenseValidated),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseValidated {
    pub license_id: Uuid,
    pub code: ValidationCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    #[serde(default)]
    pub metadata: Value,
    pub validated_at: DateTime<Utc>,
}

impl EventPayload for UsageEvent {
    const EVENT_TYPES: &'static [&'static str] = &["LicenseValidated"];

    fn event_type(&self) -> &'static str {
        match self {
            UsageEvent::LicenseValidated(_) => "LicenseValidated",
        }
    }
}
