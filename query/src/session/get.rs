//! `GET /v1/sessions/{id}`: the session and its transition history.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppPath, Code, ConsistencyPosition};
use keyledger_events::session::session_stream;
use keyledger_projections::session;
use serde::Serialize;
use uuid::Uuid;

use super::{SESSION_COLUMNS, SessionView, session_from_row};
use crate::QueryState;

#[derive(Debug, Serialize)]
pub struct Transition {
    pub from: String,
    pub to: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    pub actor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub session: SessionView,
    pub history: Vec<Transition>,
}

pub async fn find(
    client: &impl GenericClient,
    session_id: Uuid,
) -> Result<Option<SessionDetail>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = $1"
        ))
        .await?;
    let Some(row) = client.query_opt(&statement, &[&session_id]).await? else {
        return Ok(None);
    };
    let session = session_from_row(&row)?;
    let statement = client
        .prepare_cached(
            "SELECT from_status, to_status, at, reason, actor FROM session_transitions \
             WHERE session_id = $1 ORDER BY position",
        )
        .await?;
    let history = client
        .query(&statement, &[&session_id])
        .await?
        .iter()
        .map(|row| {
            Ok(Transition {
                from: row.try_get(0)?,
                to: row.try_get(1)?,
                at: row.try_get(2)?,
                reason: row.try_get(3)?,
                actor: row.try_get(4)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()?;
    Ok(Some(SessionDetail { session, history }))
}

/// The session with its history, or 404 `RES_SESSION_NOT_FOUND` when the log has no such
/// session; a session the `sessions` table has not applied yet is waited for.
pub async fn require(state: &QueryState, session_id: Uuid) -> Result<SessionDetail, ApiError> {
    state
        .found(
            &session_stream(session_id),
            &[session::NAME],
            |client| async move { find(&client, session_id).await },
            || ApiError::not_found(Code::ResSessionNotFound, "no session has this id"),
        )
        .await
}

pub async fn handle(
    State(state): State<QueryState>,
    ConsistencyPosition(position): ConsistencyPosition,
    AppPath(session_id): AppPath<Uuid>,
) -> Result<Json<SessionDetail>, ApiError> {
    state.consistent(&[session::NAME], position).await?;
    require(&state, session_id).await.map(Json)
}
