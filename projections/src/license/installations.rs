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
