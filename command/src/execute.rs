//! Running a command against an aggregate: load the stream, decide outside any lock, append
//! with the expected version, and on a conflict reload and decide again (a bounded number of
//! times).

use keyledger_events::{
    AppendOutcome, AppendRequest, EventPayload, EventStore, ExpectedVersion, IdempotencyCompletion,
    Metadata, StoreError,
};
use uuid::Uuid;

/// A pure aggregate: no clock, no randomness, no I/O.
pub trait Aggregate: Default + Sized {
    type Event: EventPayload;
    type Command;
    type Error;

    fn apply(self, event: &Self::Event) -> Self;
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}

#[derive(Debug)]
pub enum CommandError<E> {
    Domain(E),
    /// Still conflicting after every retry.
    Conflict(StoreError),
    Store(StoreError),
}

const ATTEMPTS: usize = 8;

/// What a command did.
pub struct Executed<A: Aggregate> {
    /// The aggregate after the new events.
    pub state: A,
    pub events: Vec<A::Event>,
    pub outcome: AppendOutcome,
}

/// Gives the Idempotency-Key completion of an attempt, from the state and events it decided
/// (the response is stored in the append transaction).
pub type Completion<'a, A> =
    &'a (dyn Fn(&A, &[<A as Aggregate>::Event]) -> Option<IdempotencyCompletion> + Sync);

/// Loads, decides, appends; returns the new state, the appended events and where they landed.
pub async fn execute<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
    command: &A::Command,
    metadata: &Metadata,
    completion: Completion<'_, A>,
) -> Result<Executed<A>, CommandError<A::Error>> {
    let mut last_conflict = None;
    for attempt in 0..ATTEMPTS {
        let (state, version, position) = load::<A, A::Error>(store, stream_id).await?;
        let events = state.decide(command).map_err(CommandError::Domain)?;
        let after = events.iter().fold(state, |s, e| s.apply(e));
        if events.is_empty() {
            // Nothing to record (e.g. activating an active installation): answer from the log.
            return Ok(Executed {
                state: after,
                events,
                outcome: AppendOutcome { position, version },
            });
        }
        let request = AppendRequest {
            stream_id: stream_id.to_owned(),
            expected: if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            },
            events: events
                .iter()
                .map(|e| e.to_new_event(Uuid::new_v4()))
                .collect(),
            metadata: metadata.clone(),
            idempotency: completion(&after, &events),
        };
        match store.append(request).await {
            Ok(outcome) => {
                return Ok(Executed {
                    state: after,
                    events,
                    outcome,
                });
            }
            Err(conflict @ StoreError::Conflict { .. }) => {
                tracing::debug!(stream.id = stream_id, attempt, "append conflict; reloading");
                last_conflict = Some(conflict);
            }
            Err(other) => return Err(CommandError::Store(other)),
        }
    }
    Err(CommandError::Conflict(last_conflict.unwrap_or_else(|| {
        StoreError::Unavailable("conflict retries exhausted".into())
    })))
}

/// Like `execute`, for a command on a stream id the handler has just generated (a random
/// UUID): the first attempt skips reading the stream and decides on the empty aggregate,
/// appending with `ExpectedVersion::NoStream`. Should the stream exist after all, the writer
/// refuses that append as a conflict and the command runs again through `execute`, which loads
/// the stream first. The outcome is the same as `execute`'s; the usual case saves one read.
pub async fn execute_on_new_stream<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
    command: &A::Command,
    metadata: &Metadata,
    completion: Completion<'_, A>,
) -> Result<Executed<A>, CommandError<A::Error>> {
    let events = A::default().decide(command).map_err(CommandError::Domain)?;
    if events.is_empty() {
        return execute(store, stream_id, command, metadata, completion).await;
    }
    let after = events.iter().fold(A::default(), |s, e| s.apply(e));
    let request = AppendRequest {
        stream_id: stream_id.to_owned(),
        expected: ExpectedVersion::NoStream,
        events: events
            .iter()
            .map(|e| e.to_new_event(Uuid::new_v4()))
            .collect(),
        metadata: metadata.clone(),
        idempotency: completion(&after, &events),
    };
    match store.append(request).await {
        Ok(outcome) => Ok(Executed {
            state: after,
            events,
            outcome,
        }),
        Err(StoreError::Conflict { .. }) => {
            tracing::debug!(stream.id = stream_id, "stream exists already; loading it");
            execute(store, stream_id, command, metadata, completion).await
        }
        Err(other) => Err(CommandError::Store(other)),
    }
}

/// Folds a stream into its aggregate; returns the state, the stream's version and the position
/// of its last event.
pub async fn load<A: Aggregate, E>(
    store: &dyn EventStore,
    stream_id: &str,
) -> Result<(A, i64, i64), CommandError<E>> {
    let stored = store
        .read_stream(stream_id, 0, i64::MAX)
        .await
        .map_err(CommandError::Store)?;
    let mut state = A::default();
    let mut version = 0;
    let mut position = 0;
    for envelope in &stored {
        let decoded = A::Event::decode(envelope)
            // A stored event of this stream that no longer decodes is a fault of ours.
            .map_err(|e| CommandError::Store(StoreError::Internal(e.to_string())))?;
        if let Some(event) = decoded {
            state = state.apply(&event);
        }
        version = envelope.version;
        position = envelope.position;
    }
    Ok((state, version, position))
}
