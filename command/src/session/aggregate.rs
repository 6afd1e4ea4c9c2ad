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
        agent_role: String,
        task_id: Option<Uuid>,
        metadata: Value,
        at: DateTime<Utc>,
    },
    Transition {
        to: SessionStatus,
        reason: Option<String>,
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
                agent_role: agent_role.clone(),
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
                        reason: reason.clone(),
                        at: *at,
                    })
                } else {
                    SessionEvent::SessionTransitioned(SessionTransitioned {
                        session_id: *session_id,
                        from: *status,
                        to: *to,
                        reason: reason.clone(),
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
    use SessionStatus::*;
    use serde_json::json;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn id() -> Uuid {
        Uuid::from_u128(42)
    }

    fn created() -> SessionEvent {
        Session::Absent
            .decide(&SessionCommand::Create {
                session_id: id(),
                agent_role: "reviewer".into(),
                task_id: None,
                metadata: json!({"a": 1}),
                at: at(0),
            })
            .unwrap()
            .remove(0)
    }

    fn given(events: &[SessionEvent]) -> Session {
        events.iter().fold(Session::default(), Session::apply)
    }

    fn transition(to: SessionStatus) -> SessionCommand {
        SessionCommand::Transition {
            to,
            reason: Some("because".into()),
            at: at(10),
        }
    }

    /// The events that bring a new session to `status`.
    fn history_to(status: SessionStatus) -> Vec<SessionEvent> {
        let mut events = vec![created()];
        let path: &[SessionStatus] = match status {
            Pending => &[],
            Active => &[Active],
            Completed => &[Active, Completed],
            Failed => &[Active, Failed],
            Expired => &[Expired],
        };
        for step in path {
            let event = given(&events).decide(&transition(*step)).unwrap().remove(0);
            events.push(event);
        }
        events
    }

    #[test]
    fn creating_a_session_starts_it_pending() {
        let state = given(&[created()]);
        assert!(matches!(
            state,
            Session::Existing {
                status: Pending,
                ..
            }
        ));
    }

    #[test]
    fn creating_an_existing_session_is_rejected() {
        let command = SessionCommand::Create {
            session_id: id(),
            agent_role: "x".into(),
            task_id: None,
            metadata: json!({}),
            at: at(1),
        };
        assert_eq!(
            given(&[created()]).decide(&command),
            Err(SessionError::AlreadyExists)
        );
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
                let result = given(&history_to(from)).decide(&transition(to));
                if allowed.contains(&(from, to)) {
                    let events = result.unwrap_or_else(|e| panic!("{from:?} → {to:?}: {e:?}"));
                    let state = given(&[history_to(from), events].concat());
                    assert!(
                        matches!(state, Session::Existing { status, .. } if status == to),
                        "{from:?} → {to:?}"
                    );
                } else {
                    assert_eq!(
                        result,
                        Err(SessionError::InvalidTransition { from, to }),
                        "{from:?} → {to:?} must be refused"
                    );
                }
            }
        }
    }

    #[test]
    fn a_move_to_expired_is_recorded_as_session_expired_with_its_reason() {
        let events = given(&history_to(Active))
            .decide(&transition(Expired))
            .unwrap();
        assert!(
            matches!(&events[..], [SessionEvent::SessionExpired(e)] if e.from == Active && e.reason.as_deref() == Some("because"))
        );
    }

    #[test]
    fn transitioning_an_unknown_session_is_not_found() {
        assert_eq!(
            given(&[]).decide(&transition(Active)),
            Err(SessionError::NotFound)
        );
    }

    #[test]
    fn updating_merges_the_metadata_patch() {
        let update = SessionCommand::Update {
            task_id: Some(Uuid::from_u128(9)),
            metadata_patch: Some(json!({"a": null, "b": {"c": 2}})),
            at: at(5),
        };
        let events = given(&[created()]).decide(&update).unwrap();
        assert!(
            matches!(&events[..], [SessionEvent::SessionUpdated(e)] if e.metadata == json!({"b": {"c": 2}}) && e.task_id == Some(Uuid::from_u128(9)))
        );
    }

    #[test]
    fn updating_a_terminal_session_is_rejected() {
        for status in [Completed, Failed, Expired] {
            let update = SessionCommand::Update {
                task_id: None,
                metadata_patch: Some(json!({"x": 1})),
                at: at(5),
            };
            assert_eq!(
                given(&history_to(status)).decide(&update),
                Err(SessionError::Terminal(status))
            );
        }
    }

    #[test]
    fn a_patch_that_makes_the_metadata_too_large_is_rejected() {
        let update = SessionCommand::Update {
            task_id: None,
            metadata_patch: Some(json!({"big": "x".repeat(MAX_METADATA_BYTES)})),
            at: at(5),
        };
        assert_eq!(
            given(&[created()]).decide(&update),
            Err(SessionError::MetadataTooLarge)
        );
    }

    #[test]
    fn retention_expires_open_sessions_created_before_the_cutoff() {
        let expire = SessionCommand::ExpireForRetention {
            created_before: at(100),
            at: at(200),
        };
        for status in [Pending, Active] {
            let events = given(&history_to(status)).decide(&expire).unwrap();
            assert!(
                matches!(&events[..], [SessionEvent::SessionExpired(e)] if e.from == status && e.reason.as_deref() == Some("retention"))
            );
        }
    }

    #[test]
    fn retention_leaves_young_and_closed_sessions_alone() {
        let too_early = SessionCommand::ExpireForRetention {
            created_before: at(-1),
            at: at(200),
        };
        assert_eq!(
            given(&history_to(Active)).decide(&too_early),
            Err(SessionError::NotDue)
        );
        let expire = SessionCommand::ExpireForRetention {
            created_before: at(100),
            at: at(200),
        };
        for status in [Completed, Failed, Expired] {
            assert_eq!(
                given(&history_to(status)).decide(&expire),
                Err(SessionError::NotDue)
            );
        }
    }
}
