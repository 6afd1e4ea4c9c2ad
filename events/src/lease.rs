//! Leases: one active worker per projection (or relay) across processes.
//!
//! A lease is a session-level advisory lock held on a connection of its own, opened for it
//! and never taken from the shared pool: workers standing by or holding leases leave every
//! pooled connection to the requests and the writer. If the process
//! dies or its connection drops, PostgreSQL releases the lock and a standby takes over.
//! Correctness never rests on the lease alone: projectors lock their checkpoint row in each
//! batch, and the relay's repeats are dropped by JetStream's duplicate window.

use deadpool_postgres::{ClientWrapper, Pool};
use sha2::{Digest, Sha256};

pub struct Lease {
    name: String,
    client: Option<ClientWrapper>,
}

/// The advisory lock key of a lease name.
pub fn lease_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("keyledger:lease:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

impl Lease {
    /// Takes the lease if nobody holds it, on a dedicated connection to `pool`'s database.
    pub async fn try_acquire(pool: &Pool, name: &str) -> anyhow::Result<Option<Lease>> {
        let client = crate::db::dedicated_connection(pool).await?;
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
        // Closing the connection releases the lock.
        if let Some(client) = self.client.take() {
            drop(client);
            tracing::info!(lease = %self.name, "lease released");
        }
    }
}
