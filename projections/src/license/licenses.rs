//! `licenses`: one row per license, for `GET /v1/licenses/{id}`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use keyledger_events::license::LicenseEvent;
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
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["licenses"]
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut issued = Issued::default();
        let mut revoked = Revoked::default();
        for envelope in events {
            match LicenseEvent::decode(envelope)? {
                Some(LicenseEvent::LicenseIssued(e)) => {
                    issued.license_ids.push(e.license_id);
                    issued.key_prefixes.push(e.key_prefix);
                    issued.owners.push(e.owner);
                    issued.tiers.push(e.tier.as_str());
                    issued.metadata.push(e.metadata);
                    issued.issued_at.push(e.issued_at);
                    issued.expires_at.push(e.expires_at);
                    issued.positions.push(envelope.position);
                }
                Some(LicenseEvent::LicenseRevoked(e)) => {
                    revoked.license_ids.push(e.license_id);
                    revoked.reasons.push(e.reason);
                    revoked.at.push(e.revoked_at);
                    revoked.positions.push(envelope.position);
                }
                None => {}
            }
        }
        if !issued.license_ids.is_empty() {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO licenses (license_id, key_prefix, owner, tier, status, metadata, \
                                           issued_at, expires_at, position) \
                     SELECT l, k, o, t, 'active', m, i, x, p \
                     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], \
                                 $6::timestamptz[], $7::timestamptz[], $8::bigint[]) \
                          AS u(l, k, o, t, m, i, x, p)",
                )
                .await?;
            tx.execute(
                &statement,
                &[
                    &issued.license_ids,
                    &issued.key_prefixes,
                    &issued.owners,
                    &issued.tiers,
                    &issued.metadata,
                    &issued.issued_at,
                    &issued.expires_at,
                    &issued.positions,
                ],
            )
            .await?;
        }
        if !revoked.license_ids.is_empty() {
            let statement = tx
                .prepare_cached(
                    "UPDATE licenses SET status = 'revoked', revoked_at = u.a, revoke_reason = u.r, \
                                         position = u.p \
                     FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::bigint[]) AS u(l, r, a, p) \
                     WHERE licenses.license_id = u.l",
                )
                .await?;
            tx.execute(
                &statement,
                &[
                    &revoked.license_ids,
                    &revoked.reasons,
                    &revoked.at,
                    &revoked.positions,
                ],
            )
            .await?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Issued {
    license_ids: Vec<Uuid>,
    key_prefixes: Vec<String>,
    owners: Vec<String>,
    tiers: Vec<&'static str>,
    metadata: Vec<Value>,
    issued_at: Vec<DateTime<Utc>>,
    expires_at: Vec<DateTime<Utc>>,
    positions: Vec<i64>,
}

#[derive(Default)]
struct Revoked {
    license_ids: Vec<Uuid>,
    reasons: Vec<String>,
    at: Vec<DateTime<Utc>>,
    positions: Vec<i64>,
}
