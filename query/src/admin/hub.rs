//! `/admin`: a card per area the viewer may read, with live counts.

use axum::extract::State;
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, Permission};
use keyledger_events::license::LicenseStatus;
use keyledger_events::session::SessionStatus;
use maud::{Markup, html};

use super::{Section, Viewer, layout};
use crate::QueryState;

struct Counts {
    active_licenses: i64,
    active_sessions: i64,
    requests_last_hour: i64,
    projection_lag: i64,
}

async fn counts(client: &impl GenericClient) -> Result<Counts, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT \
               (SELECT count(*) FROM licenses \
                 WHERE status = $1 AND (expires_at IS NULL OR expires_at > now())), \
               (SELECT count(*) FROM sessions WHERE status = $2), \
               (SELECT count(*) FROM api_requests WHERE at > now() - interval '1 hour'), \
               (SELECT coalesce(max(position), 0) FROM events) \
                 - (SELECT coalesce(min(position), 0) FROM checkpoints \
                    WHERE name NOT LIKE 'relay:%' AND name NOT IN ('license_validation', 'users'))",
            &[&LicenseStatus::Active, &SessionStatus::Active.as_str()],
        )
        .await?;
    Ok(Counts {
        active_licenses: row.try_get(0)?,
        active_sessions: row.try_get(1)?,
        requests_last_hour: row.try_get(2)?,
        projection_lag: row.try_get::<_, i64>(3)?.max(0),
    })
}

/// The admin hub's home page: a card per area the viewer may read, with live counts.
#[utoipa::path(
    get,
    path = "/admin",
    tag = "admin hub",
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String),
        (status = 303, description = "No credentials: to the login page, which comes back here after the login.", headers(("Location" = String, description = "`/admin/login`, with `next` naming this page."))),
    ),
)]
pub async fn page(State(state): State<QueryState>, viewer: Viewer) -> Result<Markup, ApiError> {
    let client = state.client().await?;
    let counts = counts(&client).await.map_err(ApiError::from)?;
    let card = |href: &str, count: i64, label: &str, id: &str| {
        html! {
            a.card href=(href) id=(id) {
                span.count { (count) }
                span.label { (label) }
            }
        }
    };
    Ok(layout(
        &viewer,
        "Operations hub",
        Section::Hub,
        html! {
            div.cards {
                @if viewer.may(Permission::LicensesRead) {
                    (card("/admin/licenses?status=active", counts.active_licenses, "active licenses", "card-licenses"))
                }
                @if viewer.may(Permission::SessionsRead) {
                    (card("/admin/sessions?status=active", counts.active_sessions, "active sessions", "card-sessions"))
                }
                @if viewer.may(Permission::RequestsRead) {
                    (card("/admin/requests", counts.requests_last_hour, "requests in the last hour", "card-requests"))
                }
                @if viewer.may(Permission::EventsRead) {
                    (card("/admin/events", counts.projection_lag, "events the slowest projection has yet to apply", "card-lag"))
                }
            }
            p.muted { "Counts are read from the projections when the page loads." }
        },
    ))
}
