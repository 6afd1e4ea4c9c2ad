//! License events for the projection tests: two licenses, `A` issued and `B` imported.

use chrono::{DateTime, Duration, Utc};
use keyledger_events::Envelope;
use keyledger_events::license::{
    DeactivationReason, InstallationActivated, InstallationDeactivated, LicenseEvent,
    LicenseImported, LicenseIssued, LicensePolicyChanged, LicenseReinstated, LicenseRenewed,
    LicenseRevoked, LicenseSuspended, LicenseValidated, Tier, UsageEvent, ValidationCode,
    license_stream, usage_stream,
};
use serde_json::json;
use uuid::Uuid;

use crate::testing::envelope;

pub const A: Uuid = Uuid::from_u128(0xa);
pub const B: Uuid = Uuid::from_u128(0xb);

/// 2027-01-15T08:00:00Z and `seconds` after.
pub fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::seconds(seconds)
}

pub const DAY: i64 = 86_400;

/// `event` on its license's stream at `position`.
pub fn on_license(position: i64, license_id: Uuid, event: LicenseEvent) -> Envelope {
    envelope(position, &license_stream(license_id), &event, at(position))
}

/// A: pro, for a year, with entitlements `sso` and `export` and at most 5 installations.
pub fn issued_a() -> LicenseEvent {
    LicenseEvent::LicenseIssued(LicenseIssued {
        license_id: A,
        key_hash: "aa".repeat(32),
        key_prefix: "lic_AAAAAAAA".into(),
        owner: "acme".into(),
        tier: Tier::Pro,
        issued_at: at(0),
        expires_at: Some(at(365 * DAY)),
        metadata: json!({"team": "x"}),
        entitlements: vec!["sso".into(), "export".into()],
        max_installations: Some(5),
    })
}

/// B: basic, perpetual, from the legacy service.
pub fn imported_b() -> LicenseEvent {
    LicenseEvent::LicenseImported(LicenseImported {
        license_id: B,
        key_hash: "bb".repeat(32),
        key_prefix: "K3DEG-".into(),
        owner: "user0@example.org".into(),
        tier: Tier::Basic,
        issued_at: at(1),
        expires_at: None,
        legacy_id: 7,
    })
}

pub fn suspended(license_id: Uuid, reason: &str, on: i64) -> LicenseEvent {
    LicenseEvent::LicenseSuspended(LicenseSuspended {
        license_id,
        reason: reason.into(),
        at: at(on),
    })
}

pub fn reinstated(license_id: Uuid, on: i64) -> LicenseEvent {
    LicenseEvent::LicenseReinstated(LicenseReinstated {
        license_id,
        reason: None,
        at: at(on),
    })
}

/// A's end moves a year on.
pub fn renewed_a(on: i64) -> LicenseEvent {
    LicenseEvent::LicenseRenewed(LicenseRenewed {
        license_id: A,
        valid_days: 365,
        previous_expires_at: at(365 * DAY),
        expires_at: at(730 * DAY),
        at: at(on),
    })
}

pub fn policy_changed(license_id: Uuid, entitlements: &[&str], max: Option<u32>) -> LicenseEvent {
    LicenseEvent::LicensePolicyChanged(LicensePolicyChanged {
        license_id,
        entitlements: entitlements.iter().map(|&e| e.to_owned()).collect(),
        max_installations: max,
        at: at(20),
    })
}

pub fn revoked(license_id: Uuid, on: i64) -> LicenseEvent {
    LicenseEvent::LicenseRevoked(LicenseRevoked {
        license_id,
        reason: "chargeback".into(),
        revoked_at: at(on),
    })
}

pub fn activated(license_id: Uuid, installation: &str, on: i64) -> LicenseEvent {
    LicenseEvent::InstallationActivated(InstallationActivated {
        license_id,
        installation_id: installation.into(),
        hostname: Some(format!("{installation}.local")),
        metadata: json!({"os": "linux"}),
        at: at(on),
    })
}

pub fn deactivated(
    license_id: Uuid,
    installation: &str,
    reason: DeactivationReason,
    on: i64,
) -> LicenseEvent {
    LicenseEvent::InstallationDeactivated(InstallationDeactivated {
        license_id,
        installation_id: installation.into(),
        reason,
        at: at(on),
    })
}

/// A validation of `license_id` at `position`, `on` seconds after the start.
pub fn validated(
    position: i64,
    license_id: Uuid,
    code: ValidationCode,
    feature: Option<&str>,
    on: i64,
) -> Envelope {
    let event = UsageEvent::LicenseValidated(LicenseValidated {
        license_id,
        code,
        feature: feature.map(Into::into),
        installation_id: None,
        metadata: json!({}),
        validated_at: at(on),
    });
    envelope(position, &usage_stream(license_id), &event, at(on))
}
