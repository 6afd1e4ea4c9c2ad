//! License events: the license's own stream (`license-<id>`), and the high-volume usage
//! (`license_usage-<id>`) and heartbeat (`installation_heartbeat-<id>`) streams, kept apart so
//! loading the aggregate stays cheap.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

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
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
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

/// Where a license stands: active until suspended or revoked, suspended until reinstated,
/// revoked for good. Expiry is a date (`expires_at`), not a status. Stored in the read tables
/// and answered on the wire as the lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenseStatus {
    Active,
    Suspended,
    Revoked,
}

impl LicenseStatus {
    pub const ALL: [LicenseStatus; 3] = [
        LicenseStatus::Active,
        LicenseStatus::Suspended,
        LicenseStatus::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStatus::Active => "active",
            LicenseStatus::Suspended => "suspended",
            LicenseStatus::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<LicenseStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A text that names no license status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown license status `{0}` (expected active, suspended or revoked)")]
pub struct UnknownLicenseStatus(pub String);

impl std::str::FromStr for LicenseStatus {
    type Err = UnknownLicenseStatus;

    fn from_str(text: &str) -> Result<LicenseStatus, UnknownLicenseStatus> {
        LicenseStatus::parse(text).ok_or_else(|| UnknownLicenseStatus(text.to_owned()))
    }
}

impl std::fmt::Display for LicenseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `text` column or parameter holding the status's name.
impl tokio_postgres::types::ToSql for LicenseStatus {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.as_str().to_sql(ty, out)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

impl<'a> tokio_postgres::types::FromSql<'a> for LicenseStatus {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<LicenseStatus, Box<dyn std::error::Error + Sync + Send>> {
        let text = <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
        Ok(text.parse()?)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::FromSql>::accepts(ty)
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
    CertificateIssued(CertificateIssued),
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
    /// `None` (`null`): a perpetual license, which never expires. Events written before
    /// perpetual licenses existed always carry a date.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
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
    /// `None` (`null`): the legacy row had no expiry date; the license is perpetual.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
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

/// Only a license with an end date is renewed: a perpetual one refuses renewal.
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

/// A signed license certificate was handed out (`POST /v1/licenses/{id}/certificate`). The
/// certificate itself is not stored: it is the license's state at this event, signed with the
/// key `kid` (Ed25519 signatures are deterministic, so it can be signed again identically).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateIssued {
    pub license_id: Uuid,
    pub certificate_id: Uuid,
    pub installation_id: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub kid: String,
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

crate::event_payload!(LicenseEvent {
    LicenseIssued,
    LicenseImported,
    LicenseRevoked,
    LicenseSuspended,
    LicenseReinstated,
    LicenseRenewed,
    LicensePolicyChanged,
    InstallationActivated,
    InstallationDeactivated,
    CertificateIssued,
});

/// The outcome codes of a validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

crate::event_payload!(UsageEvent { LicenseValidated });

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

crate::event_payload!(HeartbeatEvent {
    InstallationHeartbeat
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::EventPayload;
    use serde_json::json;

    fn issued(expiry: Option<Value>) -> Result<Option<LicenseEvent>, crate::payload::DecodeError> {
        let mut data = json!({
            "license_id": "0b7f4f0e-3c55-4c44-9d7a-2f5d8f6f1a01",
            "key_hash": "ab",
            "key_prefix": "lic_21LBgMt4",
            "owner": "acme",
            "tier": "pro",
            "issued_at": "2026-11-22T03:17:18.626626Z",
            "metadata": {}
        });
        if let (Some(expiry), Some(object)) = (expiry, data.as_object_mut()) {
            object.insert("expires_at".into(), expiry);
        }
        LicenseEvent::decode_parts("LicenseIssued", 1, data)
    }

    #[test]
    fn an_issued_event_written_before_perpetual_licenses_keeps_its_expiry() {
        let event = issued(Some(json!("2027-11-22T03:17:18.626626Z")));
        assert!(matches!(
            event,
            Ok(Some(LicenseEvent::LicenseIssued(e))) if e.expires_at.is_some()
        ));
    }

    #[test]
    fn an_issued_event_with_a_null_or_missing_expiry_is_perpetual() {
        for expiry in [Some(Value::Null), None] {
            assert!(matches!(
                issued(expiry),
                Ok(Some(LicenseEvent::LicenseIssued(e))) if e.expires_at.is_none()
            ));
        }
    }

    #[test]
    fn a_license_status_is_its_lowercase_name_in_json_and_in_text() {
        for (status, name) in [
            (LicenseStatus::Active, "active"),
            (LicenseStatus::Suspended, "suspended"),
            (LicenseStatus::Revoked, "revoked"),
        ] {
            assert_eq!(status.as_str(), name);
            assert_eq!(status.to_string(), name);
            assert_eq!(name.parse::<LicenseStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), json!(name));
            assert_eq!(
                serde_json::from_value::<LicenseStatus>(json!(name)).unwrap(),
                status
            );
        }
        assert_eq!(
            "expired".parse::<LicenseStatus>(),
            Err(UnknownLicenseStatus("expired".into()))
        );
        assert_eq!(LicenseStatus::parse("Active"), None);
    }

    #[test]
    fn a_perpetual_license_is_written_with_a_null_expiry() {
        let Ok(Some(event)) = issued(None) else {
            panic!("the event decodes");
        };
        let data = event.to_new_event(Uuid::nil()).data;
        assert_eq!(data["expires_at"], Value::Null);
        assert!(
            data.as_object()
                .is_some_and(|o| o.contains_key("expires_at"))
        );
    }
}
