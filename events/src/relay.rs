//! The relay: publishes the log to NATS JetStream in position order.
//!
//! Each event goes to `<prefix>.<category>.<EventType>` with `Nats-Msg-Id` = event id. The
//! relay waits for every PubAck of a batch before it advances its checkpoint, so a crash
//! anywhere re-publishes from the checkpoint and JetStream's duplicate window drops the
//! repeats. The log stays the source of truth: with NATS down, commands go on and the relay
//! catches up when it comes back.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use deadpool_postgres::Pool;
use tokio::sync::watch;

use crate::audit::AuditEvent;
use crate::envelope::Envelope;
use crate::lease::Lease;
use crate::notifier::Notifier;
use crate::store::{park, read_all_until_unreadable};

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// JetStream stream name, created if missing.
    pub stream: String,
    /// Subject prefix; events go to `<prefix>.<category>.<EventType>`.
    pub subject_prefix: String,
    pub batch_size: i64,
    /// How long JetStream remembers message ids to drop repeats.
    pub duplicate_window: Duration,
    /// Core NATS subject (outside the stream) where the log's head `{position, hash}` is
    /// published, so auditors can keep copies for `keyledger verify --expect-head`.
    pub head_subject: String,
    /// Least time between two head publications.
    pub head_interval: Duration,
    /// Subject of the signed checkpoints (`CheckpointSigned` events, as
    /// `GET /v1/checkpoints/latest` shows them), kept in the stream `<stream>_CHECKPOINTS`.
    pub checkpoint_subject: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            stream: "KEYLEDGER_EVENTS".into(),
            subject_prefix: "keyledger.events".into(),
            head_subject: "keyledger.head".into(),
            head_interval: Duration::from_secs(10),
            checkpoint_subject: "keyledger.checkpoints".into(),
            batch_size: 500,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl RelayConfig {
    /// The JetStream stream that keeps the signed checkpoints.
    pub fn checkpoint_stream(&self) -> String {
        format!("{}_CHECKPOINTS", self.stream)
    }

    pub fn checkpoint_name(&self) -> String {
        format!("relay:{}", self.stream)
    }

    pub fn subject(&self, event: &Envelope) -> String {
        format!(
            "{}.{}.{}",
            self.subject_prefix,
            event.category(),
            event.event_type
        )
    }
}

/// Creates the stream if it is missing.
pub async fn ensure_stream(
    context: &jetstream::Context,
    config: &RelayConfig,
) -> anyhow::Result<()> {
    context
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            duplicate_window: config.duplicate_window,
            ..Default::default()
        })
        .await
        .with_context(|| format!("Failed to create the JetStream stream {}", config.stream))?;
    let checkpoints = config.checkpoint_stream();
    context
        .get_or_create_stream(stream::Config {
            name: checkpoints.clone(),
            subjects: vec![config.checkpoint_subject.clone()],
            duplicate_window: config.duplicate_window,
            ..Default::default()
        })
        .await
        .with_context(|| format!("Failed to create the JetStream stream {checkpoints}"))?;
    Ok(())
}

/// Runs the relay until the task is dropped: takes the relay lease, then publishes.
pub async fn run_until_stopped(
    pool: Pool,
    client: async_nats::Client,
    config: RelayConfig,
    notifier: Notifier,
) {
    let context = jetstream::new(client);
    let name = config.checkpoint_name();
    let mut backoff = Duration::from_millis(100);
    loop {
        let lease = match Lease::try_acquire(&pool, &name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(error) => {
                tracing::warn!(error = %error, "relay cannot reach PostgreSQL; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        match publish_while_leased(&pool, &context, &config, &notifier, &lease).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "relay stopped publishing; retrying from its checkpoint");
                drop(lease);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn publish_while_leased(
    pool: &Pool,
    context: &jetstream::Context,
    config: &RelayConfig,
    notifier: &Notifier,
    lease: &Lease,
) -> anyhow::Result<()> {
    ensure_stream(context, config).await?;
    let name = config.checkpoint_name();
    let mut head: watch::Receiver<i64> = notifier.head();
    // Pooled connections are taken for each read and returned before any wait: the relay never
    // pins one while idle or while JetStream acknowledges.
    let client = pool.get().await.context("Failed to get a connection")?;
    client
        .execute(
            "INSERT INTO checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&name],
        )
        .await
        .context("Failed to create the relay checkpoint")?;
    let mut checkpoint: i64 = client
        .query_one("SELECT position FROM checkpoints WHERE name = $1", &[&name])
        .await
        .context("Failed to read the relay checkpoint")?
        .try_get(0)?;
    drop(client);
    let mut last_head: Option<std::time::Instant> = None;
    loop {
        let (events, unreadable) = {
            let client = pool.get().await.context("Failed to get a connection")?;
            read_all_until_unreadable(&client, checkpoint, config.batch_size)
                .await
                .context("Failed to read the log")?
        };
        if events.is_empty()
            && let Some(unreadable) = unreadable
        {
            // An event whose JSON does not parse (written around the service): set it aside
            // and go on, so that it cannot stop publication for good.
            let client = pool.get().await.context("Failed to get a connection")?;
            park(
                &client,
                &name,
                unreadable.position,
                unreadable.event_id,
                &unreadable.event_type,
                &unreadable.reason,
            )
            .await
            .context("Failed to set an unreadable event aside")?;
            advance(&client, &name, unreadable.position).await?;
            checkpoint = unreadable.position;
            notifier.checkpoint(&name, checkpoint);
            continue;
        }
        if events.is_empty() {
            // Idle: wait for a commit, and check the lease now and then.
            let _ = tokio::time::timeout(Duration::from_secs(1), head.changed()).await;
            if !lease.is_held().await {
                anyhow::bail!("the relay lease was lost");
            }
            continue;
        }
        let mut acks = Vec::with_capacity(events.len());
        for event in &events {
            let payload = serde_json::to_vec(event).context("Failed to encode an event")?;
            let ack = context
                .publish_with_headers(config.subject(event), headers(event), payload.into())
                .await
                .context("Failed to publish to JetStream")?;
            acks.push(ack);
            if event.event_type == crate::event_type!(AuditEvent::CheckpointSigned) {
                let mut checkpoint = event.data.clone();
                if let Some(fields) = checkpoint.as_object_mut() {
                    fields.insert("event_position".into(), event.position.into());
                }
                let ack = context
                    .publish_with_headers(
                        config.checkpoint_subject.clone(),
                        headers(event),
                        checkpoint.to_string().into(),
                    )
                    .await
                    .context("Failed to publish a checkpoint to JetStream")?;
                acks.push(ack);
            }
        }
        for ack in acks {
            ack.await
                .context("JetStream did not acknowledge an event")?;
        }
        let last = events.last().map_or(checkpoint, |e| e.position);
        let client = pool.get().await.context("Failed to get a connection")?;
        advance(&client, &name, last).await?;
        checkpoint = last;
        notifier.checkpoint(&name, last);
        metrics::counter!("keyledger_relay_published_total").increment(events.len() as u64);
        if let Some(head) = events.last()
            && last_head.is_none_or(|at: std::time::Instant| at.elapsed() >= config.head_interval)
        {
            let payload = serde_json::json!({
                "stream": config.stream,
                "position": head.position,
                "hash": hex::encode(&head.hash),
                "expect_head": format!("{}:{}", head.position, hex::encode(&head.hash)),
            });
            match context
                .client()
                .publish(config.head_subject.clone(), payload.to_string().into())
                .await
            {
                Ok(()) => last_head = Some(std::time::Instant::now()),
                Err(error) => tracing::warn!(error = %error, "could not publish the log's head"),
            }
        }
    }
}

/// Moves the relay's checkpoint forward to `position` (never back).
async fn advance(
    client: &deadpool_postgres::Object,
    name: &str,
    position: i64,
) -> anyhow::Result<()> {
    client
        .execute(
            "UPDATE checkpoints SET position = $2, updated_at = now() \
             WHERE name = $1 AND position < $2",
            &[&name, &position],
        )
        .await
        .context("Failed to advance the relay checkpoint")?;
    Ok(())
}

fn headers(event: &Envelope) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", event.event_id.to_string().as_str());
    headers.insert("Keyledger-Stream-Id", event.stream_id.as_str());
    headers.insert("Keyledger-Version", event.version.to_string().as_str());
    headers.insert("Keyledger-Position", event.position.to_string().as_str());
    if let Some(correlation) = event.correlation_id() {
        headers.insert("Keyledger-Correlation-Id", correlation);
    }
    if let Some(causation) = event.causation_id() {
        headers.insert("Keyledger-Causation-Id", causation);
    }
    headers
}
