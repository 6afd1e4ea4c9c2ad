//! `GET /v1/licenses/{id}?as_of=<RFC 3339>`: the license as it stood at an instant, folded from
//! its own stream up to that time, in the shape of the `licenses` read table.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use keyledger_api::ApiError;
use keyledger_events::EventPayload;
use keyledger_events::license::{LicenseEvent, LicenseStatus, Tier, license_stream};
use serde_json::Value;
use uuid::Uuid;

use super::get::LicenseView;
use crate::events::stream_until;

/// Folds a license's events, oldest first, as the `licenses` projection applies them (its
/// `position` moves with the events that change its row, not with installations or
/// certificates). `None` before the license was issued.
pub fn fold(events: &[(i64, LicenseEvent)]) -> Option<LicenseView> {
    let mut view: Option<LicenseView> = None;
    for (position, event) in events {
        let position = *position;
        match event {
            LicenseEvent::LicenseIssued(e) => {
                view = Some(LicenseView {
                    metadata: e.metadata.clone(),
                    entitlements: e.entitlements.clone(),
                    max_installations: e.max_installations.map(|n| n as i32),
                    ..active(
                        e.license_id,
                        &e.key_prefix,
                        &e.owner,
                        e.tier,
                        e.issued_at,
                        e.expires_at,
                        position,
                    )
                });
            }
            LicenseEvent::LicenseImported(e) => {
                view = Some(LicenseView {
                    legacy_id: Some(e.legacy_id),
                    ..active(
                        e.license_id,
                        &e.key_prefix,
                        &e.owner,
                        e.tier,
                        e.issued_at,
                        e.expires_at,
                        position,
                    )
                });
            }
            other => {
                let Some(view) = view.as_mut() else { continue };
                match other {
                    LicenseEvent::LicenseRevoked(e) => {
                        view.status = LicenseStatus::Revoked;
                        view.revoked_at = Some(e.revoked_at);
                        view.revoke_reason = Some(e.reason.clone());
                    }
                    LicenseEvent::LicenseSuspended(e) => {
                        view.status = LicenseStatus::Suspended;
                        view.suspended_at = Some(e.at);
                        view.suspend_reason = Some(e.reason.clone());
                    }
                    LicenseEvent::LicenseReinstated(_) => {
                        view.status = LicenseStatus::Active;
                        view.suspended_at = None;
                        view.suspend_reason = None;
                    }
                    LicenseEvent::LicenseRenewed(e) => view.expires_at = Some(e.expires_at),
                    LicenseEvent::LicensePolicyChanged(e) => {
                        view.entitlements = e.entitlements.clone();
                        view.max_installations = e.max_installations.map(|n| n as i32);
                    }
                    LicenseEvent::InstallationActivated(_)
                    | LicenseEvent::InstallationDeactivated(_)
                    | LicenseEvent::CertificateIssued(_)
                    | LicenseEvent::LicenseIssued(_)
                    | LicenseEvent::LicenseImported(_) => continue,
                }
                view.position = position;
            }
        }
    }
    view
}

/// A new, active license as the projection inserts it, before what only issuance carries.
fn active(
    license_id: Uuid,
    key_prefix: &str,
    owner: &str,
    tier: Tier,
    issued_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    position: i64,
) -> LicenseView {
    LicenseView {
        license_id,
        key_prefix: key_prefix.to_owned(),
        owner: owner.to_owned(),
        tier: tier.as_str().to_owned(),
        status: LicenseStatus::Active,
        metadata: Value::Object(Default::default()),
        issued_at,
        expires_at,
        revoked_at: None,
        revoke_reason: None,
        suspended_at: None,
        suspend_reason: None,
        entitlements: Vec::new(),
        max_installations: None,
        legacy_id: None,
        position,
    }
}

/// The license as it stood at `as_of`: its events recorded at or before then, folded.
pub async fn at(
    client: &impl GenericClient,
    license_id: Uuid,
    as_of: DateTime<Utc>,
) -> Result<Option<LicenseView>, ApiError> {
    let mut events = Vec::new();
    for envelope in stream_until(client, &license_stream(license_id), as_of).await? {
        if let Some(event) = LicenseEvent::decode(&envelope).map_err(ApiError::internal)? {
            events.push((envelope.position, event));
        }
    }
    Ok(fold(&events))
}
