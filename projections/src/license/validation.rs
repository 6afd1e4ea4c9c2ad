//! `license_validation` (key hash → what validation needs) and `license_daily_usage` (VALID
//! validations per license and UTC day), maintained inline in the append transaction, so that
//! they are exact as of any snapshot: each process loads its in-memory validation view
//! (`view.rs`) from them at start, and license-key authentication looks keys up here.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use keyledger_events::license::{LicenseEvent, LicenseStatus, UsageEvent, ValidationCode};
use keyledger_events::{Envelope, EventPayload, Projection, ProjectionError, event_types};
use uuid::Uuid;

pub struct LicenseValidation;

/// The events that change what validation needs to know (also the in-memory view's).
pub const EVENT_TYPES: &[&str] = event_types![
    LicenseEvent::LicenseIssued,
    LicenseEvent::LicenseImported,
    LicenseEvent::LicenseRevoked,
    LicenseEvent::LicenseSuspended,
    LicenseEvent::LicenseReinstated,
    LicenseEvent::LicenseRenewed,
    LicenseEvent::LicensePolicyChanged,
    LicenseEvent::InstallationActivated,
    LicenseEvent::InstallationDeactivated,
    UsageEvent::LicenseValidated,
];

/// Whether `installation_id` is active on the license (`None`: no such license). A revoked
/// license has no active installation.
pub async fn installation_active(
    client: &impl GenericClient,
    license_id: Uuid,
    installation_id: &str,
) -> Result<Option<bool>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "SELECT status <> $3 AND $2 = ANY(installations) \
             FROM license_validation WHERE license_id = $1",
        )
        .await?;
    let row = client
        .query_opt(
            &statement,
            &[&license_id, &installation_id, &LicenseStatus::Revoked],
        )
        .await?;
    row.map(|row| row.try_get(0)).transpose()
}

#[async_trait]
impl Projection for LicenseValidation {
    fn name(&self) -> &'static str {
        "license_validation"
    }

    fn version(&self) -> i32 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["license_validation", "license_daily_usage"]
    }

    fn event_types(&self) -> &'static [&'static str] {
        EVENT_TYPES
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut created = Created::default();
        let mut changes: Vec<LicenseEvent> = Vec::new();
        let mut valid: HashMap<(Uuid, NaiveDate), i64> = HashMap::new();
        for envelope in events {
            if let Some(UsageEvent::LicenseValidated(e)) = UsageEvent::decode(envelope)? {
                if e.code == ValidationCode::Valid {
                    *valid
                        .entry((e.license_id, e.validated_at.date_naive()))
                        .or_default() += 1;
                }
                continue;
            }
            match LicenseEvent::decode(envelope)? {
                Some(LicenseEvent::LicenseIssued(e)) => created.push(
                    e.key_hash,
                    e.license_id,
                    e.tier.as_str(),
                    e.expires_at,
                    // Names never hold control characters: U+001F separates them in one text.
                    e.entitlements.join("\u{1f}"),
                ),
                Some(LicenseEvent::LicenseImported(e)) => created.push(
                    e.key_hash,
                    e.license_id,
                    e.tier.as_str(),
                    e.expires_at,
                    String::new(),
                ),
                Some(other) => changes.push(other),
                None => {}
            }
        }
        if !created.license_ids.is_empty() {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO license_validation \
                         (key_hash, license_id, tier, status, expires_at, entitlements) \
                     SELECT k, l, t, $6::text, x, \
                            CASE WHEN e = '' THEN '{}'::text[] ELSE string_to_array(e, chr(31)) END \
                     FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[]) \
                          AS u(k, l, t, x, e)",
                )
                .await?;
            tx.execute(
                &statement,
                &[
                    &created.key_hashes,
                    &created.license_ids,
                    &created.tiers,
                    &created.expires_at,
                    &created.entitlements,
                    &LicenseStatus::Active,
                ],
            )
            .await?;
        }
        for change in changes {
            apply_change(tx, change).await?;
        }
        if !valid.is_empty() {
            let (keys, counts): (Vec<(Uuid, NaiveDate)>, Vec<i64>) = valid.into_iter().unzip();
            let (license_ids, days): (Vec<Uuid>, Vec<NaiveDate>) = keys.into_iter().unzip();
            let statement = tx
                .prepare_cached(
                    "INSERT INTO license_daily_usage (license_id, day, valid) \
                     SELECT * FROM unnest($1::uuid[], $2::date[], $3::bigint[]) \
                     ON CONFLICT (license_id, day) \
                     DO UPDATE SET valid = license_daily_usage.valid + EXCLUDED.valid",
                )
                .await?;
            tx.execute(&statement, &[&license_ids, &days, &counts])
                .await?;
        }
        Ok(())
    }
}

async fn apply_change(tx: &Transaction<'_>, change: LicenseEvent) -> Result<(), ProjectionError> {
    let set_status = |status: LicenseStatus, license_id: Uuid| async move {
        let statement = tx
            .prepare_cached("UPDATE license_validation SET status = $2 WHERE license_id = $1")
            .await?;
        tx.execute(&statement, &[&license_id, &status]).await
    };
    match change {
        LicenseEvent::LicenseRevoked(e) => {
            set_status(LicenseStatus::Revoked, e.license_id).await?;
        }
        LicenseEvent::LicenseSuspended(e) => {
            set_status(LicenseStatus::Suspended, e.license_id).await?;
        }
        LicenseEvent::LicenseReinstated(e) => {
            set_status(LicenseStatus::Active, e.license_id).await?;
        }
        LicenseEvent::LicenseRenewed(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE license_validation SET expires_at = $2 WHERE license_id = $1",
                )
                .await?;
            tx.execute(&statement, &[&e.license_id, &e.expires_at])
                .await?;
        }
        LicenseEvent::LicensePolicyChanged(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE license_validation SET entitlements = $2 WHERE license_id = $1",
                )
                .await?;
            tx.execute(&statement, &[&e.license_id, &e.entitlements])
                .await?;
        }
        LicenseEvent::InstallationActivated(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE license_validation \
                     SET installations = array_append(array_remove(installations, $2), $2) \
                     WHERE license_id = $1",
                )
                .await?;
            tx.execute(&statement, &[&e.license_id, &e.installation_id])
                .await?;
        }
        LicenseEvent::InstallationDeactivated(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE license_validation SET installations = array_remove(installations, $2) \
                     WHERE license_id = $1",
                )
                .await?;
            tx.execute(&statement, &[&e.license_id, &e.installation_id])
                .await?;
        }
        // A certificate changes nothing a validation reads.
        LicenseEvent::LicenseIssued(_)
        | LicenseEvent::LicenseImported(_)
        | LicenseEvent::CertificateIssued(_) => {}
    }
    Ok(())
}

#[derive(Default)]
struct Created {
    key_hashes: Vec<String>,
    license_ids: Vec<Uuid>,
    tiers: Vec<&'static str>,
    expires_at: Vec<Option<DateTime<Utc>>>,
    entitlements: Vec<String>,
}

impl Created {
    fn push(
        &mut self,
        key_hash: String,
        license_id: Uuid,
        tier: &'static str,
        expires_at: Option<DateTime<Utc>>,
        entitlements: String,
    ) {
        self.key_hashes.push(key_hash);
        self.license_ids.push(license_id);
        self.tiers.push(tier);
        self.expires_at.push(expires_at);
        self.entitlements.push(entitlements);
    }
}

#[cfg(test)]
mod tests {
    use keyledger_events::license::{CertificateIssued, DeactivationReason, ValidationCode};
    use serde_json::json;

    use super::*;
    use crate::license::fixtures::*;
    use crate::testing::TestDatabase;

    const ROWS: &str = "SELECT key_hash, license_id, tier, status, expires_at, entitlements, \
                               installations \
                        FROM license_validation ORDER BY license_id";
    const DAYS: &str = "SELECT license_id, day, valid FROM license_daily_usage \
                        ORDER BY license_id, day";

    #[tokio::test]
    async fn each_license_event_sets_what_validation_reads_and_valid_ones_count_per_day() {
        let db = TestDatabase::create().await;
        let certified = LicenseEvent::CertificateIssued(CertificateIssued {
            license_id: A,
            certificate_id: Uuid::from_u128(1),
            installation_id: None,
            issued_at: at(30),
            valid_until: at(60),
            kid: "k1".into(),
        });
        db.apply(
            &LicenseValidation,
            &[
                on_license(1, A, issued_a()),
                on_license(2, B, imported_b()),
                on_license(3, A, activated(A, "m1", 3)),
                on_license(4, A, activated(A, "m2", 4)),
                // Activated again: moves to the end of the list.
                on_license(5, A, activated(A, "m1", 5)),
                on_license(6, A, deactivated(A, "m2", DeactivationReason::Released, 6)),
                on_license(7, A, suspended(A, "unpaid", 7)),
                on_license(8, A, renewed_a(8)),
                on_license(9, A, policy_changed(A, &["sso"], None)),
                on_license(10, B, activated(B, "x", 10)),
                on_license(11, B, revoked(B, 11)),
                on_license(12, A, certified),
                validated(13, A, ValidationCode::Valid, None, 13),
                validated(14, A, ValidationCode::Suspended, None, 14),
                validated(15, A, ValidationCode::Valid, Some("sso"), 15),
                validated(16, A, ValidationCode::Valid, None, DAY + 16),
            ],
        )
        .await;
        assert_eq!(
            db.rows(ROWS).await,
            json!([
                {
                    "key_hash": "aa".repeat(32),
                    "license_id": A,
                    "tier": "pro",
                    "status": "suspended",
                    "expires_at": "2029-01-14T08:00:00+00:00",
                    "entitlements": ["sso"],
                    "installations": ["m1"],
                },
                {
                    "key_hash": "bb".repeat(32),
                    "license_id": B,
                    "tier": "basic",
                    "status": "revoked",
                    "expires_at": null,
                    "entitlements": [],
                    "installations": ["x"],
                },
            ])
        );
        // Another batch adds to the day's count.
        db.apply(
            &LicenseValidation,
            &[
                validated(17, A, ValidationCode::Valid, None, DAY + 17),
                on_license(18, A, reinstated(A, 18)),
            ],
        )
        .await;
        assert_eq!(
            db.rows(DAYS).await,
            json!([
                {"license_id": A, "day": "2027-01-15", "valid": 2},
                {"license_id": A, "day": "2027-01-16", "valid": 2},
            ])
        );
        assert_eq!(db.rows(ROWS).await[0]["status"], "active");
        let client = db.pool.get().await.unwrap();
        // A revoked license has no active installation; an unknown one is not there.
        assert_eq!(
            installation_active(&client, A, "m1").await.unwrap(),
            Some(true)
        );
        assert_eq!(
            installation_active(&client, A, "m2").await.unwrap(),
            Some(false)
        );
        assert_eq!(
            installation_active(&client, B, "x").await.unwrap(),
            Some(false)
        );
        assert_eq!(
            installation_active(&client, Uuid::nil(), "m1")
                .await
                .unwrap(),
            None
        );
        drop(client);
        db.drop().await;
    }
}
