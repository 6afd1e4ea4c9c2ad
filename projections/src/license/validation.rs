//! `license_validation`: key hash → license status, maintained inline in the append
//! transaction so that a revoke is visible to the very next validation.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use deadpool_postgres::Transaction;
use keyledger_events::license::LicenseEvent;
use keyledger_events::{Envelope, EventPayload, Projection, ProjectionError};
use uuid::Uuid;

pub struct LicenseValidation;

/// What validation needs to know about a key.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationRow {
    pub license_id: Uuid,
    pub tier: String,
    pub status: String,
    pub expires_at: DateTime<Utc>,
}

/// One primary-key lookup by the key's hash.
pub async fn lookup(
    client: &impl GenericClient,
    key_hash: &str,
) -> Result<Option<ValidationRow>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "SELECT license_id, tier, status, expires_at FROM license_validation WHERE key_hash = $1",
        )
        .await?;
    let row = client.query_opt(&statement, &[&key_hash]).await?;
    row.map(|row| {
        Ok(ValidationRow {
            license_id: row.try_get(0)?,
            tier: row.try_get(1)?,
            status: row.try_get(2)?,
            expires_at: row.try_get(3)?,
        })
    })
    .transpose()
}

#[async_trait]
impl Projection for LicenseValidation {
    fn name(&self) -> &'static str {
        "license_validation"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["license_validation"]
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut issued = Issued::default();
        let mut revoked: Vec<Uuid> = Vec::new();
        for envelope in events {
            match LicenseEvent::decode(envelope)? {
                Some(LicenseEvent::LicenseIssued(e)) => {
                    issued.key_hashes.push(e.key_hash);
                    issued.license_ids.push(e.license_id);
                    issued.tiers.push(e.tier.as_str());
                    issued.expires_at.push(e.expires_at);
                }
                Some(LicenseEvent::LicenseRevoked(e)) => revoked.push(e.license_id),
                None => {}
            }
        }
        if !issued.license_ids.is_empty() {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO license_validation (key_hash, license_id, tier, status, expires_at) \
                     SELECT k, l, t, 'active', x \
                     FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[]) AS u(k, l, t, x)",
                )
                .await?;
            tx.execute(
                &statement,
                &[
                    &issued.key_hashes,
                    &issued.license_ids,
                    &issued.tiers,
                    &issued.expires_at,
                ],
            )
            .await?;
        }
        if !revoked.is_empty() {
            let statement = tx
                .prepare_cached(
                    "UPDATE license_validation SET status = 'revoked' WHERE license_id = ANY($1::uuid[])",
                )
                .await?;
            tx.execute(&statement, &[&revoked]).await?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Issued {
    key_hashes: Vec<String>,
    license_ids: Vec<Uuid>,
    tiers: Vec<&'static str>,
    expires_at: Vec<DateTime<Utc>>,
}
