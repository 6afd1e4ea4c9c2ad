//! Supervision of the background workers: a worker that stops or panics is logged and
//! restarted with backoff, its state is kept in a registry `/health` reads, and a worker that
//! keeps failing stops the process with an error.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Wait before the first restart; doubled after each failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// This many failures of one worker within `window` stop the process.
    pub max_failures: usize,
    /// The window failures are counted in; a worker that failed within it is degraded.
    pub window: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_failures: 5,
            window: Duration::from_secs(300),
        }
    }
}

/// What `/health` shows of one worker.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkerReport {
    pub name: String,
    /// `up`, `degraded` (running again after a recent failure), `restarting` or `failed`.
    #[schema(value_type = String, example = "up")]
    pub status: &'static str,
    pub restarts: u64,
    pub last_failure: Option<String>,
    pub last_failure_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Restarting,
    Failed,
}

#[derive(Debug)]
struct WorkerState {
    phase: Phase,
    restarts: u64,
    last_failure: Option<(String, DateTime<Utc>, Instant)>,
}

struct Inner {
    config: SupervisorConfig,
    workers: Mutex<BTreeMap<&'static str, WorkerState>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    fatal: mpsc::UnboundedSender<anyhow::Error>,
    fatal_receiver: tokio::sync::Mutex<mpsc::UnboundedReceiver<anyhow::Error>>,
}

/// The registry of supervised workers; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

/// Counts the failures of one worker within the window.
#[derive(Debug)]
pub struct FailureWindow {
    window: Duration,
    max_failures: usize,
    failures: VecDeque<Instant>,
}

impl FailureWindow {
    pub fn new(window: Duration, max_failures: usize) -> FailureWindow {
        FailureWindow {
            window,
            max_failures: max_failures.max(1),
            failures: VecDeque::new(),
        }
    }

    /// Records a failure at `at`; true when the worker must not be restarted any more.
    pub fn record(&mut self, at: Instant) -> bool {
        self.failures.push_back(at);
        while let Some(first) = self.failures.front() {
            if at.saturating_duration_since(*first) > self.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        self.failures.len() >= self.max_failures
    }

    /// Failures within the window before `at`.
    pub fn recent(&self) -> usize {
        self.failures.len()
    }
}

impl Supervisor {
    pub fn new(config: SupervisorConfig) -> Supervisor {
        let (fatal, fatal_receiver) = mpsc::unbounded_channel();
        Supervisor {
            inner: Arc::new(Inner {
                config,
                workers: Mutex::new(BTreeMap::new()),
                tasks: Mutex::new(Vec::new()),
                fatal,
                fatal_receiver: tokio::sync::Mutex::new(fatal_receiver),
            }),
        }
    }

    fn workers(&self) -> MutexGuard<'_, BTreeMap<&'static str, WorkerState>> {
        // A poisoned registry still holds the last states written; keep reading them.
        self.inner
            .workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `start()` as the worker `name`, and again after it stops, errs or panics.
    pub fn spawn<F, Fut>(&self, name: &'static str, start: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.workers().insert(
            name,
            WorkerState {
                phase: Phase::Running,
                restarts: 0,
                last_failure: None,
            },
        );
        let supervisor = self.clone();
        let task = tokio::spawn(async move { supervisor.supervise(name, start).await });
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(task);
    }

    /// Like `spawn`, for workers meant to run until the process stops.
    pub fn spawn_forever<F, Fut>(&self, name: &'static str, start: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, move || {
            let run = start();
            async move {
                run.await;
                anyhow::bail!("returned although it should run until the process stops")
            }
        });
    }

    async fn supervise<F, Fut>(&self, name: &'static str, start: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let config = &self.inner.config;
        let mut failures = FailureWindow::new(config.window, config.max_failures);
        let mut backoff = config.min_backoff;
        loop {
            let started = Instant::now();
            let run = AbortOnDrop(tokio::spawn(start()));
            let reason = match run.wait().await {
                Ok(Ok(())) => "stopped".to_owned(),
                Ok(Err(error)) => format!("stopped with an error: {error:#}"),
                Err(join) if join.is_panic() => {
                    format!("panicked: {}", panic_message(join.into_panic()))
                }
                Err(join) => format!("was cancelled: {join}"),
            };
            let now = Instant::now();
            // A worker that ran well for a while starts again from the shortest backoff.
            if now.saturating_duration_since(started) > config.window {
                backoff = config.min_backoff;
            }
            let give_up = failures.record(now);
            {
                let mut workers = self.workers();
                if let Some(state) = workers.get_mut(name) {
                    state.phase = if give_up {
                        Phase::Failed
                    } else {
                        Phase::Restarting
                    };
                    state.last_failure = Some((reason.clone(), Utc::now(), now));
                }
            }
            metrics::counter!("keyledger_worker_failures_total", "worker" => name).increment(1);
            if give_up {
                tracing::error!(
                    worker = name,
                    reason = %reason,
                    failures = failures.recent(),
                    window_seconds = config.window.as_secs(),
                    "worker keeps failing; giving up and stopping the process"
                );
                let _ = self.inner.fatal.send(anyhow::anyhow!(
                    "the worker `{name}` failed {} times within {:?} and was not restarted; last: {reason}",
                    failures.recent(),
                    config.window
                ));
                return;
            }
            tracing::error!(
                worker = name,
                reason = %reason,
                restart_in_ms = backoff.as_millis() as u64,
                "worker stopped; restarting it"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.max_backoff);
            let mut workers = self.workers();
            if let Some(state) = workers.get_mut(name) {
                state.phase = Phase::Running;
                state.restarts += 1;
            }
        }
    }

    /// Every worker's state, by name.
    pub fn report(&self) -> Vec<WorkerReport> {
        let window = self.inner.config.window;
        let now = Instant::now();
        self.workers()
            .iter()
            .map(|(name, state)| {
                let recent = state
                    .last_failure
                    .as_ref()
                    .is_some_and(|(_, _, at)| now.saturating_duration_since(*at) <= window);
                let status = match state.phase {
                    Phase::Failed => "failed",
                    Phase::Restarting => "restarting",
                    Phase::Running if recent => "degraded",
                    Phase::Running => "up",
                };
                WorkerReport {
                    name: (*name).to_owned(),
                    status,
                    restarts: state.restarts,
                    last_failure: state.last_failure.as_ref().map(|(r, _, _)| r.clone()),
                    last_failure_at: state.last_failure.as_ref().map(|(_, at, _)| *at),
                }
            })
            .collect()
    }

    /// Waits until a worker is given up on; its error says which and why.
    pub async fn gave_up(&self) -> anyhow::Error {
        match self.inner.fatal_receiver.lock().await.recv().await {
            Some(error) => error,
            // The sender lives in `self`: this cannot end while `self` exists.
            None => std::future::pending().await,
        }
    }

    /// Stops every worker.
    pub fn stop_all(&self) {
        for task in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

/// A task that is aborted when its handle is dropped (so a stopped supervisor leaves no
/// worker behind).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn wait(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_spread_wider_than_the_window_never_give_up() {
        let start = Instant::now();
        let mut window = FailureWindow::new(Duration::from_secs(10), 3);
        for i in 0..20 {
            assert!(!window.record(start + Duration::from_secs(6 * i)));
        }
    }

    #[test]
    fn the_nth_failure_within_the_window_gives_up() {
        let start = Instant::now();
        let mut window = FailureWindow::new(Duration::from_secs(10), 3);
        assert!(!window.record(start));
        assert!(!window.record(start + Duration::from_secs(1)));
        assert!(window.record(start + Duration::from_secs(2)));
    }
}
