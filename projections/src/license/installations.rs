//! `installations`: each license's machines, with their last heartbeat.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use keyledger_events::license::{DeactivationReason, HeartbeatEvent, LicenseEvent};
use keyledger_events::{Envelope, EventPayload, Projection, ProjectionError, event_types};
use uuid::Uuid;

pub struct Installations;

pub const NAME: &str = "installations";

#[async_trait]
impl Projection for Installations {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["installations"]
    }

    fn event_types(&self) -> &'static [&'static str] {
        event_types![
            LicenseEvent::InstallationActivated,
            LicenseEvent::InstallationDeactivated,
            LicenseEvent::LicenseRevoked,
            HeartbeatEvent::InstallationHeartbeat,
        ]
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        // Heartbeats are many: keep the latest per installation and write them once, after
        // the (rare) activations and deactivations of the batch.
        let mut seen: HashMap<(Uuid, String), DateTime<Utc>> = HashMap::new();
        for envelope in events {
            if let Some(HeartbeatEvent::InstallationHeartbeat(e)) =
                HeartbeatEvent::decode(envelope)?
            {
                let latest = seen
                    .entry((e.license_id, e.installation_id))
                    .or_insert(e.at);
                *latest = (*latest).max(e.at);
                continue;
            }
            match LicenseEvent::decode(envelope)? {
                Some(LicenseEvent::InstallationActivated(e)) => {
                    let statement = tx
                        .prepare_cached(
                            "INSERT INTO installations (license_id, installation_id, hostname, \
                                 metadata, activated_at, last_seen, active, position) \
                             VALUES ($1, $2, $3, $4, $5, NULL, true, $6) \
                             ON CONFLICT (license_id, installation_id) DO UPDATE \
                             SET hostname = EXCLUDED.hostname, metadata = EXCLUDED.metadata, \
                                 activated_at = EXCLUDED.activated_at, last_seen = NULL, \
                                 active = true, deactivated_at = NULL, \
                                 deactivation_reason = NULL, position = EXCLUDED.position",
                        )
                        .await?;
                    tx.execute(
                        &statement,
                        &[
                            &e.license_id,
                            &e.installation_id,
                            &e.hostname,
                            &e.metadata,
                            &e.at,
                            &envelope.position,
                        ],
                    )
                    .await?;
                }
                Some(LicenseEvent::InstallationDeactivated(e)) => {
                    let reason = match e.reason {
                        DeactivationReason::Released => "released",
                        DeactivationReason::HeartbeatTimeout => "heartbeat_timeout",
                    };
                    deactivate(
                        tx,
                        e.license_id,
                        Some(&e.installation_id),
                        e.at,
                        reason,
                        envelope.position,
                    )
                    .await?;
                }
                Some(LicenseEvent::LicenseRevoked(e)) => {
                    deactivate(
                        tx,
                        e.license_id,
                        None,
                        e.revoked_at,
                        "license_revoked",
                        envelope.position,
                    )
                    .await?;
                }
                _ => {}
            }
        }
        if !seen.is_empty() {
            let mut license_ids = Vec::with_capacity(seen.len());
            let mut installation_ids = Vec::with_capacity(seen.len());
            let mut at = Vec::with_capacity(seen.len());
            for ((license_id, installation_id), last) in seen {
                license_ids.push(license_id);
                installation_ids.push(installation_id);
                at.push(last);
            }
            let statement = tx
                .prepare_cached(
                    "UPDATE installations i SET last_seen = greatest(i.last_seen, u.at) \
                     FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS u(l, n, at) \
                     WHERE i.license_id = u.l AND i.installation_id = u.n AND i.active",
                )
                .await?;
            tx.execute(&statement, &[&license_ids, &installation_ids, &at])
                .await?;
        }
        Ok(())
    }
}

async fn deactivate(
    tx: &Transaction<'_>,
    license_id: Uuid,
    installation_id: Option<&str>,
    at: DateTime<Utc>,
    reason: &str,
    position: i64,
) -> Result<(), ProjectionError> {
    let statement = tx
        .prepare_cached(
            "UPDATE installations SET active = false, deactivated_at = $3, \
                                      deactivation_reason = $4, position = $5 \
             WHERE license_id = $1 AND ($2::text IS NULL OR installation_id = $2) AND active",
        )
        .await?;
    tx.execute(
        &statement,
        &[&license_id, &installation_id, &at, &reason, &position],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use keyledger_events::license::{InstallationHeartbeat, heartbeat_stream};
    use serde_json::json;

    use super::*;
    use crate::license::fixtures::*;
    use crate::testing::{TestDatabase, envelope};

    const ROWS: &str = "SELECT license_id, installation_id, hostname, metadata, activated_at, \
                               last_seen, active, deactivated_at, deactivation_reason, position \
                        FROM installations ORDER BY license_id, installation_id";

    fn heartbeat(position: i64, license_id: Uuid, installation: &str, on: i64) -> Envelope {
        let event = HeartbeatEvent::InstallationHeartbeat(InstallationHeartbeat {
            license_id,
            installation_id: installation.into(),
            at: at(on),
        });
        envelope(position, &heartbeat_stream(license_id), &event, at(on))
    }

    #[tokio::test]
    async fn activations_heartbeats_and_deactivations_keep_each_installation_row() {
        let db = TestDatabase::create().await;
        db.apply(
            &Installations,
            &[
                on_license(1, A, activated(A, "m1", 1)),
                on_license(2, A, activated(A, "m2", 2)),
                on_license(3, B, activated(B, "x", 3)),
                heartbeat(4, A, "m1", 40),
                // An older heartbeat read later does not move `last_seen` back.
                heartbeat(5, A, "m1", 30),
                heartbeat(6, A, "m2", 50),
                on_license(7, A, deactivated(A, "m2", DeactivationReason::Released, 7)),
                on_license(8, B, revoked(B, 8)),
            ],
        )
        .await;
        // A heartbeat of an inactive installation changes nothing.
        db.apply(&Installations, &[heartbeat(9, B, "x", 90)]).await;
        let row = |license_id: Uuid, id: &str, activated: &str, position: i64| {
            json!({
                "license_id": license_id,
                "installation_id": id,
                "hostname": format!("{id}.local"),
                "metadata": {"os": "linux"},
                "activated_at": activated,
                "last_seen": null,
                "active": true,
                "deactivated_at": null,
                "deactivation_reason": null,
                "position": position,
            })
        };
        let mut m1 = row(A, "m1", "2027-01-15T08:00:01+00:00", 1);
        m1["last_seen"] = json!("2027-01-15T08:00:40+00:00");
        let mut m2 = row(A, "m2", "2027-01-15T08:00:02+00:00", 7);
        m2["active"] = json!(false);
        m2["deactivated_at"] = json!("2027-01-15T08:00:07+00:00");
        m2["deactivation_reason"] = json!("released");
        let mut x = row(B, "x", "2027-01-15T08:00:03+00:00", 8);
        x["active"] = json!(false);
        x["deactivated_at"] = json!("2027-01-15T08:00:08+00:00");
        x["deactivation_reason"] = json!("license_revoked");
        assert_eq!(db.rows(ROWS).await, json!([m1, m2, x]));
        // Activated again, the row starts afresh.
        db.apply(
            &Installations,
            &[
                on_license(10, A, activated(A, "m2", 10)),
                on_license(
                    11,
                    A,
                    deactivated(A, "m1", DeactivationReason::HeartbeatTimeout, 11),
                ),
            ],
        )
        .await;
        let mut m1_timed_out = m1.clone();
        m1_timed_out["active"] = json!(false);
        m1_timed_out["deactivated_at"] = json!("2027-01-15T08:00:11+00:00");
        m1_timed_out["deactivation_reason"] = json!("heartbeat_timeout");
        m1_timed_out["position"] = json!(11);
        let rows = db.rows(ROWS).await;
        assert_eq!(rows[0], m1_timed_out);
        assert_eq!(rows[1], row(A, "m2", "2027-01-15T08:00:10+00:00", 10));
        db.drop().await;
    }
}
