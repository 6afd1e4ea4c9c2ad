//! Projection lag: how long a commit waits for every asynchronous projection while a phase
//! runs.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::{Client, Config};

use super::pgbench::connect;

/// How often the head of the log is sampled during a phase.
pub(super) const LAG_SAMPLE_INTERVAL: Duration = Duration::from_millis(20);
/// How often the checkpoints are read while a sample waits for them.
pub(super) const CHECKPOINT_POLL_INTERVAL: Duration = Duration::from_millis(2);
/// How long after its phase a sample may still wait for the checkpoints.
pub(super) const LAG_GRACE: Duration = Duration::from_secs(5);

/// The lowest checkpoint of the projections named in `$1`: 0 while one of them has none.
pub(super) const LOWEST_CHECKPOINT: &str = "SELECT CASE WHEN count(*) = cardinality($1::text[]) \
     THEN coalesce(min(position), 0) ELSE 0 END FROM checkpoints WHERE name = ANY($1)";

/// Where the lag is measured: the service's database and its asynchronous projections.
pub(super) struct LagProbe {
    pub(super) config: Config,
    pub(super) names: Vec<String>,
}

/// The head of the log as one sample read it.
pub(super) struct HeadSample {
    /// When the read was sent.
    pub(super) at: Instant,
    pub(super) head: i64,
    /// The head minus the lowest checkpoint, in the same snapshot.
    pub(super) behind: i64,
}

/// The projection lag during one phase.
#[derive(Default)]
pub(super) struct LagResult {
    /// For each sample, the time until every asynchronous projection's checkpoint reached its
    /// head; sorted.
    pub(super) lags: Vec<Duration>,
    /// Samples not caught up with `LAG_GRACE` after the phase (in `lags` at the time waited).
    pub(super) late: u64,
    /// The most events between the head and the lowest checkpoint in one sample.
    pub(super) max_behind: i64,
}

/// Sampling in progress; dropping it stops the sampling.
pub(super) struct LagSampler {
    pub(super) stop: tokio::sync::watch::Sender<bool>,
    pub(super) done: tokio::sync::oneshot::Receiver<anyhow::Result<LagResult>>,
}

impl LagProbe {
    pub(super) fn new(config: &Config) -> LagProbe {
        LagProbe {
            config: config.clone(),
            names: keyledger_projections::asynchronous()
                .iter()
                .map(|projection| projection.name().to_owned())
                .collect(),
        }
    }

    /// Starts sampling on a thread and a runtime of its own, so that its reads do not queue
    /// behind the tasks of the service and of the clients, which would add to the lag measured.
    pub(super) fn start(&self) -> anyhow::Result<LagSampler> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (report, done) = tokio::sync::oneshot::channel();
        let config = self.config.clone();
        let names = self.names.clone();
        std::thread::Builder::new()
            .name("bench-lag".to_owned())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("Failed to start the lag sampler's runtime")
                    .and_then(|runtime| runtime.block_on(sample_lag(config, names, stopped)));
                let _ = report.send(result);
            })
            .context("Failed to start the lag sampler's thread")?;
        Ok(LagSampler { stop, done })
    }
}

impl LagSampler {
    /// Stops sampling and waits for the samples taken to be caught up with (or given up on).
    pub(super) async fn finish(self) -> anyhow::Result<LagResult> {
        let _ = self.stop.send(true);
        self.done
            .await
            .context("the lag sampler's thread ended without a result")?
    }
}

/// Runs `phase`; with a probe, samples the projection lag meanwhile.
pub(super) async fn with_lag<T>(
    probe: Option<&LagProbe>,
    phase: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Option<LagResult>)> {
    let Some(probe) = probe else {
        return Ok((phase.await?, None));
    };
    let sampler = probe.start()?;
    let result = phase.await?;
    let lag = sampler.finish().await?;
    Ok((result, Some(lag)))
}

/// Samples the lag until told to stop, on two connections of its own (outside the service's
/// pool): one reads the head, the other watches the checkpoints.
pub(super) async fn sample_lag(
    config: Config,
    names: Vec<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<LagResult> {
    let (heads, _) = connect(&config)
        .await
        .context("Failed to connect the head sampler")?;
    let (checkpoints, _) = connect(&config)
        .await
        .context("Failed to connect the checkpoint watcher")?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let ((), lag) = futures::try_join!(
        sample_heads(heads, &names, stop, sender),
        watch_checkpoints(checkpoints, &names, receiver),
    )?;
    Ok(lag)
}

/// Reads the head and the lowest checkpoint every `LAG_SAMPLE_INTERVAL` until told to stop.
pub(super) async fn sample_heads(
    client: Client,
    names: &[String],
    mut stop: tokio::sync::watch::Receiver<bool>,
    samples: tokio::sync::mpsc::UnboundedSender<HeadSample>,
) -> anyhow::Result<()> {
    let statement = client
        .prepare(&format!(
            "SELECT (SELECT coalesce(max(position), 0) FROM events), ({LOWEST_CHECKPOINT})"
        ))
        .await
        .context("Failed to prepare the head sample")?;
    let mut ticks = tokio::time::interval(LAG_SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => break,
        }
        let at = Instant::now();
        let row = client
            .query_one(&statement, &[&names])
            .await
            .context("Failed to sample the head of the log")?;
        let (head, lowest): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let sample = HeadSample {
            at,
            head,
            behind: head - lowest,
        };
        if samples.send(sample).is_err() {
            break;
        }
    }
    Ok(())
}

/// Reads the lowest checkpoint every `CHECKPOINT_POLL_INTERVAL` while samples wait for it; a
/// sample's lag ends at the first read that shows every checkpoint at or past its head.
pub(super) async fn watch_checkpoints(
    client: Client,
    names: &[String],
    mut samples: tokio::sync::mpsc::UnboundedReceiver<HeadSample>,
) -> anyhow::Result<LagResult> {
    use tokio::sync::mpsc::error::TryRecvError;

    let statement = client
        .prepare(LOWEST_CHECKPOINT)
        .await
        .context("Failed to prepare the checkpoint read")?;
    let mut result = LagResult::default();
    let mut pending: Vec<HeadSample> = Vec::new();
    let mut give_up_at: Option<Instant> = None;
    let mut ticks = tokio::time::interval(CHECKPOINT_POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // Only samples taken before this read are judged by it.
        loop {
            match samples.try_recv() {
                Ok(sample) => {
                    result.max_behind = result.max_behind.max(sample.behind);
                    pending.push(sample);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    give_up_at.get_or_insert_with(|| Instant::now() + LAG_GRACE);
                    break;
                }
            }
        }
        if let Some(deadline) = give_up_at {
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                result.late = pending.len() as u64;
                result
                    .lags
                    .extend(pending.drain(..).map(|sample| sample.at.elapsed()));
                break;
            }
        }
        if pending.is_empty() {
            continue;
        }
        let lowest: i64 = client
            .query_one(&statement, &[&names])
            .await
            .context("Failed to read the checkpoints")?
            .try_get(0)?;
        let seen = Instant::now();
        pending.retain(|sample| {
            let caught_up = sample.head <= lowest;
            if caught_up {
                result.lags.push(seen.saturating_duration_since(sample.at));
            }
            !caught_up
        });
    }
    result.lags.sort_unstable();
    Ok(result)
}
