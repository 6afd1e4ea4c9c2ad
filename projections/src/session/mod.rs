//! `sessions` and `session_transitions`: the session list, detail and transition history.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use keyledger_events::session::{SessionEvent, SessionStatus};
use keyledger_events::{Envelope, EventPayload, Projection, ProjectionError};

pub struct Sessions;

pub const NAME: &str = "sessions";

#[async_trait]
impl Projection for Sessions {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["sessions", "session_transitions"]
    }

    fn event_types(&self) -> &'static [&'static str] {
        SessionEvent::EVENT_TYPES
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        // Sessions change one event at a time and rarely in bulk: one statement per event,
        // pipelined in order.
        for envelope in events {
            let Some(event) = SessionEvent::decode(envelope)? else {
                continue;
            };
            let actor = envelope
                .metadata
                .get("actor")
                .and_then(|a| a.as_str())
                .map(str::to_owned);
            match event {
                SessionEvent::SessionCreated(e) => {
                    let statement = tx
                        .prepare_cached(
                            "INSERT INTO sessions (session_id, agent_role, task_id, status, metadata, \
                                                   created_at, updated_at, position) \
                             VALUES ($1, $2, $3, 'pending', $4, $5, $5, $6)",
                        )
                        .await?;
                    tx.execute(
                        &statement,
                        &[
                            &e.session_id,
                            &e.agent_role,
                            &e.task_id,
                            &e.metadata,
                            &e.created_at,
                            &envelope.position,
                        ],
                    )
                    .await?;
                }
                SessionEvent::SessionTransitioned(e) => {
                    transition(
                        tx,
                        envelope.position,
                        e.session_id,
                        e.from.as_str(),
                        e.to.as_str(),
                        e.at,
                        e.reason,
                        actor,
                    )
                    .await?;
                }
                SessionEvent::SessionExpired(e) => {
                    transition(
                        tx,
                        envelope.position,
                        e.session_id,
                        e.from.as_str(),
                        SessionStatus::Expired.as_str(),
                        e.at,
                        e.reason,
                        actor,
                    )
                    .await?;
                }
                SessionEvent::SessionUpdated(e) => {
                    let statement = tx
                        .prepare_cached(
                            "UPDATE sessions SET task_id = coalesce($2, task_id), metadata = $3, \
                                                 updated_at = $4, position = $5 \
                             WHERE session_id = $1",
                        )
                        .await?;
                    tx.execute(
                        &statement,
                        &[
                            &e.session_id,
                            &e.task_id,
                            &e.metadata,
                            &e.at,
                            &envelope.position,
                        ],
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one argument per column of the history row"
)]
async fn transition(
    tx: &Transaction<'_>,
    position: i64,
    session_id: uuid::Uuid,
    from: &str,
    to: &str,
    at: chrono::DateTime<chrono::Utc>,
    reason: Option<String>,
    actor: Option<String>,
) -> Result<(), ProjectionError> {
    let update = tx
        .prepare_cached(
            "UPDATE sessions SET status = $2, updated_at = $3, position = $4 WHERE session_id = $1",
        )
        .await?;
    tx.execute(&update, &[&session_id, &to, &at, &position])
        .await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO session_transitions \
                 (session_id, position, from_status, to_status, at, reason, actor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    tx.execute(
        &insert,
        &[&session_id, &position, &from, &to, &at, &reason, &actor],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use keyledger_events::session::{
        SessionCreated, SessionExpired, SessionTransitioned, SessionUpdated, session_stream,
    };
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::testing::{TestDatabase, envelope};

    const S: Uuid = Uuid::from_u128(0x5);

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn on_session(position: i64, event: SessionEvent) -> Envelope {
        envelope(position, &session_stream(S), &event, at(position))
    }

    #[tokio::test]
    async fn a_session_row_follows_its_events_and_each_move_is_a_transition_row() {
        let db = TestDatabase::create().await;
        db.apply(
            &Sessions,
            &[
                on_session(
                    1,
                    SessionEvent::SessionCreated(SessionCreated {
                        session_id: S,
                        agent_role: "reviewer".into(),
                        task_id: None,
                        metadata: json!({"a": 1}),
                        created_at: at(1),
                    }),
                ),
                on_session(
                    2,
                    SessionEvent::SessionTransitioned(SessionTransitioned {
                        session_id: S,
                        from: SessionStatus::Pending,
                        to: SessionStatus::Active,
                        reason: None,
                        at: at(2),
                    }),
                ),
                on_session(
                    3,
                    SessionEvent::SessionUpdated(SessionUpdated {
                        session_id: S,
                        task_id: Some(Uuid::from_u128(9)),
                        metadata_patch: Some(json!({"b": 2})),
                        metadata: json!({"a": 1, "b": 2}),
                        at: at(3),
                    }),
                ),
                on_session(
                    4,
                    SessionEvent::SessionExpired(SessionExpired {
                        session_id: S,
                        from: SessionStatus::Active,
                        reason: Some("retention".into()),
                        at: at(4),
                    }),
                ),
            ],
        )
        .await;
        assert_eq!(
            db.rows(
                "SELECT session_id, agent_role, task_id, status, metadata, created_at, \
                        updated_at, position FROM sessions"
            )
            .await,
            json!([{
                "session_id": S,
                "agent_role": "reviewer",
                "task_id": Uuid::from_u128(9),
                "status": "expired",
                "metadata": {"a": 1, "b": 2},
                "created_at": "2027-01-15T08:00:01+00:00",
                "updated_at": "2027-01-15T08:00:04+00:00",
                "position": 4,
            }])
        );
        assert_eq!(
            db.rows(
                "SELECT session_id, position, from_status, to_status, at, reason, actor \
                 FROM session_transitions ORDER BY position"
            )
            .await,
            json!([
                {
                    "session_id": S,
                    "position": 2,
                    "from_status": "pending",
                    "to_status": "active",
                    "at": "2027-01-15T08:00:02+00:00",
                    "reason": null,
                    "actor": "system",
                },
                {
                    "session_id": S,
                    "position": 4,
                    "from_status": "active",
                    "to_status": "expired",
                    "at": "2027-01-15T08:00:04+00:00",
                    "reason": "retention",
                    "actor": "system",
                },
            ])
        );
        db.drop().await;
    }
}
