//! The background jobs, all of one shape: a name, an interval and one pass (an async function
//! that returns how many things it changed, or fails). [`Job::run`] is the one loop: a pass, a
//! log line if it changed something or failed, a sleep. Each job runs under the supervisor
//! under its name, so `/health` lists it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use keyledger_api::rate_limit::RateLimits;
use keyledger_command::Clock;
use keyledger_command::audit::{AuditKey, SIGNER_LEASE};
use keyledger_events::EventStore;
use keyledger_events::lease::Lease;

use crate::supervise::Supervisor;

type Pass =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<u64>> + Send>> + Send + Sync>;

/// A job: `pass` every `every`; a pass that changed something is logged as `did`.
#[derive(Clone)]
pub struct Job {
    pub name: &'static str,
    pub every: Duration,
    pub did: &'static str,
    pass: Pass,
}

impl Job {
    pub fn new<F, Fut>(name: &'static str, every: Duration, did: &'static str, pass: F) -> Job
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
    {
        Job {
            name,
            every,
            did,
            pass: Arc::new(move || Box::pin(pass())),
        }
    }

    /// Runs a pass, logs what it did, sleeps; for as long as the task runs.
    pub async fn run(self) {
        loop {
            match (self.pass)().await {
                Ok(0) => {}
                Ok(count) => tracing::info!(job = self.name, count, "{}", self.did),
                Err(error) => {
                    tracing::warn!(job = self.name, error = %format!("{error:#}"), "job failed")
                }
            }
            tokio::time::sleep(self.every).await;
        }
    }

    /// Runs the job under `supervisor`, restarted should it ever stop.
    pub fn spawn(self, supervisor: &Supervisor) {
        supervisor.spawn_forever(self.name, move || self.clone().run());
    }
}

/// Deletes expired idempotency keys.
pub fn idempotency_purge(pool: Pool, every: Duration) -> Job {
    Job::new(
        "idempotency purge",
        every,
        "purged expired idempotency keys",
        move || {
            let pool = pool.clone();
            async move { keyledger_command::idempotency::purge_expired(&pool).await }
        },
    )
}

/// Expires the sessions open longer than `retention`.
pub fn session_retention(
    store: Arc<dyn EventStore>,
    pool: Pool,
    clock: Clock,
    retention: Duration,
    every: Duration,
) -> Job {
    Job::new(
        "session retention",
        every,
        "expired sessions past retention",
        move || {
            let (store, pool, now) = (store.clone(), pool.clone(), clock());
            async move {
                keyledger_command::session::expiry::expire_due(
                    store.as_ref(),
                    &pool,
                    now,
                    retention,
                )
                .await
                .map(|expired| expired as u64)
            }
        },
    )
}

/// Deactivates the installations without a heartbeat for `ttl`.
pub fn heartbeat_timeouts(
    store: Arc<dyn EventStore>,
    pool: Pool,
    clock: Clock,
    ttl: Duration,
    every: Duration,
) -> Job {
    Job::new(
        "heartbeat timeouts",
        every,
        "deactivated installations without heartbeats",
        move || {
            let (store, pool, now) = (store.clone(), pool.clone(), clock());
            async move {
                keyledger_command::license::installations::deactivate_dead(
                    store.as_ref(),
                    &pool,
                    now,
                    ttl,
                )
                .await
                .map(|freed| freed as u64)
            }
        },
    )
}

/// Deletes the request viewer's records older than `retention`, every hour.
pub fn request_log_retention(pool: Pool, retention: Duration) -> Job {
    Job::new(
        "request log retention",
        Duration::from_secs(3600),
        "pruned request records past retention",
        move || {
            let pool = pool.clone();
            async move {
                let cutoff = chrono::Utc::now()
                    - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(30));
                keyledger_projections::request::prune(&pool, cutoff).await
            }
        },
    )
}

/// Forgets the rate limiters' keys whose budget is full again; the gauge
/// `keyledger_rate_limit_keys` says how many are left (a pass logs nothing).
pub fn rate_limit_pruning(limits: RateLimits, every: Duration) -> Job {
    Job::new("rate limit pruning", every, "", move || {
        let limits = limits.clone();
        async move {
            limits.prune();
            metrics::gauge!("keyledger_rate_limit_keys").set(limits.keys() as f64);
            Ok(0)
        }
    })
}

/// Signs the log's head if it moved, on the node holding the signer's lease; a node without
/// it tries to take it instead (and signs from the next pass on).
pub fn checkpoint_signer(
    store: Arc<dyn EventStore>,
    pool: Pool,
    audit: Arc<AuditKey>,
    every: Duration,
) -> Job {
    let lease: Arc<tokio::sync::Mutex<Option<Lease>>> = Arc::default();
    Job::new(
        "checkpoint signer",
        every,
        "signed a checkpoint",
        move || {
            let (store, pool, audit, lease) =
                (store.clone(), pool.clone(), audit.clone(), lease.clone());
            async move {
                let mut lease = lease.lock().await;
                if let Some(held) = lease.take() {
                    if held.is_held().await {
                        *lease = Some(held);
                        let signed =
                            keyledger_command::audit::sign_if_moved(store.as_ref(), &pool, &audit)
                                .await?;
                        return Ok(u64::from(signed.is_some()));
                    }
                    tracing::warn!("checkpoint signer lease lost");
                }
                *lease = Lease::try_acquire(&pool, SIGNER_LEASE).await?;
                Ok(0)
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_job_runs_a_pass_at_once_then_once_an_interval_whatever_the_last_did() {
        let passes = Arc::new(AtomicU64::new(0));
        let counted = passes.clone();
        let job = Job::new("test job", Duration::from_secs(10), "did", move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match n % 3 {
                    0 => Ok(0),
                    1 => Ok(n),
                    _ => anyhow::bail!("pass {n} failed"),
                }
            }
        });
        let running = tokio::spawn(job.run());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 4);
        assert!(!running.is_finished(), "a failed pass does not end the job");
        running.abort();
    }
}
