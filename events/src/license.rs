//! License events: the license's own stream (`license-<id>`), and the high-volume usage
//! (`license_usage-<id>`) and heartbeat (`installation_heartbeat-<id>`) streams, kept apart so
//! loading the aggregate stays cheap.

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

pub const HEARTBEAT_CATEGORY: &str = "installation_heartbeat";

pub fn heartbeat_stream(license_id: Uuid) -> String {
    crate::envelope::stream_id(HEARTBEAT_CATEGORY, license_id)
}

/// The tiers a license can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    LicenseImported(LicenseImported),
    LicenseRevoked(LicenseRevoked),
    LicenseSuspended(LicenseSuspended),
    LicenseReinstated(LicenseReinstated),
    LicenseRenewed(LicenseRenewed),
    LicensePolicyChanged(LicensePolicyChanged),
    InstallationActivated(InstallationActivated),
    InstallationDeactivated(InstallationDeactivated),
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
    /// Entitlements on top of the tier's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entitlements: Vec<String>,
    /// Replaces the tier's installation limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_installations: Option<u32>,
}

/// A license brought over from the legacy service, with its original key's hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseImported {
    pub license_id: Uuid,
    pub key_hash: String,
    pub key_prefix: String,
    pub owner: String,
    pub tier: Tier,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The row id in the legacy database.
    pub legacy_id: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseSuspended {
    pub license_id: Uuid,
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseReinstated {
    pub license_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseRenewed {
    pub license_id: Uuid,
    pub valid_days: u32,
    pub previous_expires_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

/// Per-license overrides: entitlements on top of the tier's, and the installation limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicensePolicyChanged {
    pub license_id: Uuid,
    pub entitlements: Vec<String>,
    pub max_installations: Option<u32>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallationActivated {
    pub license_id: Uuid,
    pub installation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub metadata: Value,
    pub at: DateTime<Utc>,
}

/// Why an installation stopped holding a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeactivationReason {
    /// `DELETE …/installations/{id}`.
    Released,
    /// No heartbeat within `HEARTBEAT_TTL` (actor `system`).
    HeartbeatTimeout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallationDeactivated {
    pub license_id: Uuid,
    pub installation_id: String,
    pub reason: DeactivationReason,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseRevoked {
    pub license_id: Uuid,
    pub reason: String,
    pub revoked_at: DateTime<Utc>,
}

impl EventPayload for LicenseEvent {
    const EVENT_TYPES: &'static [&'static str] = &[
        "LicenseIssued",
        "LicenseImported",
        "LicenseRevoked",
        "LicenseSuspended",
        "LicenseReinstated",
        "LicenseRenewed",
        "LicensePolicyChanged",
        "InstallationActivated",
        "InstallationDeactivated",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            LicenseEvent::LicenseIssued(_) => "LicenseIssued",
            LicenseEvent::LicenseImported(_) => "LicenseImported",
            LicenseEvent::LicenseRevoked(_) => "LicenseRevoked",
            LicenseEvent::LicenseSuspended(_) => "LicenseSuspended",
            LicenseEvent::LicenseReinstated(_) => "LicenseReinstated",
            LicenseEvent::LicenseRenewed(_) => "LicenseRenewed",
            LicenseEvent::LicensePolicyChanged(_) => "LicensePolicyChanged",
            LicenseEvent::InstallationActivated(_) => "InstallationActivated",
            LicenseEvent::InstallationDeactivated(_) => "InstallationDeactivated",
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
    Suspended,
    MalformedKey,
    FeatureNotEntitled,
    QuotaExceeded,
    InstallationNotActivated,
}

impl ValidationCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ValidationCode::Valid => "VALID",
            ValidationCode::NotFound => "NOT_FOUND",
            ValidationCode::Expired => "EXPIRED",
            ValidationCode::Revoked => "REVOKED",
            ValidationCode::Suspended => "SUSPENDED",
            ValidationCode::MalformedKey => "MALFORMED_KEY",
            ValidationCode::FeatureNotEntitled => "FEATURE_NOT_ENTITLED",
            ValidationCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ValidationCode::InstallationNotActivated => "INSTALLATION_NOT_ACTIVATED",
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<String>,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum HeartbeatEvent {
    InstallationHeartbeat(InstallationHeartbeat),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallationHeartbeat {
    pub license_id: Uuid,
    pub installation_id: String,
    pub at: DateTime<Utc>,
}

impl EventPayload for HeartbeatEvent {
    const EVENT_TYPES: &'static [&'static str] = &["InstallationHeartbeat"];

    fn event_type(&self) -> &'static str {
        match self {
            HeartbeatEvent::InstallationHeartbeat(_) => "InstallationHeartbeat",
        }
    }
}
