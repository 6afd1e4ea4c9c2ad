//! The audit signing key's registration in the log, and the job that signs the log's head.
//!
//! A node's public key is appended as `SigningKeyRegistered` before the first checkpoint it
//! signs (one stream per key id, so a second registration conflicts and is dropped): the
//! published key set is read from the log, so a rotated key stays listed and old checkpoints
//! still verify. Every `CHECKPOINT_INTERVAL`
//! the node holding the `checkpoint-signer` lease signs the head, if the log moved since the
//! last checkpoint, and appends it as `CheckpointSigned`.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use chrono::Utc;
use deadpool_postgres::Pool;
use keyledger_events::audit::{AuditEvent, SigningKey, checkpoint_stream, signing_key_stream};
use keyledger_events::store::{AppendRequest, StoreError};
use keyledger_events::{EventPayload, EventStore, ExpectedVersion, Metadata};
use uuid::Uuid;

/// The lease whose holder signs checkpoints (one node at a time).
pub const SIGNER_LEASE: &str = "checkpoint-signer";

fn system() -> Metadata {
    Metadata {
        actor: Some("system".into()),
        ..Metadata::default()
    }
}

/// The node's audit signing key, and whether this process has seen it recorded in the log.
pub struct AuditKey {
    key: SigningKey,
    registered: AtomicBool,
}

impl AuditKey {
    pub fn new(key: SigningKey) -> AuditKey {
        AuditKey {
            key,
            registered: AtomicBool::new(false),
        }
    }

    /// A key known to be in the log already (or that must not be recorded).
    pub fn recorded(key: SigningKey) -> AuditKey {
        AuditKey {
            key,
            registered: AtomicBool::new(true),
        }
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Records the key in the log before its first signature leaves this process.
    pub async fn ensure_recorded(&self, store: &dyn EventStore) -> anyhow::Result<()> {
        if !self.registered.load(Ordering::Acquire) {
            register_key(store, &self.key).await?;
            self.registered.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// Records the node's public key in the log unless it is there already.
pub async fn register_key(store: &dyn EventStore, key: &SigningKey) -> anyhow::Result<()> {
    let event = AuditEvent::SigningKeyRegistered(key.public_key().clone());
    let appended = store
        .append(AppendRequest {
            stream_id: signing_key_stream(key.kid()),
            expected: ExpectedVersion::NoStream,
            events: vec![event.to_new_event(Uuid::new_v4())],
            metadata: system(),
            idempotency: None,
        })
        .await;
    match appended {
        Ok(_) => {
            tracing::info!(kid = key.kid(), "signing key recorded in the log");
            Ok(())
        }
        Err(StoreError::Conflict { .. }) => Ok(()),
        Err(error) => Err(error).context("Failed to record the signing key in the log"),
    }
}

/// Signs the log's head unless the last signed checkpoint is the head (nothing moved since);
/// returns the position signed. The key is recorded in the log first.
pub async fn sign_if_moved(
    store: &dyn EventStore,
    pool: &Pool,
    audit: &AuditKey,
) -> anyhow::Result<Option<i64>> {
    let client = pool.get().await.context("Failed to get a connection")?;
    let row = client
        .query_one(
            "SELECT (SELECT position FROM events ORDER BY position DESC LIMIT 1), \
                    (SELECT hash FROM events ORDER BY position DESC LIMIT 1), \
                    (SELECT position FROM events WHERE event_type = 'CheckpointSigned' \
                     ORDER BY position DESC LIMIT 1)",
            &[],
        )
        .await
        .context("Failed to read the head")?;
    drop(client);
    let (Some(position), Some(hash)) = (
        row.try_get::<_, Option<i64>>(0)?,
        row.try_get::<_, Option<Vec<u8>>>(1)?,
    ) else {
        return Ok(None);
    };
    if row.try_get::<_, Option<i64>>(2)? == Some(position) {
        return Ok(None);
    }
    audit.ensure_recorded(store).await?;
    let signed = audit.key().sign_checkpoint(position, &hash, Utc::now());
    store
        .append(AppendRequest {
            stream_id: checkpoint_stream(Uuid::new_v4()),
            expected: ExpectedVersion::NoStream,
            events: vec![AuditEvent::CheckpointSigned(signed).to_new_event(Uuid::new_v4())],
            metadata: system(),
            idempotency: None,
        })
        .await
        .context("Failed to append a signed checkpoint")?;
    Ok(Some(position))
}
