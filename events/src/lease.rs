//! Leases: one active worker per projection (or relay) across processes.
//!
//! A lease is a session-level advisory lock held on a connection of its own. If the process
//! dies or its connection drops, PostgreSQL releases the lock and a standby takes over.
//! Correctness never rests on the lease alone: projectors lock their checkpoint row in each
//! batch, and the relay's repeats are dropped by JetStream's duplicate window.

use deadpool_postgres::{Object, Pool};
use sha2::{Digest, Sha256};

pub struct Lease {
    name: String,
    client: Option<Object>,
}

/// The advisory lock key of a lease name.
pub fn lease_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("keyledger:lease:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

impl Lease {
    /// Takes the lease if nobody holds it.
    pub async fn try_acquire(pool: &Pool, name: &str) -> anyhow::Result<Option<Lease>> {
        let client = pool.get().await?;
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&lease_key(name)])
            .await?;
        let acquired: bool = row.try_get(0)?;
        if !acquired {
            return Ok(None);
        }
        tracing::info!(
            lease = name,
            "lease acquired: this process is the active worker"
        );
        Ok(Some(Lease {
            name: name.to_owned(),
            client: Some(client),
        }))
    }

    /// Whether the connection holding the lock is still alive.
    pub async fn is_held(&self) -> bool {
        match &self.client {
            Some(client) => client.simple_query("SELECT 1").await.is_ok(),
            None => false,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Closing the connection releases the lock; it must not go back to the pool.
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
            tracing::info!(lease = %self.name, "lease released");
        }
    }
}
