//! The retention job: sessions still pending or active longer than `SESSION_RETENTION` are
//! expired through the same command path as a client's transition (event `SessionExpired`,
//! actor `system`, reason `retention`). Candidates come from the `sessions` read table; the
//! aggregate decides, so two processes running the job expire each session once (the loser
//! of the append race reloads and finds the session closed).

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use keyledger_events::session::session_stream;
use keyledger_events::{EventStore, Metadata};
use uuid::Uuid;

use super::aggregate::{Session, SessionCommand, SessionError};
use crate::execute::{CommandError, execute};

/// Sessions looked at per run.
const BATCH: i64 = 1000;

/// Expires the open sessions created at or before `now - retention`; returns how many.
pub async fn expire_due(
    store: &dyn EventStore,
    pool: &Pool,
    now: DateTime<Utc>,
    retention: Duration,
) -> anyhow::Result<usize> {
    let cutoff = now - chrono::Duration::from_std(retention).context("Retention is too long")?;
    let client = pool.get().await.context("Failed to get a connection")?;
    let candidates: Vec<Uuid> = client
        .query(
            "SELECT session_id FROM sessions \
             WHERE status IN ('pending', 'active') AND created_at <= $1 \
             ORDER BY created_at LIMIT $2",
            &[&cutoff, &BATCH],
        )
        .await
        .context("Failed to find sessions past retention")?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    drop(client);
    let run = format!("retention-{}", Uuid::new_v4());
    let metadata = Metadata {
        correlation_id: Some(run.clone()),
        // The job run caused it.
        causation_id: Some(run),
        actor: Some("system".into()),
        idempotency_key: None,
    };
    let mut expired = 0;
    for session_id in candidates {
        let command = SessionCommand::ExpireForRetention {
            created_before: cutoff,
            at: keyledger_events::chain::to_micros(now),
        };
        match execute::<Session>(
            store,
            &session_stream(session_id),
            &command,
            &metadata,
            &|_, _| None,
        )
        .await
        {
            Ok(_) => expired += 1,
            // Closed meanwhile, or by another process running the job.
            Err(CommandError::Domain(SessionError::NotDue | SessionError::NotFound))
            | Err(CommandError::Conflict(_)) => {}
            Err(CommandError::Domain(other)) => {
                tracing::warn!(session.id = %session_id, error = ?other, "retention refused");
            }
            Err(CommandError::Store(error)) => {
                return Err(anyhow::anyhow!(error)).context("Failed to expire a session");
            }
        }
    }
    Ok(expired)
}
