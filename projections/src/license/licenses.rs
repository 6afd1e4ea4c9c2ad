//! `licenses`: one row per license, for `GET /v1/licenses/{id}` and the license search.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use keyledger_events::license::{LicenseEvent, LicenseStatus};
use keyledger_events::{Envelope, EventPayload, Projection, ProjectionError};
use serde_json::Value;
use uuid::Uuid;

pub struct Licenses;

pub const NAME: &str = "licenses";

#[async_trait]
impl Projection for Licenses {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["licenses"]
    }

    fn event_types(&self) -> &'static [&'static str] {
        LicenseEvent::EVENT_TYPES
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut created = Created::default();
        let mut changes = Vec::new();
        for envelope in events {
            match LicenseEvent::decode(envelope)? {
                Some(LicenseEvent::LicenseIssued(e)) => created.push(Row {
                    license_id: e.license_id,
                    key_prefix: e.key_prefix,
                    owner: e.owner,
                    tier: e.tier.as_str(),
                    metadata: e.metadata,
                    issued_at: e.issued_at,
                    expires_at: e.expires_at,
                    entitlements: e.entitlements.join("\u{1f}"),
                    max_installations: e.max_installations.map(|n| n as i32),
                    legacy_id: None,
                    position: envelope.position,
                }),
                Some(LicenseEvent::LicenseImported(e)) => created.push(Row {
                    license_id: e.license_id,
                    key_prefix: e.key_prefix,
                    owner: e.owner,
                    tier: e.tier.as_str(),
                    metadata: Value::Object(Default::default()),
                    issued_at: e.issued_at,
                    expires_at: e.expires_at,
                    entitlements: String::new(),
                    max_installations: None,
                    legacy_id: Some(e.legacy_id),
                    position: envelope.position,
                }),
                Some(other) => changes.push((other, envelope.position)),
                None => {}
            }
        }
        if !created.license_ids.is_empty() {
            // Entitlement names hold no control characters: U+001F separates them in one text.
            let statement = tx
                .prepare_cached(
                    "INSERT INTO licenses (license_id, key_prefix, owner, tier, status, metadata, \
                                           issued_at, expires_at, entitlements, max_installations, \
                                           legacy_id, position) \
                     SELECT l, k, o, t, $12::text, m, i, x, \
                            CASE WHEN e = '' THEN '{}'::text[] ELSE string_to_array(e, chr(31)) END, \
                            n, g, p \
                     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::json[], \
                                 $6::timestamptz[], $7::timestamptz[], $8::text[], $9::int[], \
                                 $10::bigint[], $11::bigint[]) \
                          AS u(l, k, o, t, m, i, x, e, n, g, p)",
                )
                .await?;
            tx.execute(
                &statement,
                &[
                    &created.license_ids,
                    &created.key_prefixes,
                    &created.owners,
                    &created.tiers,
                    &created.metadata,
                    &created.issued_at,
                    &created.expires_at,
                    &created.entitlements,
                    &created.max_installations,
                    &created.legacy_ids,
                    &created.positions,
                    &LicenseStatus::Active,
                ],
            )
            .await?;
        }
        for (change, position) in changes {
            apply_change(tx, change, position).await?;
        }
        Ok(())
    }
}

async fn apply_change(
    tx: &Transaction<'_>,
    change: LicenseEvent,
    position: i64,
) -> Result<(), ProjectionError> {
    match change {
        LicenseEvent::LicenseRevoked(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE licenses SET status = $5, revoked_at = $2, revoke_reason = $3, \
                                         position = $4 WHERE license_id = $1",
                )
                .await?;
            tx.execute(
                &statement,
                &[
                    &e.license_id,
                    &e.revoked_at,
                    &e.reason,
                    &position,
                    &LicenseStatus::Revoked,
                ],
            )
            .await?;
        }
        LicenseEvent::LicenseSuspended(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE licenses SET status = $5, suspended_at = $2, \
                                         suspend_reason = $3, position = $4 WHERE license_id = $1",
                )
                .await?;
            tx.execute(
                &statement,
                &[
                    &e.license_id,
                    &e.at,
                    &e.reason,
                    &position,
                    &LicenseStatus::Suspended,
                ],
            )
            .await?;
        }
        LicenseEvent::LicenseReinstated(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE licenses SET status = $3, suspended_at = NULL, \
                                         suspend_reason = NULL, position = $2 WHERE license_id = $1",
                )
                .await?;
            tx.execute(
                &statement,
                &[&e.license_id, &position, &LicenseStatus::Active],
            )
            .await?;
        }
        LicenseEvent::LicenseRenewed(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE licenses SET expires_at = $2, position = $3 WHERE license_id = $1",
                )
                .await?;
            tx.execute(&statement, &[&e.license_id, &e.expires_at, &position])
                .await?;
        }
        LicenseEvent::LicensePolicyChanged(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE licenses SET entitlements = $2, max_installations = $3, position = $4 \
                     WHERE license_id = $1",
                )
                .await?;
            let max = e.max_installations.map(|n| n as i32);
            tx.execute(
                &statement,
                &[&e.license_id, &e.entitlements, &max, &position],
            )
            .await?;
        }
        // Installations have their own projection.
        LicenseEvent::InstallationActivated(_)
        | LicenseEvent::InstallationDeactivated(_)
        | LicenseEvent::CertificateIssued(_)
        | LicenseEvent::LicenseIssued(_)
        | LicenseEvent::LicenseImported(_) => {}
    }
    Ok(())
}

struct Row {
    license_id: Uuid,
    key_prefix: String,
    owner: String,
    tier: &'static str,
    metadata: Value,
    issued_at: DateTime<Utc>,
    /// `None`: perpetual.
    expires_at: Option<DateTime<Utc>>,
    entitlements: String,
    max_installations: Option<i32>,
    legacy_id: Option<i64>,
    position: i64,
}

#[derive(Default)]
struct Created {
    license_ids: Vec<Uuid>,
    key_prefixes: Vec<String>,
    owners: Vec<String>,
    tiers: Vec<&'static str>,
    metadata: Vec<Value>,
    issued_at: Vec<DateTime<Utc>>,
    expires_at: Vec<Option<DateTime<Utc>>>,
    entitlements: Vec<String>,
    max_installations: Vec<Option<i32>>,
    legacy_ids: Vec<Option<i64>>,
    positions: Vec<i64>,
}

impl Created {
    fn push(&mut self, row: Row) {
        self.license_ids.push(row.license_id);
        self.key_prefixes.push(row.key_prefix);
        self.owners.push(row.owner);
        self.tiers.push(row.tier);
        self.metadata.push(row.metadata);
        self.issued_at.push(row.issued_at);
        self.expires_at.push(row.expires_at);
        self.entitlements.push(row.entitlements);
        self.max_installations.push(row.max_installations);
        self.legacy_ids.push(row.legacy_id);
        self.positions.push(row.position);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::license::fixtures::*;
    use crate::testing::TestDatabase;

    const ROWS: &str = "SELECT license_id, key_prefix, owner, tier, status, metadata, issued_at, \
                               expires_at, revoked_at, revoke_reason, suspended_at, \
                               suspend_reason, entitlements, max_installations, legacy_id, \
                               position \
                        FROM licenses ORDER BY license_id";

    #[tokio::test]
    async fn each_license_event_moves_its_row_and_installations_leave_it_alone() {
        let db = TestDatabase::create().await;
        db.apply(
            &Licenses,
            &[
                on_license(1, A, issued_a()),
                on_license(2, B, imported_b()),
                on_license(3, A, suspended(A, "unpaid", 3)),
            ],
        )
        .await;
        db.apply(
            &Licenses,
            &[
                on_license(4, A, reinstated(A, 4)),
                on_license(5, A, suspended(A, "again", 5)),
                on_license(6, A, renewed_a(6)),
                on_license(7, A, policy_changed(A, &["sso"], Some(2))),
                on_license(8, B, revoked(B, 8)),
                on_license(9, A, activated(A, "m1", 9)),
            ],
        )
        .await;
        assert_eq!(
            db.rows(ROWS).await,
            json!([
                {
                    "license_id": A,
                    "key_prefix": "lic_AAAAAAAA",
                    "owner": "acme",
                    "tier": "pro",
                    "status": "suspended",
                    "metadata": {"team": "x"},
                    "issued_at": "2027-01-15T08:00:00+00:00",
                    "expires_at": "2029-01-14T08:00:00+00:00",
                    "revoked_at": null,
                    "revoke_reason": null,
                    "suspended_at": "2027-01-15T08:00:05+00:00",
                    "suspend_reason": "again",
                    "entitlements": ["sso"],
                    "max_installations": 2,
                    "legacy_id": null,
                    "position": 7,
                },
                {
                    "license_id": B,
                    "key_prefix": "K3DEG-",
                    "owner": "user0@example.org",
                    "tier": "basic",
                    "status": "revoked",
                    "metadata": {},
                    "issued_at": "2027-01-15T08:00:01+00:00",
                    "expires_at": null,
                    "revoked_at": "2027-01-15T08:00:08+00:00",
                    "revoke_reason": "chargeback",
                    "suspended_at": null,
                    "suspend_reason": null,
                    "entitlements": [],
                    "max_installations": null,
                    "legacy_id": 7,
                    "position": 8,
                },
            ])
        );
        db.apply(&Licenses, &[on_license(10, A, reinstated(A, 10))])
            .await;
        let rows = db.rows(ROWS).await;
        assert_eq!(
            (
                &rows[0]["status"],
                &rows[0]["suspended_at"],
                &rows[0]["suspend_reason"],
                &rows[0]["position"]
            ),
            (&json!("active"), &Value::Null, &Value::Null, &json!(10))
        );
        db.drop().await;
    }
}
