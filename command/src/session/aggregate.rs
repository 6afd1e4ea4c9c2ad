//! The session aggregate: a strict state machine, pure decide/apply.

use chrono::{DateTime, Utc};
use keyledger_events::session::{
    SessionCreated, SessionEvent, SessionExpired, SessionStatus, SessionTransitioned,
    SessionUpdated,
};
use serde_json::Value;
use uuid::Uuid;

use super::merge_patch::merge_patch;
use crate::execute::Aggregate;
use crate::values::{AgentRole, Reason};

pub use crate::metadata::MAX_METADATA_BYTES;

#[derive(Debug, Clone, Default, PartialEq)]
pub enum Session {
    #[default]
    Absent,
    Existing {
        session_id: Uuid,
        status: SessionStatus,
        task_id: Option<Uuid>,
        metadata: Value,
        created_at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    Create {
        session_id: Uuid,
        agent_role: AgentRole,
        task_id: Option<Uuid>,
        metadata: Value,
        at: DateTime<Utc>,
    },
    Transition {
        to: SessionStatus,
        reason: Option<Reason>,
        at: DateTime<Utc>,
    },
    Update {
        task_id: Option<Uuid>,
        metadata_patch: Option<Value>,
        at: DateTime<Utc>,
    },
    /// The retention job: expire if still open and created at or before `created_before`.
    ExpireForRetention {
        created_before: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    NotFound,
    AlreadyExists,
    InvalidTransition {
        from: SessionStatus,
        to: SessionStatus,
    },
    Terminal(SessionStatus),
    MetadataTooLarge,
    /// The retention job found nothing to do (already closed, or not old enough).
    NotDue,
}

impl Aggregate for Session {
    type Event = SessionEvent;
    type Command = SessionCommand;
    type Error = SessionError;

    fn apply(self, event: &SessionEvent) -> Session {
        if let SessionEvent::SessionCreated(e) = event {
            return Session::Existing {
                session_id: e.session_id,
                status: SessionStatus::Pending,
                task_id: e.task_id,
                metadata: e.metadata.clone(),
                created_at: e.created_at,
            };
        }
        let Session::Existing {
            session_id,
            mut status,
            mut task_id,
            mut metadata,
            created_at,
        } = self
        else {
            return self;
        };
        match event {
            SessionEvent::SessionTransitioned(e) => status = e.to,
            SessionEvent::SessionExpired(_) => status = SessionStatus::Expired,
            SessionEvent::SessionUpdated(e) => {
                task_id = e.task_id.or(task_id);
                metadata = e.metadata.clone();
            }
            SessionEvent::SessionCreated(_) => {}
        }
        Session::Existing {
            session_id,
            status,
            task_id,
            metadata,
            created_at,
        }
    }

    fn decide(&self, command: &SessionCommand) -> Result<Vec<SessionEvent>, SessionError> {
        match (self, command) {
            (
                Session::Absent,
                SessionCommand::Create {
                    session_id,
                    agent_role,
                    task_id,
                    metadata,
                    at,
                },
            ) => Ok(vec![SessionEvent::SessionCreated(SessionCreated {
                session_id: *session_id,
                agent_role: agent_role.to_string(),
                task_id: *task_id,
                metadata: metadata.clone(),
                created_at: *at,
            })]),
            (Session::Existing { .. }, SessionCommand::Create { .. }) => {
                Err(SessionError::AlreadyExists)
            }
            (Session::Absent, _) => Err(SessionError::NotFound),
            (
                Session::Existing {
                    session_id, status, ..
                },
                SessionCommand::Transition { to, reason, at },
            ) => {
                if !status.allowed_targets().contains(to) {
                    return Err(SessionError::InvalidTransition {
                        from: *status,
                        to: *to,
                    });
                }
                Ok(vec![if *to == SessionStatus::Expired {
                    SessionEvent::SessionExpired(SessionExpired {
                        session_id: *session_id,
                        from: *status,
                        reason: reason.as_deref().map(str::to_owned),
                        at: *at,
                    })
                } else {
                    SessionEvent::SessionTransitioned(SessionTransitioned {
                        session_id: *session_id,
                        from: *status,
                        to: *to,
                        reason: reason.as_deref().map(str::to_owned),
                        at: *at,
                    })
                }])
            }
            (Session::Existing { status, .. }, SessionCommand::Update { .. })
                if status.is_terminal() =>
            {
                Err(SessionError::Terminal(*status))
            }
            (
                Session::Existing {
                    session_id,
                    metadata,
                    ..
                },
                SessionCommand::Update {
                    task_id,
                    metadata_patch,
                    at,
                },
            ) => {
                let mut merged = metadata.clone();
                if let Some(patch) = metadata_patch {
                    merge_patch(&mut merged, patch);
                }
                let size = serde_json::to_vec(&merged).map_or(usize::MAX, |v| v.len());
                if size > MAX_METADATA_BYTES {
                    return Err(SessionError::MetadataTooLarge);
                }
                Ok(vec![SessionEvent::SessionUpdated(SessionUpdated {
                    session_id: *session_id,
                    task_id: *task_id,
                    metadata_patch: metadata_patch.clone(),
                    metadata: merged,
                    at: *at,
                })])
            }
            (
                Session::Existing {
                    session_id,
                    status,
                    created_at,
                    ..
                },
                SessionCommand::ExpireForRetention { created_before, at },
            ) => {
                if status.is_terminal() || created_at > created_before {
                    return Err(SessionError::NotDue);
                }
                Ok(vec![SessionEvent::SessionExpired(SessionExpired {
                    session_id: *session_id,
                    from: *status,
                    reason: Some("retention".into()),
                    at: *at,
                })])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;
    use SessionStatus::*;
    use serde_json::json;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn id() -> Uuid {
        Uuid::from_u128(42)
    }

    fn create() -> SessionCommand {
        SessionCommand::Create {
            session_id: id(),
            agent_role: "reviewer".into(),
            task_id: None,
            metadata: json!({"a": 1}),
            at: at(0),
        }
    }

    fn created() -> SessionEvent {
        SessionEvent::SessionCreated(SessionCreated {
            session_id: id(),
            agent_role: "reviewer".into(),
            task_id: None,
            metadata: json!({"a": 1}),
            created_at: at(0),
        })
    }

    fn transition(to: SessionStatus) -> SessionCommand {
        SessionCommand::Transition {
            to,
            reason: Some("because".into()),
            at: at(10),
        }
    }

    /// What `transition(to)` records from `from`.
    fn transitioned(from: SessionStatus, to: SessionStatus) -> SessionEvent {
        if to == Expired {
            return expired(from, "because", 10);
        }
        SessionEvent::SessionTransitioned(SessionTransitioned {
            session_id: id(),
            from,
            to,
            reason: Some("because".into()),
            at: at(10),
        })
    }

    fn expired(from: SessionStatus, reason: &str, on: i64) -> SessionEvent {
        SessionEvent::SessionExpired(SessionExpired {
            session_id: id(),
            from,
            reason: Some(reason.into()),
            at: at(on),
        })
    }

    /// The events that bring a new session to `status`.
    fn history_to(status: SessionStatus) -> Vec<SessionEvent> {
        let path: &[(SessionStatus, SessionStatus)] = match status {
            Pending => &[],
            Active => &[(Pending, Active)],
            Completed => &[(Pending, Active), (Active, Completed)],
            Failed => &[(Pending, Active), (Active, Failed)],
            Expired => &[(Pending, Expired)],
        };
        let steps = path.iter().map(|&(from, to)| transitioned(from, to));
        std::iter::once(created()).chain(steps).collect()
    }

    /// The session `created()` made, in `status`.
    fn session(status: SessionStatus) -> Session {
        Session::Existing {
            session_id: id(),
            status,
            task_id: None,
            metadata: json!({"a": 1}),
            created_at: at(0),
        }
    }

    fn update(metadata_patch: Value) -> SessionCommand {
        SessionCommand::Update {
            task_id: None,
            metadata_patch: Some(metadata_patch),
            at: at(5),
        }
    }

    fn expire_for_retention(created_before: i64) -> SessionCommand {
        SessionCommand::ExpireForRetention {
            created_before: at(created_before),
            at: at(200),
        }
    }

    #[test]
    fn creating_a_session_starts_it_pending() {
        let state = Session::given([]).when(create()).then([created()]);
        assert_eq!(state, session(Pending));
        assert_eq!(Session::given([created()]).state(), &session(Pending));
    }

    #[test]
    fn creating_an_existing_session_is_rejected() {
        Session::given([created()])
            .when(SessionCommand::Create {
                session_id: id(),
                agent_role: "x".into(),
                task_id: None,
                metadata: json!({}),
                at: at(1),
            })
            .then_error(SessionError::AlreadyExists);
    }

    #[test]
    fn every_allowed_transition_succeeds_and_every_other_is_refused() {
        let allowed = [
            (Pending, Active),
            (Pending, Expired),
            (Active, Completed),
            (Active, Failed),
            (Active, Expired),
        ];
        for from in SessionStatus::ALL {
            for to in SessionStatus::ALL {
                let when = Session::given(history_to(from)).when(transition(to));
                if allowed.contains(&(from, to)) {
                    let state = when.then([transitioned(from, to)]);
                    assert_eq!(state, session(to), "{from:?} → {to:?}");
                } else {
                    when.then_error(SessionError::InvalidTransition { from, to });
                }
            }
        }
    }

    #[test]
    fn a_move_to_expired_is_recorded_as_session_expired_with_its_reason() {
        Session::given(history_to(Active))
            .when(transition(Expired))
            .then([expired(Active, "because", 10)]);
    }

    #[test]
    fn transitioning_an_unknown_session_is_not_found() {
        Session::given([])
            .when(transition(Active))
            .then_error(SessionError::NotFound);
    }

    #[test]
    fn updating_merges_the_metadata_patch() {
        let patch = json!({"a": null, "b": {"c": 2}});
        Session::given([created()])
            .when(SessionCommand::Update {
                task_id: Some(Uuid::from_u128(9)),
                metadata_patch: Some(patch.clone()),
                at: at(5),
            })
            .then([SessionEvent::SessionUpdated(SessionUpdated {
                session_id: id(),
                task_id: Some(Uuid::from_u128(9)),
                metadata_patch: Some(patch),
                metadata: json!({"b": {"c": 2}}),
                at: at(5),
            })]);
    }

    #[test]
    fn updating_a_terminal_session_is_rejected() {
        for status in [Completed, Failed, Expired] {
            Session::given(history_to(status))
                .when(update(json!({"x": 1})))
                .then_error(SessionError::Terminal(status));
        }
    }

    #[test]
    fn a_patch_that_makes_the_metadata_too_large_is_rejected() {
        Session::given([created()])
            .when(update(json!({"big": "x".repeat(MAX_METADATA_BYTES)})))
            .then_error(SessionError::MetadataTooLarge);
    }

    #[test]
    fn retention_expires_open_sessions_created_before_the_cutoff() {
        for status in [Pending, Active] {
            Session::given(history_to(status))
                .when(expire_for_retention(100))
                .then([expired(status, "retention", 200)]);
        }
    }

    #[test]
    fn retention_leaves_young_and_closed_sessions_alone() {
        Session::given(history_to(Active))
            .when(expire_for_retention(-1))
            .then_error(SessionError::NotDue);
        for status in [Completed, Failed, Expired] {
            Session::given(history_to(status))
                .when(expire_for_retention(100))
                .then_error(SessionError::NotDue);
        }
    }
}
