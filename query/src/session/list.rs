//! `GET /v1/sessions?status=&agent_role=&page=&page_size=`: newest first, with the total.

use axum::Json;
use axum::extract::State;
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppQuery, ConsistencyPosition};
use keyledger_events::session::SessionStatus;
use keyledger_projections::session;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{SESSION_COLUMNS, SessionView, session_from_row};
use crate::{ConsistencyHeader, QueryState};

const MAX_PAGE_SIZE: i64 = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// `pending`, `active`, `completed`, `failed` or `expired`.
    #[param(pattern = "^(pending|active|completed|failed|expired)$")]
    pub status: Option<String>,
    /// The agent role, exactly.
    pub agent_role: Option<String>,
    /// The page, from 1 (default 1; at most 1000000).
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<i64>,
    /// Sessions per page: 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<i64>,
}

/// A page of sessions, newest first, with the total.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionPage {
    pub sessions: Vec<SessionView>,
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
}

pub async fn page(
    client: &impl GenericClient,
    status: Option<&str>,
    agent_role: Option<&str>,
    page: i64,
    page_size: i64,
) -> Result<(Vec<SessionView>, i64), tokio_postgres::Error> {
    let filter = "($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR agent_role = $2)";
    let statement = client
        .prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE {filter} \
             ORDER BY created_at DESC, session_id DESC LIMIT $3 OFFSET $4"
        ))
        .await?;
    let offset = (page - 1) * page_size;
    let sessions = client
        .query(&statement, &[&status, &agent_role, &page_size, &offset])
        .await?
        .iter()
        .map(session_from_row)
        .collect::<Result<_, _>>()?;
    let count = client
        .prepare_cached(&format!("SELECT count(*) FROM sessions WHERE {filter}"))
        .await?;
    let total = client
        .query_one(&count, &[&status, &agent_role])
        .await?
        .try_get(0)?;
    Ok((sessions, total))
}

/// Lists sessions, newest first, a numbered page at a time.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "sessions",
    params(ListParams, ConsistencyHeader),
    responses(
        (status = 200, description = "A page of sessions and how many match.", body = SessionPage),
        (status = 400, description = "`VAL_INVALID_PARAMETER`: an unknown `status`, or `page` or `page_size` out of range."),
    ),
)]
pub async fn handle(
    State(state): State<QueryState>,
    ConsistencyPosition(position): ConsistencyPosition,
    AppQuery(params): AppQuery<ListParams>,
) -> Result<Json<SessionPage>, ApiError> {
    let status = match params.status.as_deref() {
        None => None,
        Some(text) => Some(SessionStatus::parse(text).ok_or_else(|| {
            ApiError::invalid_parameter(
                "status",
                "must be one of pending, active, completed, failed, expired",
            )
        })?),
    };
    let page_number = params.page.unwrap_or(1);
    if !(1..=1_000_000).contains(&page_number) {
        return Err(ApiError::invalid_parameter("page", "must be 1 to 1000000"));
    }
    let page_size = params.page_size.unwrap_or(20);
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(ApiError::invalid_parameter(
            "page_size",
            format!("must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    state.consistent(&[session::NAME], position).await?;
    let client = state.client().await?;
    let (sessions, total) = page(
        &client,
        status.map(SessionStatus::as_str),
        params.agent_role.as_deref(),
        page_number,
        page_size,
    )
    .await
    .map_err(ApiError::from)?;
    Ok(Json(SessionPage {
        sessions,
        total,
        page: page_number,
        page_size,
    }))
}
