//! The event store: the `EventStore` trait and its PostgreSQL implementation.
//!
//! Reads go straight to the pool. Appends go through one writer task per process (see
//! `writer.rs`), which commits the appends of concurrent commands together.

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;

use crate::envelope::{Envelope, ExpectedVersion, Metadata, NewEvent};
use crate::notifier::Notifier;
use crate::projection::Projection;
use crate::writer;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum StoreError {
    /// The stream moved on since the command loaded it.
    #[error("stream {stream_id} is at version {actual}, the append expected {expected:?}")]
    Conflict {
        stream_id: String,
        expected: ExpectedVersion,
        actual: i64,
    },
    /// An event with this id is already in the log (a repeated deterministic append).
    #[error("event {0} is already in the log")]
    DuplicateEvent(uuid::Uuid),
    /// The request's idempotency claim was taken over (it outlived its lock); nothing appended.
    #[error("the idempotency claim of this request was taken over by another request")]
    IdempotencyClaimLost,
    /// The database could not be reached or refused the statement.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    pub(crate) fn db(context: &str, error: impl std::fmt::Display) -> Self {
        StoreError::Unavailable(format!("{context}: {error}"))
    }
}

/// One command's append: events for one stream, with the version the command decided on.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub metadata: Metadata,
    /// Completes the request's Idempotency-Key record in the append transaction.
    pub idempotency: Option<IdempotencyCompletion>,
}

/// A response as stored for an Idempotency-Key, replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Renders the response of an append from where it landed (deterministic: the handler renders
/// it again for its own reply).
pub type RenderResponse = Arc<dyn Fn(&AppendOutcome) -> StoredResponse + Send + Sync>;

/// The claimed Idempotency-Key record a command completes when its events commit.
#[derive(Clone)]
pub struct IdempotencyCompletion {
    pub scope: String,
    pub key: String,
    /// The claim of the request running the command.
    pub token: uuid::Uuid,
    pub render: RenderResponse,
}

impl std::fmt::Debug for IdempotencyCompletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyCompletion")
            .field("scope", &self.scope)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Where an accepted append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Position of the append's last event: pass it as `X-Consistency-Position`.
    pub position: i64,
    /// The stream's version after the append.
    pub version: i64,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends atomically; answers once the events are committed.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// The stream's events with `version > after_version`, oldest first.
    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<Envelope>, StoreError>;

    /// The `$all` stream: events with `position > after`, in position (= commit) order.
    async fn read_all(&self, after: i64, limit: i64) -> Result<Vec<Envelope>, StoreError>;

    /// The position of the last committed event (0 for an empty log).
    async fn head(&self) -> Result<i64, StoreError>;
}

/// Tuning of the group-commit writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// At most this many events go into one transaction.
    pub max_batch_events: usize,
    /// Appends waiting for the writer; callers wait for room beyond it.
    pub queue_capacity: usize,
    /// `lock_timeout` of the writer's transactions.
    pub lock_timeout_ms: u64,
    /// Batches in flight at once, each on its own connection. With 2, the next batch has
    /// begun and is queued on the append lock while the current one commits, so the lock is
    /// taken again as soon as it is released. Commit order still equals position order: every
    /// batch reads the head under the lock.
    pub concurrent_batches: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch_events: 1000,
            queue_capacity: 10_000,
            lock_timeout_ms: 5_000,
            concurrent_batches: 2,
        }
    }
}

pub(crate) struct Pending {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

#[derive(Clone)]
pub struct PgEventStore {
    pool: Pool,
    appends: mpsc::Sender<Pending>,
}

impl PgEventStore {
    /// Starts the writer task. `inline` projections are applied inside every append transaction.
    pub fn start(
        pool: Pool,
        config: WriterConfig,
        inline: Vec<Arc<dyn Projection>>,
        notifier: Notifier,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (appends, queue) = mpsc::channel(config.queue_capacity);
        let task = tokio::spawn(writer::run(pool.clone(), config, inline, notifier, queue));
        (PgEventStore { pool, appends }, task)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::db("no database connection", e))
    }
}

pub const SELECT_ENVELOPE: &str = "SELECT position, event_id, stream_id, version, \
    event_type, schema_version, data, metadata, recorded_at, hash FROM events";

pub fn envelope_from_row(row: &Row) -> Result<Envelope, tokio_postgres::Error> {
    envelope_from_row_at(row, 0)
}

/// An envelope whose columns (in `SELECT_ENVELOPE` order) start at column `at`.
pub fn envelope_from_row_at(row: &Row, at: usize) -> Result<Envelope, tokio_postgres::Error> {
    Ok(Envelope {
        position: row.try_get(at)?,
        event_id: row.try_get(at + 1)?,
        stream_id: row.try_get(at + 2)?,
        version: row.try_get(at + 3)?,
        event_type: row.try_get(at + 4)?,
        schema_version: row.try_get(at + 5)?,
        data: row.try_get(at + 6)?,
        metadata: row.try_get(at + 7)?,
        recorded_at: row.try_get(at + 8)?,
        hash: row.try_get(at + 9)?,
    })
}

fn envelopes(rows: &[Row]) -> Result<Vec<Envelope>, StoreError> {
    rows.iter()
        .map(envelope_from_row)
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::db("unreadable event row", e))
}

/// `$all` read on any client or transaction (projectors read inside their batch transaction).
pub async fn read_all_on(
    client: &impl deadpool_postgres::GenericClient,
    after: i64,
    limit: i64,
) -> Result<Vec<Envelope>, tokio_postgres::Error> {
    let sql = format!("{SELECT_ENVELOPE} WHERE position > $1 ORDER BY position LIMIT $2");
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &[&after, &limit]).await?;
    rows.iter().map(envelope_from_row).collect()
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.appends
            .send(Pending { request, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the append writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the append writer has stopped".into()))?
    }

    #[tracing::instrument(skip(self), fields(stream.id = %stream_id))]
    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<Envelope>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "{SELECT_ENVELOPE} WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3"
        );
        let statement = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| StoreError::db("prepare read_stream", e))?;
        let rows = client
            .query(&statement, &[&stream_id, &after_version, &limit])
            .await
            .map_err(|e| StoreError::db("read_stream", e))?;
        envelopes(&rows)
    }

    async fn read_all(&self, after: i64, limit: i64) -> Result<Vec<Envelope>, StoreError> {
        let client = self.client().await?;
        read_all_on(&client, after, limit)
            .await
            .map_err(|e| StoreError::db("read_all", e))
    }

    async fn head(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        head_on(&client)
            .await
            .map_err(|e| StoreError::db("head", e))
    }
}

pub async fn head_on(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT coalesce(max(position), 0) FROM events", &[])
        .await?;
    row.try_get(0)
}
