//! `GET /v1/sessions/{id}`: the session and its transition history.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppPath, AppQuery, Code, ConsistencyPosition};
use keyledger_events::EventPayload;
use keyledger_events::session::{SessionEvent, SessionStatus, session_stream};
use keyledger_projections::session;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{SESSION_COLUMNS, SessionView, session_from_row};
use crate::events::stream_until;
use crate::{AsOfParams, ConsistencyHeader, QueryState};

/// A change of a session's status.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SessionTransition)]
pub struct Transition {
    pub from: String,
    pub to: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    /// Who made the change (`user:<id>`, `api_key:<id>`, `system`, …).
    pub actor: Option<String>,
}

/// A session with its transitions, oldest first.
#[derive(Debug, Serialize, ToSchema)]
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

/// Folds a session's events, oldest first, as the `sessions` projection applies them (with
/// the actor of each transition from its event's metadata). `None` before it was created.
pub fn fold(events: &[(i64, Option<String>, SessionEvent)]) -> Option<SessionDetail> {
    let mut detail: Option<SessionDetail> = None;
    for (position, actor, event) in events {
        if let SessionEvent::SessionCreated(e) = event {
            detail = Some(SessionDetail {
                session: SessionView {
                    session_id: e.session_id,
                    agent_role: e.agent_role.clone(),
                    task_id: e.task_id,
                    status: "pending".into(),
                    metadata: e.metadata.clone(),
                    created_at: e.created_at,
                    updated_at: e.created_at,
                    position: *position,
                },
                history: Vec::new(),
            });
            continue;
        }
        let Some(detail) = detail.as_mut() else {
            continue;
        };
        let (from, to, at, reason) = match event {
            SessionEvent::SessionTransitioned(e) => {
                (e.from.as_str(), e.to.as_str(), e.at, &e.reason)
            }
            SessionEvent::SessionExpired(e) => (
                e.from.as_str(),
                SessionStatus::Expired.as_str(),
                e.at,
                &e.reason,
            ),
            SessionEvent::SessionUpdated(e) => {
                if e.task_id.is_some() {
                    detail.session.task_id = e.task_id;
                }
                detail.session.metadata = e.metadata.clone();
                detail.session.updated_at = e.at;
                detail.session.position = *position;
                continue;
            }
            SessionEvent::SessionCreated(_) => continue,
        };
        detail.session.status = to.to_owned();
        detail.session.updated_at = at;
        detail.session.position = *position;
        detail.history.push(Transition {
            from: from.to_owned(),
            to: to.to_owned(),
            at,
            reason: reason.clone(),
            actor: actor.clone(),
        });
    }
    detail
}

/// The session as it stood at `as_of`: its events recorded at or before then, folded.
pub async fn at(
    client: &impl GenericClient,
    session_id: Uuid,
    as_of: DateTime<Utc>,
) -> Result<Option<SessionDetail>, ApiError> {
    let mut events = Vec::new();
    for envelope in stream_until(client, &session_stream(session_id), as_of).await? {
        if let Some(event) = SessionEvent::decode(&envelope).map_err(ApiError::internal)? {
            let actor = envelope
                .metadata
                .get("actor")
                .and_then(|a| a.as_str())
                .map(str::to_owned);
            events.push((envelope.position, actor, event));
        }
    }
    Ok(fold(&events))
}

/// Reads a session with its transition history, now or as it stood at an instant.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "The session's id."), AsOfParams, ConsistencyHeader),
    responses(
        (status = 200, description = "The session and its transitions.", body = SessionDetail),
        (status = 404, description = "`RES_SESSION_NOT_FOUND`: no session has this id (or had it at `as_of`)."),
    ),
)]
pub async fn handle(
    State(state): State<QueryState>,
    ConsistencyPosition(position): ConsistencyPosition,
    AppPath(session_id): AppPath<Uuid>,
    AppQuery(params): AppQuery<AsOfParams>,
) -> Result<Json<SessionDetail>, ApiError> {
    if let Some(as_of) = params.as_of {
        let client = state.client().await?;
        return at(&client, session_id, as_of)
            .await?
            .map(Json)
            .ok_or_else(|| {
                ApiError::not_found(
                    Code::ResSessionNotFound,
                    format!("no session had this id at {}", as_of.to_rfc3339()),
                )
            });
    }
    state.consistent(&[session::NAME], position).await?;
    require(&state, session_id).await.map(Json)
}
