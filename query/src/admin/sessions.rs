//! `/admin/sessions`: sessions by status with counts, and a session's transition history.

use axum::extract::State;
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppPath, AppQuery};
use keyledger_events::session::SessionStatus;
use maud::{Markup, html};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::{Section, Viewer, layout, pretty, status_class, time};
use crate::QueryState;
use crate::session::get::require;
use crate::session::list::page;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `pending`, `active`, `completed`, `failed` or `expired`; anything else shows every status.
    pub status: Option<String>,
    /// The page, from 1 (out of range: the nearest page).
    pub page: Option<i64>,
}

async fn counts(client: &impl GenericClient) -> Result<Vec<(String, i64)>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT status, count(*) FROM sessions GROUP BY status", &[])
        .await?;
    let mut counts = Vec::new();
    for status in SessionStatus::ALL {
        let n = rows
            .iter()
            .find(|r| {
                r.try_get::<_, String>(0)
                    .is_ok_and(|s| s == status.as_str())
            })
            .and_then(|r| r.try_get(1).ok())
            .unwrap_or(0);
        counts.push((status.as_str().to_owned(), n));
    }
    Ok(counts)
}

/// The sessions page: counts by status and a page of sessions.
#[utoipa::path(
    get,
    path = "/admin/sessions",
    tag = "admin hub",
    params(ListParams),
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String),
        (status = 303, description = "No credentials: to the login page, which comes back here after the login.", headers(("Location" = String, description = "`/admin/login`, with `next` naming this page."))),
    ),
)]
pub async fn list(
    State(state): State<QueryState>,
    viewer: Viewer,
    AppQuery(params): AppQuery<ListParams>,
) -> Result<Markup, ApiError> {
    let status = params.status.as_deref().and_then(SessionStatus::parse);
    let page_number = params.page.unwrap_or(1).clamp(1, 1_000_000);
    let client = state.client().await?;
    let counts = counts(&client).await.map_err(ApiError::from)?;
    let (sessions, total) = page(
        &client,
        status.map(SessionStatus::as_str),
        None,
        page_number,
        25,
    )
    .await
    .map_err(ApiError::from)?;
    let status_query = status
        .map(|s| format!("status={}&", s.as_str()))
        .unwrap_or_default();
    Ok(layout(
        &viewer,
        "Agent sessions",
        Section::Sessions,
        html! {
            nav.counts aria-label="Sessions by status" {
                a href="/admin/sessions" aria-current=[status.is_none().then_some("page")] { "all" }
                @for (name, n) in &counts {
                    a href={ "/admin/sessions?status=" (name) } aria-current=[(status.map(|s| s.as_str()) == Some(name.as_str())).then_some("page")] {
                        (name) ": " span.count-value data-status=(name) { (n) }
                    }
                }
            }
            div.table-wrap {
                table #sessions {
                    thead { tr { th { "Session" } th { "Role" } th { "Status" } th { "Task" } th { "Created" } th { "Updated" } } }
                    tbody {
                        @for s in &sessions {
                            tr {
                                td { a href={ "/admin/sessions/" (s.session_id) } { (s.session_id.to_string()[..8]) "…" } }
                                td { (s.agent_role) }
                                td { span class=(status_class(&s.status)) { (s.status) } }
                                td { (s.task_id.map(|t| t.to_string()).unwrap_or_default()) }
                                td { (time(s.created_at)) }
                                td { (time(s.updated_at)) }
                            }
                        }
                        @if sessions.is_empty() { tr { td colspan="6" { "No session." } } }
                    }
                }
            }
            div.pager {
                @if page_number > 1 { a href={ "/admin/sessions?" (status_query) "page=" (page_number - 1) } { "Previous" } }
                @if page_number * 25 < total { a href={ "/admin/sessions?" (status_query) "page=" (page_number + 1) } { "Next" } }
                span.muted { (total) " sessions" }
            }
        },
    ))
}

/// A session's page, with its transitions.
#[utoipa::path(
    get,
    path = "/admin/sessions/{id}",
    tag = "admin hub",
    params(("id" = Uuid, Path, description = "The session's id.")),
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String),
        (status = 303, description = "No credentials: to the login page, which comes back here after the login.", headers(("Location" = String, description = "`/admin/login`, with `next` naming this page."))),
        (status = 404, description = "`RES_SESSION_NOT_FOUND`: no session has this id."),
        (status = 503, description = "`SYS_CONSISTENCY_TIMEOUT`: the read tables did not catch up with the session in time."),
    ),
)]
pub async fn detail(
    State(state): State<QueryState>,
    viewer: Viewer,
    AppPath(session_id): AppPath<Uuid>,
) -> Result<Markup, ApiError> {
    let detail = require(&state, session_id).await?;
    let s = &detail.session;
    Ok(layout(
        &viewer,
        &format!("Session {}", &s.session_id.to_string()[..8]),
        Section::Sessions,
        html! {
            dl.facts {
                dt { "Session id" } dd { code { (s.session_id) } }
                dt { "Agent role" } dd { (s.agent_role) }
                dt { "Status" } dd { span class=(status_class(&s.status)) { (s.status) } }
                dt { "Task" } dd { (s.task_id.map(|t| t.to_string()).unwrap_or_default()) }
                dt { "Created" } dd { (time(s.created_at)) }
                dt { "Metadata" } dd { pre { (pretty(&s.metadata)) } }
            }
            h2 { "Transitions" }
            div.table-wrap {
                table #transitions {
                    thead { tr { th { "From" } th { "To" } th { "When" } th { "Reason" } th { "Actor" } } }
                    tbody {
                        @for t in &detail.history {
                            tr {
                                td { (t.from) } td { (t.to) } td { (time(t.at)) }
                                td.wrap { (t.reason.as_deref().unwrap_or("")) }
                                td { (t.actor.as_deref().unwrap_or("")) }
                            }
                        }
                        @if detail.history.is_empty() { tr { td colspan="5" { "No transition yet." } } }
                    }
                }
            }
        },
    ))
}
