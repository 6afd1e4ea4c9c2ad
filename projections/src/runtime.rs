//! The projector runtime: one worker per projection, active in one process at a time.
//!
//! Each step reads a batch of events after the projection's checkpoint, applies it and
//! advances the checkpoint in ONE transaction, holding the checkpoint row's lock: the effect
//! is exactly-once even if two workers ever ran at once. Workers wake on in-process commits,
//! on NOTIFY from other processes, and poll as a fallback.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::Pool;
use keyledger_events::failure::{Failure, classify, classify_pool};
use keyledger_events::lease::Lease;
use keyledger_events::notifier::CHECKPOINTS_CHANNEL;
use keyledger_events::store::{ReadError, envelope_from_row_at, park, record_failure};
use keyledger_events::{Notifier, Projection, ProjectionError};
use tokio_postgres::types::ToSql;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub batch_size: i64,
    /// Longest sleep between two looks at the log when no notification arrives.
    pub poll_interval: Duration,
    /// After a caught-up worker is woken by a commit, it waits this long before its step, so
    /// that the commits arriving meanwhile are applied in the same batch.
    pub coalesce: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            batch_size: 1000,
            poll_interval: Duration::from_millis(500),
            coalesce: Duration::from_millis(5),
        }
    }
}

const LOCK_CHECKPOINT: &str = "SELECT position FROM checkpoints WHERE name = $1 FOR UPDATE";

/// Runs after `LOCK_CHECKPOINT` in the same transaction, so it reads the locked checkpoint.
/// One statement, one snapshot: the log's head, and the events of the projection's types
/// between the checkpoint and that head. Commit order is position order, so every event up to
/// the head is visible and the checkpoint may move to the head past events of other types.
const READ_AFTER_CHECKPOINT: &str = "WITH bounds AS ( \
       SELECT (SELECT position FROM checkpoints WHERE name = $1) AS after, \
              (SELECT coalesce(max(position), 0) FROM events) AS head) \
     SELECT b.head, e.position, e.event_id, e.stream_id, e.version, e.event_type, \
            e.schema_version, e.data, e.metadata, e.recorded_at, e.hash \
     FROM bounds b LEFT JOIN LATERAL ( \
       SELECT * FROM events \
       WHERE position > b.after AND position <= b.head AND event_type = ANY($3) \
       ORDER BY position LIMIT $2) e ON true";

const UPDATE_CHECKPOINT: &str =
    "UPDATE checkpoints SET position = $2, updated_at = now() WHERE name = $1";

static NOTIFY_CHECKPOINT: LazyLock<String> =
    LazyLock::new(|| format!("SELECT pg_notify('{CHECKPOINTS_CHANNEL}', $1)"));

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

/// Runs a worker per projection until the task is dropped, which stops them all. Returns
/// as soon as one worker ends (a panic included), naming it, so the caller can restart them.
pub async fn run_until_stopped(
    pool: Pool,
    projections: Vec<Arc<dyn Projection>>,
    notifier: Notifier,
    config: RuntimeConfig,
) -> anyhow::Result<()> {
    // A JoinSet aborts its tasks when dropped: no worker outlives this future.
    let mut workers = tokio::task::JoinSet::new();
    let mut names = std::collections::HashMap::new();
    for projection in projections {
        let name = projection.name();
        let handle = workers.spawn(run_worker(
            pool.clone(),
            projection,
            notifier.clone(),
            config.clone(),
        ));
        names.insert(handle.id(), name);
    }
    let Some(ended) = workers.join_next_with_id().await else {
        return Ok(());
    };
    match ended {
        Ok((id, ())) => {
            let name = names.get(&id).copied().unwrap_or("?");
            anyhow::bail!("the worker of the projection {name} stopped")
        }
        Err(error) => {
            let name = names.get(&error.id()).copied().unwrap_or("?");
            anyhow::bail!("the worker of the projection {name} ended: {error}")
        }
    }
}

/// Attempts at one event that fails for a reason other than an outage before it is set aside.
const ATTEMPTS_BEFORE_PARKING: u32 = 3;

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
        // After a batch failed for a reason other than an outage, events are applied one at a
        // time until the one that fails is found (and, failing again, set aside).
        let mut isolating = false;
        let mut failing: Option<(i64, u32)> = None;
        loop {
            let batch_size = if isolating { 1 } else { config.batch_size };
            match step(&pool, projection.as_ref(), &notifier, batch_size).await {
                Ok(applied) => {
                    if failing.take().is_some() || isolating {
                        recovered(&pool, name).await;
                    }
                    if isolating && applied > 0 {
                        isolating = false;
                    }
                    if applied as i64 >= batch_size {
                        // A full batch: more events are probably waiting.
                        backoff = Duration::from_millis(100);
                        continue;
                    }
                    if applied > 0 {
                        backoff = Duration::from_millis(100);
                    }
                    // Caught up. Wait for the next commit (or the poll interval), then give
                    // the commits right behind it a moment to land in the same batch.
                    if let Ok(Ok(())) =
                        tokio::time::timeout(config.poll_interval, head.changed()).await
                    {
                        tokio::time::sleep(config.coalesce).await;
                    }
                }
                Err(error) => {
                    let message = format!("{:#}", error.source);
                    failed(&pool, name, &message).await;
                    match error.culprit {
                        _ if error.failure == Failure::Unavailable => {
                            tracing::warn!(projection = name, error = %message, "projection step failed: the database is unavailable; retrying");
                        }
                        Some(culprit) if culprit.batch_len == 1 || culprit.unreadable => {
                            let attempts = match failing {
                                Some((position, n)) if position == culprit.position => n + 1,
                                _ => 1,
                            };
                            tracing::error!(projection = name, position = culprit.position, attempt = attempts, error = %message, "projection cannot apply an event");
                            if attempts >= ATTEMPTS_BEFORE_PARKING {
                                match park_and_pass(&pool, name, &culprit, &message, &notifier)
                                    .await
                                {
                                    Ok(()) => {
                                        failing = None;
                                        isolating = false;
                                        continue;
                                    }
                                    Err(park_error) => {
                                        tracing::error!(projection = name, error = %format!("{park_error:#}"), "cannot set the event aside")
                                    }
                                }
                            } else {
                                failing = Some((culprit.position, attempts));
                            }
                        }
                        Some(_) if !isolating => {
                            tracing::warn!(projection = name, error = %message, "projection batch failed; applying its events one at a time to find the one that fails");
                            isolating = true;
                            continue;
                        }
                        _ => {
                            tracing::error!(projection = name, error = %message, "projection step failed; retrying");
                        }
                    }
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

/// Records a failing step where `/health` reads it (best effort: the database may be down).
async fn failed(pool: &Pool, name: &str, message: &str) {
    metrics::counter!("keyledger_projection_errors_total", "projection" => name.to_owned())
        .increment(1);
    if let Ok(client) = pool.get().await {
        let _ = record_failure(&client, name, Some(message)).await;
    }
}

async fn recovered(pool: &Pool, name: &str) {
    if let Ok(client) = pool.get().await {
        let _ = record_failure(&client, name, None).await;
    }
}

/// Sets the failing event aside and moves the checkpoint onto it, in one transaction under
/// the checkpoint's lock (a checkpoint that moved past it meanwhile is left alone).
async fn park_and_pass(
    pool: &Pool,
    name: &'static str,
    culprit: &Culprit,
    error: &str,
    notifier: &Notifier,
) -> anyhow::Result<()> {
    let mut client = pool.get().await.context("Failed to get a connection")?;
    let tx = client.transaction().await?;
    let checkpoint: i64 = tx.query_one(LOCK_CHECKPOINT, &[&name]).await?.try_get(0)?;
    if checkpoint >= culprit.position {
        return Ok(());
    }
    park(
        &tx,
        name,
        culprit.position,
        culprit.event_id,
        &culprit.event_type,
        error,
    )
    .await?;
    tx.execute(UPDATE_CHECKPOINT, &[&name, &culprit.position])
        .await?;
    // Past the event, the projection is no longer failing (what it set aside stays listed).
    record_failure(&tx, name, None).await?;
    tx.commit().await?;
    notifier.checkpoint(name, culprit.position);
    Ok(())
}

/// Why a step failed, and which event it was at.
#[derive(Debug)]
pub struct StepError {
    pub failure: Failure,
    /// The first event of the failed batch (the failing one when `batch_len` is 1), or the
    /// event that could not be read.
    pub culprit: Option<Culprit>,
    pub source: anyhow::Error,
}

#[derive(Debug, Clone)]
pub struct Culprit {
    pub position: i64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub batch_len: usize,
    /// The event's JSON cannot be parsed: no retry can help.
    pub unreadable: bool,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.source)
    }
}

impl std::error::Error for StepError {}

impl StepError {
    fn database(error: tokio_postgres::Error) -> Self {
        StepError {
            failure: classify(&error),
            culprit: None,
            source: error.into(),
        }
    }

    fn at(mut self, culprit: Option<Culprit>) -> Self {
        self.culprit = culprit;
        self
    }
}

impl From<tokio_postgres::Error> for StepError {
    fn from(error: tokio_postgres::Error) -> Self {
        StepError::database(error)
    }
}

impl From<deadpool_postgres::PoolError> for StepError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StepError {
            failure: classify_pool(&error),
            culprit: None,
            source: anyhow::Error::new(error).context("Failed to get a connection"),
        }
    }
}

/// Applies one batch after the checkpoint; returns how many events it applied.
pub async fn step(
    pool: &Pool,
    projection: &dyn Projection,
    notifier: &Notifier,
    batch_size: i64,
) -> Result<usize, StepError> {
    let name = projection.name();
    let mut client = pool.get().await?;
    // Round trip 1: BEGIN.
    let tx = client.transaction().await?;
    let (lock, read, update, notify) = futures::try_join!(
        tx.prepare_cached(LOCK_CHECKPOINT),
        tx.prepare_cached(READ_AFTER_CHECKPOINT),
        tx.prepare_cached(UPDATE_CHECKPOINT),
        tx.prepare_cached(&NOTIFY_CHECKPOINT),
    )?;
    // Round trip 2, pipelined: lock the checkpoint row, then read the events after it. The read
    // is a later statement, so its snapshot is taken once the lock is held and it sees the
    // checkpoint just locked (nobody else can move it now).
    let lock_params: [&(dyn ToSql + Sync); 1] = [&name];
    let types = projection.event_types();
    let read_params: [&(dyn ToSql + Sync); 3] = [&name, &batch_size, &types];
    let (locked, rows) = futures::join!(
        tx.query_one(&lock, &lock_params),
        tx.query(&read, &read_params)
    );
    let checkpoint: i64 = locked?.try_get(0)?;
    let rows = rows?;
    let head: i64 = match rows.first() {
        Some(row) => row.try_get(0)?,
        None => checkpoint,
    };
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<_, Option<i64>>(1)?.is_some() {
            match envelope_from_row_at(row, 1) {
                Ok(event) => events.push(event),
                Err(ReadError::Database(e)) => return Err(e.into()),
                Err(ReadError::Unreadable(unreadable)) => {
                    return Err(StepError {
                        failure: Failure::Internal,
                        culprit: Some(Culprit {
                            position: unreadable.position,
                            event_id: unreadable.event_id,
                            event_type: unreadable.event_type.clone(),
                            batch_len: 1,
                            unreadable: true,
                        }),
                        source: unreadable.into(),
                    });
                }
            }
        }
    }
    // A full batch stops at its last event; otherwise everything up to the head is done.
    let last_position = match events.last() {
        Some(last) if events.len() as i64 == batch_size => last.position,
        _ => head,
    };
    if last_position <= checkpoint {
        tx.rollback().await?;
        notifier.checkpoint(name, checkpoint);
        return Ok(0);
    }
    let last_recorded = events.last().map(|e| e.recorded_at);
    let culprit = events.first().map(|first| Culprit {
        position: first.position,
        event_id: first.event_id,
        event_type: first.event_type.clone(),
        batch_len: events.len(),
        unreadable: false,
    });
    // Round trip 3, pipelined: apply the batch, advance the checkpoint and notify, all in
    // flight together. Every result is checked before COMMIT is sent: after a failed statement
    // the transaction is aborted and is rolled back when `tx` is dropped.
    let payload = format!("{name}:{last_position}");
    let update_params: [&(dyn ToSql + Sync); 2] = [&name, &last_position];
    let notify_params: [&(dyn ToSql + Sync); 1] = [&payload];
    let (applied, updated, notified) = futures::join!(
        projection.apply(&tx, &events),
        tx.execute(&update, &update_params),
        tx.execute(&notify, &notify_params),
    );
    if let Err(error) = applied {
        let failure = match &error {
            ProjectionError::Database(e) => classify(e),
            ProjectionError::Decode(_) => Failure::Internal,
        };
        return Err(StepError {
            failure,
            culprit,
            source: anyhow::Error::new(error).context(format!("Failed to apply events to {name}")),
        });
    }
    updated.map_err(|e| StepError::database(e).at(culprit.clone()))?;
    notified.map_err(|e| StepError::database(e).at(culprit.clone()))?;
    // Round trip 4: COMMIT.
    tx.commit().await?;
    notifier.checkpoint(name, last_position);
    if let Some(last_recorded) = last_recorded {
        let lag = chrono::Utc::now() - last_recorded;
        metrics::histogram!("keyledger_projection_lag_seconds", "projection" => name)
            .record(lag.num_microseconds().unwrap_or(0) as f64 / 1e6);
    }
    Ok(events.len())
}
