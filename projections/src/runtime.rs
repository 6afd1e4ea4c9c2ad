//! The projector runtime: one worker per projection, active in one process at a time.
//!
//! Each step reads a batch of events after the projection's checkpoint, applies it and
//! advances the checkpoint in ONE transaction, holding the checkpoint row's lock: the effect
//! is exactly-once even if two workers ever ran at once. Workers wake on in-process commits,
//! on NOTIFY from other processes, and poll as a fallback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::Pool;
use keyledger_events::lease::Lease;
use keyledger_events::notifier::CHECKPOINTS_CHANNEL;
use keyledger_events::store::read_all_on;
use keyledger_events::{Notifier, Projection};

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub batch_size: i64,
    /// Longest sleep between two looks at the log when no notification arrives.
    pub poll_interval: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            batch_size: 1000,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// Key of the lock that lets one process at a time prepare (and maybe rebuild) projections.
const PREPARE_LOCK_KEY: i64 = 0x6B65_796C_6564_6732;

/// Makes sure every projection has a checkpoint row, and rebuilds those whose version changed.
/// Processes starting together take turns; the later ones find the work done.
pub async fn prepare(
    pool: &Pool,
    projections: &[Arc<dyn Projection>],
    inline: &[Arc<dyn Projection>],
    notifier: &Notifier,
) -> anyhow::Result<()> {
    let guard = pool.get().await.context("Failed to get a connection")?;
    guard
        .execute("SELECT pg_advisory_lock($1)", &[&PREPARE_LOCK_KEY])
        .await
        .context("Failed to take the prepare lock")?;
    let result = prepare_locked(pool, projections, inline, notifier).await;
    let _ = guard
        .execute("SELECT pg_advisory_unlock($1)", &[&PREPARE_LOCK_KEY])
        .await;
    result
}

async fn prepare_locked(
    pool: &Pool,
    projections: &[Arc<dyn Projection>],
    inline: &[Arc<dyn Projection>],
    notifier: &Notifier,
) -> anyhow::Result<()> {
    for (projection, is_inline) in projections
        .iter()
        .map(|p| (p, false))
        .chain(inline.iter().map(|p| (p, true)))
    {
        let client = pool.get().await.context("Failed to get a connection")?;
        let name = projection.name();
        let inserted = client
            .execute(
                "INSERT INTO checkpoints (name, position, version) VALUES ($1, 0, $2) \
                 ON CONFLICT DO NOTHING",
                &[&name, &projection.version()],
            )
            .await
            .context("Failed to create a checkpoint")?;
        let stored: i32 = client
            .query_one("SELECT version FROM checkpoints WHERE name = $1", &[&name])
            .await
            .context("Failed to read a checkpoint")?
            .try_get(0)?;
        if inserted == 0 && stored != projection.version() {
            tracing::info!(
                projection = name,
                from = stored,
                to = projection.version(),
                "projection version changed: rebuilding"
            );
            crate::rebuild::rebuild(pool, projection.as_ref(), is_inline, notifier).await?;
        }
    }
    Ok(())
}

/// Runs a worker per projection until the task is dropped.
pub async fn run_until_stopped(
    pool: Pool,
    projections: Vec<Arc<dyn Projection>>,
    notifier: Notifier,
    config: RuntimeConfig,
) {
    let workers: Vec<_> = projections
        .into_iter()
        .map(|projection| {
            tokio::spawn(run_worker(
                pool.clone(),
                projection,
                notifier.clone(),
                config.clone(),
            ))
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

async fn run_worker(
    pool: Pool,
    projection: Arc<dyn Projection>,
    notifier: Notifier,
    config: RuntimeConfig,
) {
    let name = projection.name();
    let lease_name = format!("projection:{name}");
    let mut backoff = Duration::from_millis(100);
    loop {
        let lease = match Lease::try_acquire(&pool, &lease_name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                // Another process is active; stand by.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(error) => {
                tracing::warn!(projection = name, error = %error, "projector cannot reach PostgreSQL");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut head = notifier.head();
        let mut last_lease_check = Instant::now();
        loop {
            match step(&pool, projection.as_ref(), &notifier, config.batch_size).await {
                Ok(applied) if applied > 0 => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(_) => {
                    let _ = tokio::time::timeout(config.poll_interval, head.changed()).await;
                }
                Err(error) => {
                    tracing::warn!(projection = name, error = %format!("{error:#}"), "projection step failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if last_lease_check.elapsed() > Duration::from_secs(5) {
                if !lease.is_held().await {
                    tracing::warn!(projection = name, "projection lease lost");
                    break;
                }
                last_lease_check = Instant::now();
            }
        }
    }
}

/// Applies one batch after the checkpoint; returns how many events it applied.
pub async fn step(
    pool: &Pool,
    projection: &dyn Projection,
    notifier: &Notifier,
    batch_size: i64,
) -> anyhow::Result<usize> {
    let name = projection.name();
    let mut client = pool.get().await.context("Failed to get a connection")?;
    let tx = client.transaction().await?;
    let checkpoint: i64 = tx
        .query_one(
            "SELECT position FROM checkpoints WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await
        .with_context(|| format!("Failed to lock the checkpoint of {name}"))?
        .try_get(0)?;
    let events = read_all_on(&tx, checkpoint, batch_size).await?;
    let Some(last) = events.last() else {
        tx.rollback().await?;
        notifier.checkpoint(name, checkpoint);
        return Ok(0);
    };
    let (last_position, last_recorded) = (last.position, last.recorded_at);
    projection
        .apply(&tx, &events)
        .await
        .with_context(|| format!("Failed to apply events to {name}"))?;
    tx.execute(
        "UPDATE checkpoints SET position = $2, updated_at = now() WHERE name = $1",
        &[&name, &last_position],
    )
    .await?;
    tx.execute(
        &format!("SELECT pg_notify('{CHECKPOINTS_CHANNEL}', $1)"),
        &[&format!("{name}:{last_position}")],
    )
    .await?;
    tx.commit().await?;
    notifier.checkpoint(name, last_position);
    let lag = chrono::Utc::now() - last_recorded;
    metrics::histogram!("keyledger_projection_lag_seconds", "projection" => name)
        .record(lag.num_microseconds().unwrap_or(0) as f64 / 1e6);
    Ok(events.len())
}
