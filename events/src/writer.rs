//! Group commit: one writer task per process turns the appends of concurrent commands into one
//! transaction under the global append lock.
//!
//! The task takes every append waiting in its queue (up to `max_batch_events` events), takes
//! `pg_advisory_xact_lock`, reads the log's head and the streams' versions, accepts the appends
//! whose expected version still holds, inserts them with one statement, runs the inline
//! projections, commits, and only then answers each caller. Positions are given out under the
//! lock, so they are gap-free and commit order equals position order. A conflicting append
//! fails alone; an append that makes the batch's transaction fail is retried on its own so it
//! cannot take the others down with it. Up to `concurrent_batches` batches are in flight, each
//! on its own connection; they take the lock one after the other, and each reads the head
//! under it.
//!
//! Appends may carry a decision instead of events (`EventStore::append_decided`): for a batch
//! with decisions the writer also reads its [`HeadView`]'s events since the view's position in
//! the round trip that takes the lock, applies them, and only then asks each decision for its
//! events. The batch's own events are applied to the view after the commit, before anyone is
//! answered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

use crate::chain::{self, ChainInput};
use crate::envelope::Envelope;
use crate::envelope::NewEvent;
use crate::failure::Failure;
use crate::head_view::HeadView;
use crate::notifier::Notifier;
use crate::projection::Projection;
use crate::store::{AppendOutcome, Pending, ReadError, StoreError, WriterConfig};

/// Key of the transaction-scoped advisory lock that serializes appends (per database).
pub const APPEND_LOCK_KEY: i64 = 0x6B65_796C_6564_6731; // "keyledg1"

const HEAD_AND_VERSIONS: &str = "SELECT \
      (SELECT position FROM events ORDER BY position DESC LIMIT 1), \
      (SELECT hash FROM events ORDER BY position DESC LIMIT 1), \
      ARRAY(SELECT coalesce((SELECT max(e.version) FROM events e WHERE e.stream_id = s.id), 0) \
            FROM unnest($1::text[]) WITH ORDINALITY AS s(id, n) ORDER BY s.n)";

/// Completes the claimed Idempotency-Key records of the batch's accepted commands.
const COMPLETE_IDEMPOTENCY: &str = "UPDATE idempotency_keys k \
      SET status = 'completed', response = u.response \
      FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bytea[]) AS u(scope, key, token, response) \
      WHERE k.scope = u.scope AND k.key = u.key AND k.token = u.token AND k.status = 'in_flight'";

/// The head view's events after its position (run under the lock, after the head was read).
const CATCH_UP: &str = "SELECT position, event_id, stream_id, version, event_type, \
      schema_version, data, metadata, recorded_at, hash FROM events \
      WHERE position > $1 AND event_type = ANY($2) ORDER BY position";

const NOTIFY_EVENTS: &str = "SELECT pg_notify('keyledger_events', $1)";

/// The JSON columns are sent as the exact text that was hashed; `json` stores it byte for byte.
const INSERT_EVENTS: &str = "INSERT INTO events \
      (position, event_id, stream_id, version, event_type, schema_version, data, metadata, \
       recorded_at, hash, hash_rule) \
      SELECT p, id, s, v, t, sv, d::json, m::json, r, h, $11 \
      FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], \
                  $6::int[], $7::text[], $8::text[], $9::timestamptz[], $10::bytea[]) \
           AS u(p, id, s, v, t, sv, d, m, r, h)";

pub(crate) async fn run(
    pool: Pool,
    config: WriterConfig,
    inline: Vec<Arc<dyn Projection>>,
    view: Option<Arc<dyn HeadView>>,
    notifier: Notifier,
    mut queue: mpsc::Receiver<Pending>,
) {
    let slots = Arc::new(Semaphore::new(config.concurrent_batches.max(1)));
    let writer = Arc::new(Writer {
        pool,
        config,
        inline,
        view,
        notifier,
    });
    loop {
        // Wait for a free slot first: the batch then takes everything queued up to now.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let Some(first) = queue.recv().await else {
            break;
        };
        let mut events = first.request.events.len();
        let mut batch = vec![first];
        while events < writer.config.max_batch_events {
            match queue.try_recv() {
                Ok(next) => {
                    events += next.request.events.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            writer.commit_and_answer(batch).await;
            drop(slot);
        });
    }
    // Let the batches in flight finish.
    let _ = slots
        .acquire_many(u32::try_from(writer.config.concurrent_batches.max(1)).unwrap_or(1))
        .await;
    tracing::info!("append writer stopped: every store handle was dropped");
}

struct Writer {
    pool: Pool,
    config: WriterConfig,
    inline: Vec<Arc<dyn Projection>>,
    view: Option<Arc<dyn HeadView>>,
    notifier: Notifier,
}

impl Writer {
    async fn commit_and_answer(&self, batch: Vec<Pending>) {
        let size = batch.len();
        match self.commit(&batch).await {
            Ok(outcomes) => {
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = pending.reply.send(outcome);
                }
            }
            Err(
                error @ (BatchError::Statement(..)
                | BatchError::Duplicate(_)
                | BatchError::ClaimLost),
            ) if size > 1 => {
                // One append broke the transaction: isolate it by committing each alone.
                tracing::warn!(error = %error, batch.size = size, "append batch failed; retrying its appends one by one");
                for pending in batch {
                    let outcome = match self.commit(std::slice::from_ref(&pending)).await {
                        Ok(mut outcomes) => outcomes.pop().unwrap_or_else(|| {
                            Err(StoreError::Unavailable("empty append result".into()))
                        }),
                        Err(e) => Err(e.into_store_error()),
                    };
                    let _ = pending.reply.send(outcome);
                }
            }
            Err(error) => {
                let expected = matches!(error, BatchError::Duplicate(_) | BatchError::ClaimLost);
                let error = error.into_store_error();
                if expected {
                    tracing::debug!(error = %error, "append refused");
                } else {
                    tracing::error!(error = %error, batch.size = size, "append batch failed");
                }
                for pending in batch {
                    let _ = pending.reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Commits the acceptable appends of `batch` in one transaction; returns each one's outcome.
    async fn commit(
        &self,
        batch: &[Pending],
    ) -> Result<Vec<Result<AppendOutcome, StoreError>>, BatchError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| BatchError::Connection(e.to_string()))?;
        let started = Instant::now();
        // Round trip 1: BEGIN.
        let tx = client.transaction().await.map_err(BatchError::from_pg)?;
        // The writer's statements are prepared once per connection (no round trip after that).
        let (head, insert, complete, notify, catch_up) = futures::try_join!(
            tx.prepare_cached(HEAD_AND_VERSIONS),
            tx.prepare_cached(INSERT_EVENTS),
            tx.prepare_cached(COMPLETE_IDEMPOTENCY),
            tx.prepare_cached(NOTIFY_EVENTS),
            tx.prepare_cached(CATCH_UP),
        )
        .map_err(BatchError::from_pg)?;
        // The head view is read only for a batch that decides under the lock.
        let view = self
            .view
            .as_ref()
            .filter(|_| batch.iter().any(|p| p.decide.is_some()));
        let view_from = view.map_or(0, |v| v.position());
        let view_types: Vec<&str> = view.map(|v| v.event_types().to_vec()).unwrap_or_default();

        // Round trip 2, pipelined: take the append lock, then read the head and the versions,
        // and the head view's events since its position. All requests are sent before any
        // answer is awaited; the server runs them in order, so the reads happen under the
        // lock. If the lock fails, the reads fail too.
        let lock = format!(
            "SET LOCAL lock_timeout = {}; SET LOCAL idle_in_transaction_session_timeout = 10000; \
             SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY})",
            self.config.lock_timeout_ms
        );
        let stream_ids: Vec<&str> = batch.iter().map(|p| p.request.stream_id.as_str()).collect();
        let head_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&stream_ids];
        let catch_up_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&view_from, &view_types];
        let (locked, row, caught_up) = futures::join!(
            tx.batch_execute(&lock),
            tx.query_one(&head, &head_params),
            async {
                if view.is_some() {
                    tx.query(&catch_up, &catch_up_params).await.map(Some)
                } else {
                    Ok(None)
                }
            }
        );
        locked.map_err(BatchError::from_pg)?;
        let row = row.map_err(BatchError::from_pg)?;
        let caught_up = caught_up.map_err(BatchError::from_pg)?;
        let locked = Instant::now();
        metrics::histogram!("keyledger_append_lock_wait_seconds")
            .record(locked.duration_since(started).as_secs_f64());

        let mut position: i64 = row
            .try_get::<_, Option<i64>>(0)
            .map_err(BatchError::from_pg)?
            .unwrap_or(0);
        let mut previous: Vec<u8> = row
            .try_get::<_, Option<Vec<u8>>>(1)
            .map_err(BatchError::from_pg)?
            .unwrap_or_else(|| chain::GENESIS.to_vec());
        let versions: Vec<i64> = row.try_get(2).map_err(BatchError::from_pg)?;
        let head_at_lock = position;
        if let (Some(view), Some(rows)) = (view, caught_up) {
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                match crate::store::envelope_from_row(row) {
                    Ok(event) => events.push(event),
                    Err(ReadError::Database(e)) => return Err(BatchError::from_pg(e)),
                    // Only a row written around the service can be unreadable; the view
                    // cannot apply it either way.
                    Err(ReadError::Unreadable(e)) => {
                        tracing::error!(error = %e, "the head view skips an unreadable event");
                    }
                }
            }
            view.advance(view_from, &events, head_at_lock);
            view.begin_decisions();
        }
        let mut current: HashMap<&str, i64> = HashMap::with_capacity(batch.len());
        for (stream_id, version) in stream_ids.iter().zip(versions) {
            current.entry(stream_id).or_insert(version);
        }

        let recorded_at = chain::to_micros(Utc::now());
        let mut rows = Rows::default();
        let mut accepted: Vec<Envelope> = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut completions = Completions::default();
        for pending in batch {
            let request = &pending.request;
            let decided: Vec<NewEvent>;
            let events = match &pending.decide {
                Some(decide) => {
                    decided = decide();
                    &decided
                }
                None => &request.events,
            };
            let version = current
                .get(request.stream_id.as_str())
                .copied()
                .unwrap_or(0);
            if !request.expected.accepts(version) {
                outcomes.push(Err(StoreError::Conflict {
                    stream_id: request.stream_id.clone(),
                    expected: request.expected,
                    actual: version,
                }));
                continue;
            }
            let metadata = request.metadata.to_value();
            let metadata_text = json_text(&metadata);
            let mut version = version;
            for event in events {
                position += 1;
                version += 1;
                let data_text = json_text(&event.data);
                let hash = chain::event_hash(
                    &previous,
                    &ChainInput {
                        position,
                        event_id: event.event_id,
                        stream_id: &request.stream_id,
                        version,
                        event_type: event.event_type,
                        schema_version: event.schema_version,
                        data: data_text.as_bytes(),
                        metadata: metadata_text.as_bytes(),
                        recorded_at,
                    },
                );
                previous = hash.to_vec();
                rows.push(
                    position,
                    event.event_id,
                    &request.stream_id,
                    version,
                    event,
                    data_text,
                    metadata_text.clone(),
                    recorded_at,
                    hash.to_vec(),
                );
                accepted.push(Envelope {
                    position,
                    event_id: event.event_id,
                    stream_id: request.stream_id.clone(),
                    version,
                    event_type: event.event_type.to_owned(),
                    schema_version: event.schema_version,
                    data: event.data.clone(),
                    metadata: metadata.clone(),
                    recorded_at,
                    hash: hash.to_vec(),
                });
            }
            current.insert(request.stream_id.as_str(), version);
            let outcome = AppendOutcome { position, version };
            if let Some(completion) = &request.idempotency {
                completions.push(completion, &outcome);
            }
            outcomes.push(Ok(outcome));
        }

        if accepted.is_empty() {
            tx.rollback().await.map_err(BatchError::from_pg)?;
            return Ok(outcomes);
        }

        // Round trip 3, pipelined: insert, complete the idempotency records, apply the inline
        // projections and notify. Every request is in flight before any answer is awaited. Once
        // one statement fails, the following ones fail too ("current transaction is aborted"),
        // so the results are checked in statement order and the first failure is reported; the
        // transaction is then rolled back when `tx` is dropped.
        let position_text = position.to_string();
        let notify_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&position_text];
        let hash_rule = chain::HashRule::CURRENT.column();
        let insert_params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
            &rows.positions,
            &rows.event_ids,
            &rows.stream_ids,
            &rows.versions,
            &rows.event_types,
            &rows.schema_versions,
            &rows.data,
            &rows.metadata,
            &rows.recorded_at,
            &rows.hashes,
            &hash_rule,
        ];
        let completion_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
            &completions.scopes,
            &completions.keys,
            &completions.tokens,
            &completions.responses,
        ];
        let (inserted, completed, projected, notified) = futures::join!(
            tx.execute(&insert, &insert_params),
            async {
                if completions.tokens.is_empty() {
                    Ok(0)
                } else {
                    tx.execute(&complete, &completion_params).await
                }
            },
            futures::future::join_all(
                self.inline
                    .iter()
                    .map(|projection| projection.apply(&tx, &accepted))
            ),
            tx.execute(&notify, &notify_params),
        );
        inserted.map_err(BatchError::from_insert)?;
        let updated = completed.map_err(BatchError::from_pg)?;
        if updated as usize != completions.tokens.len() {
            return Err(BatchError::ClaimLost);
        }
        for (projection, result) in self.inline.iter().zip(projected) {
            result.map_err(|e| {
                let failure = match &e {
                    crate::projection::ProjectionError::Database(pg) => {
                        crate::failure::classify(pg)
                    }
                    crate::projection::ProjectionError::Decode(_) => Failure::Internal,
                };
                BatchError::Statement(
                    failure,
                    format!("inline projection {}: {e}", projection.name()),
                )
            })?;
        }
        notified.map_err(BatchError::from_pg)?;
        // Round trip 4: COMMIT, sent only after every statement above answered without error.
        tx.commit().await.map_err(BatchError::from_pg)?;
        // Before anyone is answered: a validation that follows an issue on this node finds it.
        if let Some(view) = &self.view {
            view.advance(head_at_lock, &accepted, position);
        }

        let commands = outcomes.iter().filter(|o| o.is_ok()).count();
        metrics::histogram!("keyledger_append_batch_events").record(accepted.len() as f64);
        metrics::histogram!("keyledger_append_batch_commands").record(commands as f64);
        metrics::histogram!("keyledger_append_commit_seconds")
            .record(locked.elapsed().as_secs_f64());
        tracing::debug!(
            batch.events = accepted.len(),
            batch.commands = commands,
            position,
            "append batch committed"
        );
        self.notifier.advance(position);
        Ok(outcomes)
    }
}

#[derive(Default)]
struct Completions {
    scopes: Vec<String>,
    keys: Vec<String>,
    tokens: Vec<Uuid>,
    responses: Vec<Vec<u8>>,
}

impl Completions {
    fn push(&mut self, completion: &crate::store::IdempotencyCompletion, outcome: &AppendOutcome) {
        self.scopes.push(completion.scope.clone());
        self.keys.push(completion.key.clone());
        self.tokens.push(completion.token);
        self.responses.push((completion.render)(outcome));
    }
}

/// The text a JSON value is stored (and hashed) as.
fn json_text(value: &Value) -> String {
    // `canonical_json` writes only JSON, which is UTF-8.
    String::from_utf8(chain::canonical_json(value)).unwrap_or_default()
}

#[derive(Default)]
struct Rows {
    positions: Vec<i64>,
    event_ids: Vec<Uuid>,
    stream_ids: Vec<String>,
    versions: Vec<i64>,
    event_types: Vec<&'static str>,
    schema_versions: Vec<i32>,
    data: Vec<String>,
    metadata: Vec<String>,
    recorded_at: Vec<chrono::DateTime<Utc>>,
    hashes: Vec<Vec<u8>>,
}

impl Rows {
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per column of the row"
    )]
    fn push(
        &mut self,
        position: i64,
        event_id: Uuid,
        stream_id: &str,
        version: i64,
        event: &crate::envelope::NewEvent,
        data: String,
        metadata: String,
        recorded_at: chrono::DateTime<Utc>,
        hash: Vec<u8>,
    ) {
        self.positions.push(position);
        self.event_ids.push(event_id);
        self.stream_ids.push(stream_id.to_owned());
        self.versions.push(version);
        self.event_types.push(event.event_type);
        self.schema_versions.push(event.schema_version);
        self.data.push(data);
        self.metadata.push(metadata);
        self.recorded_at.push(recorded_at);
        self.hashes.push(hash);
    }
}

enum BatchError {
    /// The connection or the server failed: every append in the batch gets the error.
    Connection(String),
    /// A statement was refused (e.g. a constraint, or data the database cannot store): retry
    /// the appends one by one, so that only the append that caused it fails.
    Statement(Failure, String),
    Duplicate(Uuid),
    /// An Idempotency-Key claim was no longer this request's.
    ClaimLost,
}

impl BatchError {
    fn from_pg(error: tokio_postgres::Error) -> Self {
        match crate::failure::classify(&error) {
            Failure::Unavailable => BatchError::Connection(crate::failure::describe(&error)),
            failure => BatchError::Statement(failure, crate::failure::describe(&error)),
        }
    }

    fn from_insert(error: tokio_postgres::Error) -> Self {
        if let Some(db) = error.as_db_error()
            && db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some("events_event_id_key")
            && let Some(id) = db
                .detail()
                .and_then(|d| d.split('(').nth(2))
                .and_then(|d| d.split(')').next())
                .and_then(|d| Uuid::parse_str(d).ok())
        {
            return BatchError::Duplicate(id);
        }
        BatchError::from_pg(error)
    }

    fn into_store_error(self) -> StoreError {
        match self {
            BatchError::Connection(e) | BatchError::Statement(Failure::Unavailable, e) => {
                StoreError::Unavailable(e)
            }
            BatchError::Statement(Failure::Rejected, e) => StoreError::Rejected(e),
            BatchError::Statement(_, e) => StoreError::Internal(e),
            BatchError::Duplicate(id) => StoreError::DuplicateEvent(id),
            BatchError::ClaimLost => StoreError::IdempotencyClaimLost,
        }
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Connection(e) | BatchError::Statement(_, e) => f.write_str(e),
            BatchError::Duplicate(id) => write!(f, "duplicate event id {id}"),
            BatchError::ClaimLost => f.write_str("an idempotency claim was lost"),
        }
    }
}
