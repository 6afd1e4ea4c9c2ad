//! The one way a route runs a command.
//!
//! A route parses its input into a command and names its answer (a function of the aggregate
//! after the command, the events it decided and where they landed). `CommandRequest` does the
//! rest: it loads the stream, decides, appends with the expected version (deciding again on a
//! conflict), hands the answer to the append writer to store under the request's
//! Idempotency-Key in the same transaction, and replies with it. A command that appends nothing
//! (the state already is what was asked) replies the same answer, which the Idempotency-Key
//! layer stores after the handler. Who asked, under which request id and Idempotency-Key,
//! enters the events' metadata here and nowhere else.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_api::{ApiError, Principal, RequestId};
use keyledger_events::{
    AppendOutcome, AppendRequest, Decide, ExpectedVersion, IdempotencyCompletion, Metadata,
    NewEvent,
};

use crate::CommandState;
use crate::execute::{Aggregate, CommandError, Executed, execute, execute_on_new_stream};
use crate::idempotency::{IdempotencyClaim, StoredByWriter, StoredResponse};

/// A command's answer, from the aggregate after it, the events it decided (none when the
/// state already was what was asked) and where the stream stands.
pub trait Answer<A: Aggregate>:
    Fn(&A, &[A::Event], &AppendOutcome) -> StoredResponse + Send + Sync + 'static
{
}

impl<A: Aggregate, F> Answer<A> for F where
    F: Fn(&A, &[A::Event], &AppendOutcome) -> StoredResponse + Send + Sync + 'static
{
}

/// An aggregate a route runs commands on: its state and events are kept for the answer,
/// which the append writer renders on its own task.
pub trait RouteAggregate:
    Aggregate<Command: Sync, Event: Clone + Send + Sync + 'static> + Clone + Send + Sync + 'static
{
}

impl<A> RouteAggregate for A where
    A: Aggregate<Command: Sync, Event: Clone + Send + Sync + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The request side of a command: its state, the metadata of the events it causes, its
/// Idempotency-Key claim and the time it is decided at.
pub struct CommandRequest {
    state: CommandState,
    metadata: Metadata,
    claim: Option<IdempotencyClaim>,
    /// Now, to the microsecond the log keeps.
    pub now: DateTime<Utc>,
}

impl FromRequestParts<CommandState> for CommandRequest {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &CommandState,
    ) -> Result<Self, Self::Rejection> {
        let RequestMetadata(metadata) = RequestMetadata::from_request_parts(parts, state).await?;
        Ok(CommandRequest {
            metadata,
            claim: parts.extensions.get::<IdempotencyClaim>().cloned(),
            now: state.now(),
            state: state.clone(),
        })
    }
}

/// The metadata of the events a request causes: its id as correlation and causation, the
/// authenticated principal as the actor (`anonymous` without credentials), its
/// Idempotency-Key.
pub struct RequestMetadata(pub Metadata);

impl<S: Send + Sync> FromRequestParts<S> for RequestMetadata {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let request_id = RequestId::from_request_parts(parts, state).await?.0;
        let actor = parts
            .extensions
            .get::<Principal>()
            .map_or_else(|| "anonymous".to_owned(), Principal::actor);
        Ok(RequestMetadata(Metadata {
            correlation_id: Some(request_id.clone()),
            // The command came straight from the request.
            causation_id: Some(request_id),
            actor: Some(actor),
            idempotency_key: parts
                .extensions
                .get::<IdempotencyClaim>()
                .map(|claim| claim.key.clone()),
        }))
    }
}

/// For a command whose reply is the answer it stores.
const NOT_SHOWN: Option<fn(&AppendOutcome) -> StoredResponse> = None;

/// Where a command's stream stands before it runs.
#[derive(Clone, Copy)]
enum Stream {
    /// Load it first.
    Existing,
    /// The handler has just made its id up: decide on the empty aggregate first.
    New,
}

impl CommandRequest {
    pub fn state(&self) -> &CommandState {
        &self.state
    }

    /// The metadata of the events this request causes.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Runs `command` on the stream `stream_id` and replies with `answer`.
    pub async fn run<A>(
        &self,
        stream_id: &str,
        command: &A::Command,
        answer: impl Answer<A>,
    ) -> Result<Response, ApiError>
    where
        A: RouteAggregate,
        ApiError: From<CommandError<A::Error>>,
    {
        self.run_on(Stream::Existing, stream_id, command, answer, NOT_SHOWN)
            .await
    }

    /// Like `run`, on a stream whose id the handler has just made up (a random UUID).
    pub async fn run_new<A>(
        &self,
        stream_id: &str,
        command: &A::Command,
        answer: impl Answer<A>,
    ) -> Result<Response, ApiError>
    where
        A: RouteAggregate,
        ApiError: From<CommandError<A::Error>>,
    {
        self.run_on(Stream::New, stream_id, command, answer, NOT_SHOWN)
            .await
    }

    /// Like `run_new`, replying this once with `shown` instead of the answer it stores: what is
    /// shown only once (a new license's key) is in this reply, never in what a retry gets.
    pub async fn run_new_showing<A>(
        &self,
        stream_id: &str,
        command: &A::Command,
        answer: impl Answer<A>,
        shown: impl FnOnce(&AppendOutcome) -> StoredResponse + Send,
    ) -> Result<Response, ApiError>
    where
        A: RouteAggregate,
        ApiError: From<CommandError<A::Error>>,
    {
        self.run_on(Stream::New, stream_id, command, answer, Some(shown))
            .await
    }

    async fn run_on<A>(
        &self,
        stream: Stream,
        stream_id: &str,
        command: &A::Command,
        answer: impl Answer<A>,
        shown: Option<impl FnOnce(&AppendOutcome) -> StoredResponse + Send>,
    ) -> Result<Response, ApiError>
    where
        A: RouteAggregate,
        ApiError: From<CommandError<A::Error>>,
    {
        let answer = Arc::new(answer);
        let executed = self
            .execute::<A>(stream, stream_id, command, answer.clone())
            .await?;
        let (response, secret) = match shown {
            Some(shown) => (shown(&executed.outcome), true),
            None => (
                answer(&executed.state, &executed.events, &executed.outcome),
                false,
            ),
        };
        let mut reply = self.reply(&executed, response);
        if secret {
            // The answer shows a secret once: no cache may keep it.
            reply.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
        }
        Ok(reply)
    }

    /// Appends `events` to `stream_id` as they are (no aggregate decides on them) and replies
    /// with `answer`.
    pub async fn append(
        &self,
        stream_id: String,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        answer: impl Fn(&AppendOutcome) -> StoredResponse + Send + Sync + 'static,
    ) -> Result<Response, ApiError> {
        let answer = Arc::new(answer);
        let outcome = self
            .state
            .store
            .append(AppendRequest {
                stream_id,
                expected,
                events,
                metadata: self.metadata.clone(),
                idempotency: self.completion(answer.clone()),
            })
            .await
            .map_err(ApiError::store)?;
        Ok(self.stored(answer(&outcome)))
    }

    /// Appends to `stream_id` the events `decide` makes under the append lock, and replies
    /// with `answer`.
    pub async fn append_decided(
        &self,
        stream_id: String,
        decide: Decide,
        answer: impl Fn(&AppendOutcome) -> StoredResponse + Send + Sync + 'static,
    ) -> Result<Response, ApiError> {
        let answer = Arc::new(answer);
        let outcome = self
            .state
            .store
            .append_decided(
                AppendRequest {
                    stream_id,
                    expected: ExpectedVersion::Any,
                    events: Vec::new(),
                    metadata: self.metadata.clone(),
                    idempotency: self.completion(answer.clone()),
                },
                decide,
            )
            .await
            .map_err(ApiError::store)?;
        Ok(self.stored(answer(&outcome)))
    }

    /// Answers without appending anything; the Idempotency-Key layer stores the answer.
    pub fn answer(&self, response: StoredResponse) -> Response {
        response.into_response()
    }

    async fn execute<A>(
        &self,
        stream: Stream,
        stream_id: &str,
        command: &A::Command,
        answer: Arc<impl Answer<A>>,
    ) -> Result<Executed<A>, CommandError<A::Error>>
    where
        A: RouteAggregate,
    {
        let store = self.state.store.as_ref();
        let completion = |after: &A, events: &[A::Event]| {
            let (after, events, answer) = (after.clone(), events.to_vec(), answer.clone());
            self.completion(Arc::new(move |outcome: &AppendOutcome| {
                answer(&after, &events, outcome)
            }))
        };
        match stream {
            Stream::Existing => {
                execute(store, stream_id, command, &self.metadata, &completion).await
            }
            Stream::New => {
                execute_on_new_stream(store, stream_id, command, &self.metadata, &completion).await
            }
        }
    }

    /// What the append writer needs to store `answer` under the request's Idempotency-Key.
    fn completion(
        &self,
        answer: Arc<dyn Fn(&AppendOutcome) -> StoredResponse + Send + Sync>,
    ) -> Option<IdempotencyCompletion> {
        self.claim.as_ref().map(|claim| IdempotencyCompletion {
            scope: claim.scope.clone(),
            key: claim.key.clone(),
            token: claim.token,
            render: Arc::new(move |outcome| answer(outcome).encode()),
        })
    }

    fn reply<A: Aggregate>(&self, executed: &Executed<A>, response: StoredResponse) -> Response {
        if executed.events.is_empty() {
            self.answer(response)
        } else {
            self.stored(response)
        }
    }

    /// The reply to a command whose events (and so its answer) the writer stored.
    fn stored(&self, response: StoredResponse) -> Response {
        let mut response = response.into_response();
        if self.claim.is_some() {
            response.extensions_mut().insert(StoredByWriter);
        }
        response
    }
}
