//! The projection interface: a named, versioned handler that applies events in a transaction.
//!
//! The writer calls inline projections inside the append transaction; the projector runtime
//! (in the `projections` crate) calls the others in batches, with their checkpoint.

use async_trait::async_trait;
use deadpool_postgres::Transaction;

use crate::envelope::Envelope;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Decode(#[from] crate::payload::DecodeError),
}

#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name, also the checkpoint's name.
    fn name(&self) -> &'static str;

    /// Bumped when the projection's output changes: the runtime then rebuilds it.
    fn version(&self) -> i32;

    /// The read tables this projection owns (rebuilt in a shadow schema and swapped in).
    fn tables(&self) -> &'static [&'static str];

    /// The event types it applies; the runtime reads only these (and still advances the
    /// checkpoint past the others).
    fn event_types(&self) -> &'static [&'static str];

    /// Applies events in position order. Events of types the projection ignores are skipped.
    async fn apply(&self, tx: &Transaction<'_>, events: &[Envelope])
    -> Result<(), ProjectionError>;
}
