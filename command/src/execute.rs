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

/// Loads, decides, appends; returns the appended events and where they landed. With an
/// `idempotency` completion, the response is stored in the append transaction.
pub async fn execute<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
    command: &A::Command,
    metadata: &Metadata,
    idempotency: Option<IdempotencyCompletion>,
) -> Result<(Vec<A::Event>, AppendOutcome), CommandError<A::Error>> {
    let mut last_conflict = None;
    for attempt in 0..ATTEMPTS {
        let (state, version) = load::<A, A::Error>(store, stream_id).await?;
        let events = state.decide(command).map_err(CommandError::Domain)?;
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
            idempotency: idempotency.clone(),
        };
        match store.append(request).await {
            Ok(outcome) => return Ok((events, outcome)),
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

/// Folds a stream into its aggregate; returns the state and the stream's version.
pub async fn load<A: Aggregate, E>(
    store: &dyn EventStore,
    stream_id: &str,
) -> Result<(A, i64), CommandError<E>> {
    let stored = store
        .read_stream(stream_id, 0, i64::MAX)
        .await
        .map_err(CommandError::Store)?;
    let mut state = A::default();
    let mut version = 0;
    for envelope in &stored {
        let decoded = A::Event::decode(envelope)
            .map_err(|e| CommandError::Store(StoreError::Unavailable(e.to_string())))?;
        if let Some(event) = decoded {
            state = state.apply(&event);
        }
        version = envelope.version;
    }
    Ok((state, version))
}
