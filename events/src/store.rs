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
use crate::head_view::{Decide, HeadView};
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
    /// The database could not be reached, or is overloaded: retry later (HTTP 503).
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    /// The database refused the data itself (e.g. a value it cannot store): retrying the same
    /// request cannot help (HTTP 422).
    #[error("the event store refused the data: {0}")]
    Rejected(String),
    /// A fault of the service: a statement or a stored row it cannot handle (HTTP 500).
    #[error("internal event store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Classifies a PostgreSQL failure: an outage, the client's data, or our bug.
    pub fn from_pg(context: &str, error: &tokio_postgres::Error) -> Self {
        let message = format!("{context}: {}", crate::failure::describe(error));
        match crate::failure::classify(error) {
            crate::failure::Failure::Unavailable => StoreError::Unavailable(message),
            crate::failure::Failure::Rejected => StoreError::Rejected(message),
            crate::failure::Failure::Internal => StoreError::Internal(message),
        }
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

/// Renders what a command keeps with its events from where they landed: bytes the log stores
/// for the command and never reads (deterministic: the command renders them again for itself).
pub type RenderReceipt = Arc<dyn Fn(&AppendOutcome) -> Vec<u8> + Send + Sync>;

/// The claimed Idempotency-Key record a command completes when its events commit, with the
/// bytes it wants kept there (its response, in a form only the command side reads).
#[derive(Clone)]
pub struct IdempotencyCompletion {
    pub scope: String,
    pub key: String,
    /// The claim of the request running the command.
    pub token: uuid::Uuid,
    pub render: RenderReceipt,
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

    /// Appends the events `decide` returns when asked under the append lock, with the
    /// writer's [`HeadView`](crate::head_view::HeadView) at the head; `request.events` is
    /// ignored. A store without a writer of its own decides first and then appends, which
    /// keeps no guarantee across nodes.
    async fn append_decided(
        &self,
        request: AppendRequest,
        decide: Decide,
    ) -> Result<AppendOutcome, StoreError> {
        self.append(AppendRequest {
            events: decide(),
            ..request
        })
        .await
    }
}

/// Makes the writer's own connection pool, inside the writer's thread.
pub type PoolFactory = Arc<dyn Fn() -> anyhow::Result<Pool> + Send + Sync>;

/// Tuning of the group-commit writer.
#[derive(Clone)]
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
    /// When set, the writer runs on a thread and runtime of its own, with connections of its
    /// own made by this factory on that runtime: its round trips under the append lock then do
    /// not wait for the request tasks' turn on the shared runtime. `None`: a task on the
    /// caller's runtime, on the shared pool.
    pub own_thread: Option<PoolFactory>,
}

impl std::fmt::Debug for WriterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterConfig")
            .field("max_batch_events", &self.max_batch_events)
            .field("queue_capacity", &self.queue_capacity)
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .field("concurrent_batches", &self.concurrent_batches)
            .field("own_thread", &self.own_thread.is_some())
            .finish()
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch_events: 1000,
            queue_capacity: 10_000,
            lock_timeout_ms: 5_000,
            concurrent_batches: 2,
            own_thread: None,
        }
    }
}

pub(crate) struct Pending {
    pub request: AppendRequest,
    /// Decides the events under the lock instead of `request.events`.
    pub decide: Option<Decide>,
    pub reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

#[derive(Clone)]
pub struct PgEventStore {
    pool: Pool,
    appends: mpsc::Sender<Pending>,
}

impl PgEventStore {
    /// Starts the writer task. `inline` projections are applied inside every append
    /// transaction; `view` is kept at the head for appends that decide under the lock.
    pub fn start(
        pool: Pool,
        config: WriterConfig,
        inline: Vec<Arc<dyn Projection>>,
        view: Option<Arc<dyn HeadView>>,
        notifier: Notifier,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (appends, queue) = mpsc::channel(config.queue_capacity);
        let task = match config.own_thread.clone() {
            None => tokio::spawn(writer::run(
                pool.clone(),
                config,
                inline,
                view,
                notifier,
                queue,
            )),
            Some(make_pool) => {
                // A thread of its own, not a blocking task: the shared runtime's shutdown does
                // not wait for it. The returned handle ends when the thread does.
                let (ended, end) = oneshot::channel::<()>();
                let thread = std::thread::Builder::new()
                    .name("keyledger-writer".to_owned())
                    .spawn(move || {
                        let runtime = match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(runtime) => runtime,
                            Err(error) => {
                                tracing::error!(error = %error, "cannot start the append writer's runtime");
                                return;
                            }
                        };
                        runtime.block_on(async move {
                            match make_pool() {
                                Ok(own) => {
                                    writer::run(own, config, inline, view, notifier, queue).await
                                }
                                Err(error) => tracing::error!(
                                    error = format!("{error:#}"),
                                    "cannot make the append writer's connection pool"
                                ),
                            }
                        });
                        drop(ended);
                    });
                if let Err(error) = thread {
                    tracing::error!(error = %error, "cannot start the append writer's thread");
                }
                tokio::spawn(async move {
                    let _ = end.await;
                })
            }
        };
        (PgEventStore { pool, appends }, task)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn submit(
        &self,
        request: AppendRequest,
        decide: Option<Decide>,
    ) -> Result<AppendOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.appends
            .send(Pending {
                request,
                decide,
                reply,
            })
            .await
            .map_err(|_| StoreError::Unavailable("the append writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the append writer has stopped".into()))?
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))
    }
}

/// The columns of an [`Envelope`], in the order `Envelope::<JsonText>::from_row_at` reads them.
#[macro_export]
macro_rules! envelope_columns {
    () => {
        "position, event_id, stream_id, version, event_type, schema_version, data, metadata, \
         recorded_at, hash"
    };
}

/// The columns of an [`Envelope`], in the order `Envelope::<JsonText>::from_row_at` reads them.
pub const ENVELOPE_COLUMNS: &str = envelope_columns!();

pub const SELECT_ENVELOPE: &str = concat!("SELECT ", envelope_columns!(), " FROM events");

/// Why an event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Unreadable(#[from] UnreadableEvent),
}

/// A stored event whose JSON does not parse (only a row written around the service can be:
/// everything the service writes parses back exactly). Readers set it aside and go on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the event at position {position} ({event_type}) cannot be read: {reason}")]
pub struct UnreadableEvent {
    pub position: i64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub reason: String,
}

/// The text of a `json` (or `jsonb`) column, as stored.
pub struct JsonText(pub String);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // jsonb's binary form is a version byte (1) followed by the text.
        let raw = if *ty == tokio_postgres::types::Type::JSONB {
            match raw.split_first() {
                Some((1, rest)) => rest,
                _ => return Err("unsupported jsonb version".into()),
            }
        } else {
            raw
        };
        Ok(JsonText(std::str::from_utf8(raw)?.to_owned()))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        matches!(
            *ty,
            tokio_postgres::types::Type::JSON | tokio_postgres::types::Type::JSONB
        )
    }
}

impl Envelope<JsonText> {
    /// Reads a row of [`ENVELOPE_COLUMNS`], its JSON fields as the stored text.
    pub fn from_row(row: &Row) -> Result<Envelope<JsonText>, tokio_postgres::Error> {
        Self::from_row_at(row, 0)
    }

    /// Reads a row whose [`ENVELOPE_COLUMNS`] start at column `at`.
    pub fn from_row_at(row: &Row, at: usize) -> Result<Envelope<JsonText>, tokio_postgres::Error> {
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

    /// The event with its JSON parsed, or why it does not parse (only a row written around
    /// the service can fail: everything the service writes parses back exactly).
    pub fn parse(self) -> Result<Envelope, UnreadableEvent> {
        // Parsed before the envelope is taken apart, so that only a failure copies its type.
        let parse = |JsonText(text): &JsonText, name: &str| {
            serde_json::from_str::<serde_json::Value>(text).map_err(|e| UnreadableEvent {
                position: self.position,
                event_id: self.event_id,
                event_type: self.event_type.clone(),
                reason: format!("its {name} is not JSON the service can parse: {e}"),
            })
        };
        let mut data = Some(parse(&self.data, "data")?);
        let mut metadata = Some(parse(&self.metadata, "metadata")?);
        let parsed = self.try_map_json(|_, name| {
            let value = if name == "data" {
                &mut data
            } else {
                &mut metadata
            };
            Ok::<_, std::convert::Infallible>(value.take().unwrap_or_default())
        });
        match parsed {
            Ok(envelope) => Ok(envelope),
            Err(never) => match never {},
        }
    }
}

pub fn envelope_from_row(row: &Row) -> Result<Envelope, ReadError> {
    envelope_from_row_at(row, 0)
}

/// An envelope whose [`ENVELOPE_COLUMNS`] start at column `at`.
pub fn envelope_from_row_at(row: &Row, at: usize) -> Result<Envelope, ReadError> {
    Ok(Envelope::<JsonText>::from_row_at(row, at)?.parse()?)
}

/// Reads like `read_all_on`, but stops at the first unreadable event and hands it back beside
/// the events before it, so that the reader can set it aside and go on.
pub async fn read_all_until_unreadable(
    client: &impl deadpool_postgres::GenericClient,
    after: i64,
    limit: i64,
) -> Result<(Vec<Envelope>, Option<UnreadableEvent>), tokio_postgres::Error> {
    let sql = format!("{SELECT_ENVELOPE} WHERE position > $1 ORDER BY position LIMIT $2");
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &[&after, &limit]).await?;
    until_unreadable(&rows)
}

/// Like `read_all_until_unreadable`, but only events of `event_types` (a rebuild reads only
/// what its projection applies).
pub async fn read_types_until_unreadable(
    client: &impl deadpool_postgres::GenericClient,
    after: i64,
    event_types: &[&str],
    limit: i64,
) -> Result<(Vec<Envelope>, Option<UnreadableEvent>), tokio_postgres::Error> {
    let sql = format!(
        "{SELECT_ENVELOPE} WHERE position > $1 AND event_type = ANY($2) ORDER BY position LIMIT $3"
    );
    let statement = client.prepare_cached(&sql).await?;
    let rows = client
        .query(&statement, &[&after, &event_types, &limit])
        .await?;
    until_unreadable(&rows)
}

fn until_unreadable(
    rows: &[Row],
) -> Result<(Vec<Envelope>, Option<UnreadableEvent>), tokio_postgres::Error> {
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        match envelope_from_row(row) {
            Ok(event) => events.push(event),
            Err(ReadError::Database(e)) => return Err(e),
            Err(ReadError::Unreadable(unreadable)) => return Ok((events, Some(unreadable))),
        }
    }
    Ok((events, None))
}

/// Sets an event aside for a consumer (a projection or the relay) that cannot handle it, so
/// that one event cannot stop the consumer for good. `/health` lists what was set aside.
pub async fn park(
    client: &impl deadpool_postgres::GenericClient,
    consumer: &str,
    position: i64,
    event_id: uuid::Uuid,
    event_type: &str,
    error: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO projection_parked (projection, position, event_id, event_type, error) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (projection, position) DO NOTHING",
            &[&consumer, &position, &event_id, &event_type, &error],
        )
        .await?;
    tracing::error!(
        consumer,
        position,
        event.id = %event_id,
        event.r#type = event_type,
        error,
        "an event was set aside: the consumer cannot handle it and goes on past it"
    );
    metrics::counter!("keyledger_parked_events_total", "consumer" => consumer.to_owned())
        .increment(1);
    Ok(())
}

/// Records that a consumer is failing (or, with `None`, that it recovered), where every
/// node's `/health` can read it.
pub async fn record_failure(
    client: &impl deadpool_postgres::GenericClient,
    consumer: &str,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    match error {
        Some(error) => {
            client
                .execute(
                    "UPDATE checkpoints SET last_error = $2, last_error_at = now(), \
                     failing_since = coalesce(failing_since, now()) WHERE name = $1",
                    &[&consumer, &error],
                )
                .await?
        }
        None => {
            client
                .execute(
                    "UPDATE checkpoints SET failing_since = NULL \
                     WHERE name = $1 AND failing_since IS NOT NULL",
                    &[&consumer],
                )
                .await?
        }
    };
    Ok(())
}

fn envelopes(rows: &[Row]) -> Result<Vec<Envelope>, ReadError> {
    rows.iter().map(envelope_from_row).collect()
}

/// `$all` read on any client or transaction (projectors read inside their batch transaction).
/// Fails at the first unreadable event; read again with a smaller limit for those before it.
pub async fn read_all_on(
    client: &impl deadpool_postgres::GenericClient,
    after: i64,
    limit: i64,
) -> Result<Vec<Envelope>, ReadError> {
    let sql = format!("{SELECT_ENVELOPE} WHERE position > $1 ORDER BY position LIMIT $2");
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &[&after, &limit]).await?;
    envelopes(&rows)
}

impl From<ReadError> for StoreError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Database(e) => StoreError::from_pg("read the log", &e),
            ReadError::Unreadable(e) => StoreError::Internal(e.to_string()),
        }
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.submit(request, None).await
    }

    async fn append_decided(
        &self,
        request: AppendRequest,
        decide: Decide,
    ) -> Result<AppendOutcome, StoreError> {
        self.submit(request, Some(decide)).await
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
            .map_err(|e| StoreError::from_pg("prepare read_stream", &e))?;
        let rows = client
            .query(&statement, &[&stream_id, &after_version, &limit])
            .await
            .map_err(|e| StoreError::from_pg("read_stream", &e))?;
        Ok(envelopes(&rows)?)
    }

    async fn read_all(&self, after: i64, limit: i64) -> Result<Vec<Envelope>, StoreError> {
        let client = self.client().await?;
        Ok(read_all_on(&client, after, limit).await?)
    }

    async fn head(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        head_on(&client)
            .await
            .map_err(|e| StoreError::from_pg("head", &e))
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
