//! Replay: the run's log read, and replayed into each asynchronous projection.

use std::time::{Duration, Instant};

use anyhow::Context;

/// The run's log replayed after the phases.
pub(super) struct ReplayResult {
    /// Events in the log.
    pub(super) events: i64,
    /// Reading and decoding the whole log in the rebuild's batches, applying nothing.
    pub(super) read: Duration,
    /// Each asynchronous projection's rebuild from position 0.
    pub(super) rebuilds: Vec<(&'static str, Duration)>,
}

impl ReplayResult {
    pub(super) fn total(&self) -> Duration {
        self.rebuilds.iter().map(|(_, took)| *took).sum()
    }

    pub(super) fn per_second(&self, took: Duration) -> f64 {
        let seconds = took.as_secs_f64();
        if seconds > 0.0 {
            self.events as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Times a plain read of the log, then a rebuild of each asynchronous projection from position
/// 0 as `keyledger projections rebuild` does it, on a connection of its own (the service is
/// idle by then).
pub(super) async fn measure_replay(database_url: &str) -> anyhow::Result<ReplayResult> {
    let pool = keyledger_events::db::pool(database_url, 1)?;
    let read = {
        let client = pool
            .get()
            .await
            .context("Failed to connect to replay the log")?;
        let started = Instant::now();
        read_log(&client).await?;
        started.elapsed()
    };
    let events: i64 = pool
        .get()
        .await
        .context("Failed to connect to replay the log")?
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .context("Failed to count the events")?
        .try_get(0)?;
    let notifier = keyledger_events::Notifier::default();
    let mut rebuilds = Vec::new();
    for projection in keyledger_projections::asynchronous() {
        let started = Instant::now();
        keyledger_projections::rebuild::rebuild(&pool, projection.as_ref(), false, &notifier)
            .await
            .with_context(|| format!("Failed to rebuild {}", projection.name()))?;
        rebuilds.push((projection.name(), started.elapsed()));
    }
    Ok(ReplayResult {
        events,
        read,
        rebuilds,
    })
}

/// Reads the whole log in the rebuild's batches, decoding each event.
pub(super) async fn read_log(client: &impl deadpool_postgres::GenericClient) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let (events, unreadable) = keyledger_events::store::read_all_until_unreadable(
            client,
            after,
            keyledger_projections::rebuild::BATCH,
        )
        .await
        .context("Failed to read the log")?;
        after = match (events.last(), unreadable) {
            (Some(last), _) => last.position,
            (None, Some(unreadable)) => unreadable.position,
            (None, None) => return Ok(()),
        };
    }
}
