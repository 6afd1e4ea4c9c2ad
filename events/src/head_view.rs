//! State the writer keeps at the log's head, for decisions that must see every committed
//! event: a validation judged after a revoke committed, on any node, must answer `REVOKED`, and
//! a daily quota must count every VALID validation, on every node.
//!
//! The writer holds one [`HeadView`]. When a batch carries decisions ([`Decide`]), the round
//! trip that takes the append lock and reads the head also reads the view's event types after
//! the view's position; the writer applies them, calls [`HeadView::begin_decisions`], and then
//! asks each decision for its events, in queue order, still under the lock. After the commit
//! the batch's own events are applied too, so a single node never reads its own events back.

use std::sync::Arc;

use crate::envelope::{Envelope, NewEvent};

/// Decides an append's events under the append lock, after the writer brought its
/// [`HeadView`] up to the head. Called again when the batch is retried append by append, so it
/// must not assume it runs once.
pub type Decide = Arc<dyn Fn() -> Vec<NewEvent> + Send + Sync>;

pub trait HeadView: Send + Sync + 'static {
    /// The event types that change the view; the writer reads only these.
    fn event_types(&self) -> &'static [&'static str];

    /// Every event of those types at or before this position has been applied.
    fn position(&self) -> i64;

    /// Applies committed `events`: every event of the view's types in `(from, through]`, in
    /// position order (others may be among them and are ignored). Events at or before the
    /// view's position are skipped, so the same event handed over twice counts once. If the
    /// view has not reached `from`, events before them are missing: nothing is applied, and
    /// the next catch-up reads them.
    fn advance(&self, from: i64, events: &[Envelope], through: i64);

    /// Called under the append lock once the view is at the head, before the batch's
    /// decisions: what earlier batches decided is now either committed (and applied) or rolled
    /// back, so their tentative effects are dropped.
    fn begin_decisions(&self);
}
