//! Consistency waits: a query carrying `X-Consistency-Position` waits (bounded) until the
//! projections it reads have applied that position.

use std::time::Duration;

use deadpool_postgres::Pool;
use keyledger_events::Notifier;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("projection {projection} has not reached position {position} within {waited:?}")]
    TimedOut {
        projection: String,
        position: i64,
        waited: Duration,
    },
    #[error("cannot read checkpoints: {0}")]
    Database(String),
}

/// How often the checkpoint table is read while waiting, in case a notification was missed.
const POLL: Duration = Duration::from_millis(25);

/// `pool` is where the query will read. When it is a replica (`confirm_in_pool`), a
/// notification from the primary only prompts a look at the replica's own checkpoint, which
/// includes replication lag.
pub async fn wait_for(
    pool: &Pool,
    notifier: &Notifier,
    projections: &[&str],
    position: i64,
    timeout: Duration,
    confirm_in_pool: bool,
) -> Result<(), WaitError> {
    let deadline = Instant::now() + timeout;
    for &name in projections {
        let mut checkpoint = notifier.watch_checkpoint(name);
        let mut next_poll = Instant::now();
        loop {
            let notified = *checkpoint.borrow_and_update() >= position;
            if notified && !confirm_in_pool {
                break;
            }
            let now = Instant::now();
            if now >= next_poll {
                let stored = read_checkpoint(pool, name).await?;
                if !confirm_in_pool {
                    notifier.checkpoint(name, stored);
                }
                if stored >= position {
                    break;
                }
                next_poll = now + POLL;
            }
            if now >= deadline {
                return Err(WaitError::TimedOut {
                    projection: name.to_owned(),
                    position,
                    waited: timeout,
                });
            }
            let _ = tokio::time::timeout_at(next_poll.min(deadline), checkpoint.changed()).await;
        }
    }
    Ok(())
}

async fn read_checkpoint(pool: &Pool, name: &str) -> Result<i64, WaitError> {
    let client = pool
        .get()
        .await
        .map_err(|e| WaitError::Database(e.to_string()))?;
    let row = client
        .query_opt("SELECT position FROM checkpoints WHERE name = $1", &[&name])
        .await
        .map_err(|e| WaitError::Database(e.to_string()))?;
    Ok(match row {
        Some(row) => row.try_get(0).unwrap_or(0),
        None => 0,
    })
}
