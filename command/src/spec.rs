//! Given/when/then for aggregates, the one way their rules are tested:
//!
//! ```text
//! License::given([issued()]).when(revoke()).then([revoked()]);
//! License::given([]).when(revoke()).then_error(LicenseError::NotFound);
//! ```
//!
//! `given` applies the history, in order, to the empty aggregate; `when` decides the command
//! once; `then` and `then_error` compare the whole outcome with `assert_eq!`, at the test's
//! line, so a failure shows the difference.

use std::fmt::Debug;

use crate::execute::Aggregate;

/// Every aggregate can be specified.
pub trait Spec: Aggregate {
    /// The aggregate after these events.
    fn given(history: impl IntoIterator<Item = Self::Event>) -> Given<Self> {
        let state = history
            .into_iter()
            .fold(Self::default(), |state, event| state.apply(&event));
        Given { state }
    }
}

impl<A: Aggregate> Spec for A {}

pub struct Given<A> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    pub fn when(self, command: A::Command) -> When<A> {
        let outcome = self.state.decide(&command);
        When {
            state: self.state,
            outcome,
        }
    }

    /// The aggregate the history built.
    pub fn state(&self) -> &A {
        &self.state
    }
}

pub struct When<A: Aggregate> {
    state: A,
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A> When<A>
where
    A: Aggregate + Debug,
    A::Event: Debug + PartialEq,
    A::Error: Debug + PartialEq,
{
    /// The command records exactly these events; returns the aggregate after them.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        assert_eq!(self.outcome, Ok(expected));
        let events = self.outcome.unwrap_or_default();
        events
            .iter()
            .fold(self.state, |state, event| state.apply(event))
    }

    /// The command is refused with exactly this error.
    #[track_caller]
    pub fn then_error(self, expected: A::Error) {
        assert_eq!(self.outcome, Err(expected));
    }
}
