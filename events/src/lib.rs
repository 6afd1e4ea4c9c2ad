//! The event log: event types, envelopes, the PostgreSQL event store with group commit, the
//! ordered `$all` reader, the hash chain and its verifier, and the NATS JetStream relay.

pub mod api_key;
pub mod audit;
pub mod chain;
pub mod db;
pub mod envelope;
pub mod failure;
pub mod head_view;
pub mod key_file;
pub mod lease;
pub mod license;
pub mod notifier;
pub mod payload;
pub mod projection;
pub mod relay;
pub mod request;
pub mod session;
pub mod store;
pub mod user;
pub mod verify;
pub mod writer;

pub use envelope::{Envelope, ExpectedVersion, Metadata, NewEvent};
pub use head_view::{Decide, HeadView};
pub use notifier::Notifier;
pub use payload::{DecodeError, EventPayload};
pub use projection::{Projection, ProjectionError};
pub use store::{
    AppendOutcome, AppendRequest, EventStore, IdempotencyCompletion, PgEventStore, ReadError,
    RenderReceipt, StoreError, UnreadableEvent, WriterConfig,
};
