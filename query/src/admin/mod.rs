//! The admin hub: server-rendered pages for operators (licenses, requests, sessions, events),
//! with a little vanilla JavaScript over the JSON API. Nothing is fetched from elsewhere.

pub(crate) mod api;
pub(crate) mod events;
pub(crate) mod hub;
pub(crate) mod licenses;
pub(crate) mod requests;
pub(crate) mod sessions;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use keyledger_api::session::CookieSession;
use keyledger_api::{ApiError, Permission, Principal, Routes};
use maud::{DOCTYPE, Markup, html};

use crate::QueryState;

pub fn router(state: QueryState) -> Routes {
    Routes::new()
        .get("/admin", hub::page)
        .get("/admin/licenses", licenses::list)
        .get("/admin/licenses/{id}", licenses::detail)
        .get("/admin/requests", requests::list)
        .get("/admin/sessions", sessions::list)
        .get("/admin/sessions/{id}", sessions::detail)
        .get("/admin/events", events::list)
        .get("/admin/api", api::page)
        .get("/admin/static/admin.css", css)
        .get("/admin/static/admin.js", js)
        .map(|router| {
            router.layer(axum::middleware::from_fn(
                keyledger_api::session::admin_headers,
            ))
        })
        .with_state(state)
}

/// Who is looking at a page: the principal (the `authorize` layer let it through), how to name
/// it in the header, and the session's CSRF token when a cookie authenticated the request.
pub struct Viewer {
    pub principal: Principal,
    /// The user's email, or what else the principal is.
    pub name: String,
    pub csrf_token: Option<String>,
}

impl Viewer {
    pub fn may(&self, permission: Permission) -> bool {
        self.principal.has(permission)
    }
}

impl FromRequestParts<QueryState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &QueryState,
    ) -> Result<Self, Self::Rejection> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or(Principal::Anonymous);
        let csrf_token = parts
            .extensions
            .get::<CookieSession>()
            .map(|session| session.csrf_token.clone());
        let name = match &principal {
            Principal::User { id, .. } => {
                // The primary: the users table is maintained there, inline.
                let client = state.primary.get().await.map_err(ApiError::from)?;
                client
                    .query_opt("SELECT email FROM users WHERE user_id = $1", &[id])
                    .await
                    .map_err(ApiError::from)?
                    .and_then(|row| row.try_get::<_, String>(0).ok())
                    .unwrap_or_else(|| format!("user {id}"))
            }
            Principal::Bootstrap => "admin token".to_owned(),
            Principal::ApiKey { id, .. } => format!("API key {id}"),
            Principal::License { license_id } => format!("license {license_id}"),
            Principal::Anonymous => "anonymous".to_owned(),
        };
        Ok(Viewer {
            principal,
            name,
            csrf_token,
        })
    }
}

/// The admin hub's style sheet.
#[utoipa::path(
    get,
    path = "/admin/static/admin.css",
    tag = "admin hub",
    responses(
        (status = 200, description = "The style sheet (cacheable for 5 minutes).", content_type = "text/css", body = String),
    ),
)]
pub(crate) async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("static/admin.css"),
    )
}

/// The admin hub's script.
#[utoipa::path(
    get,
    path = "/admin/static/admin.js",
    tag = "admin hub",
    responses(
        (status = 200, description = "The script (cacheable for 5 minutes).", content_type = "text/javascript", body = String),
    ),
)]
pub(crate) async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("static/admin.js"),
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Hub,
    Licenses,
    Requests,
    Sessions,
    Events,
    Api,
}

/// The page around every admin view: links only to the sections the viewer may read, who is
/// logged in, and the logout button of a cookie session.
fn layout(viewer: &Viewer, title: &str, section: Section, body: Markup) -> Markup {
    let link = |href: &str, label: &str, this: Section| {
        html! {
            li { a href=(href) aria-current=[(section == this).then_some("page")] { (label) } }
        }
    };
    let role = viewer.principal.role().map(|role| role.as_str());
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(token) = &viewer.csrf_token {
                    meta name="csrf-token" content=(token);
                }
                title { (title) " · keyledger admin" }
                link rel="stylesheet" href="/admin/static/admin.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    a.brand href="/admin" { "keyledger" }
                    nav aria-label="Sections" {
                        ul {
                            (link("/admin", "Hub", Section::Hub))
                            @if viewer.may(Permission::LicensesRead) {
                                (link("/admin/licenses", "Licenses", Section::Licenses))
                            }
                            @if viewer.may(Permission::RequestsRead) {
                                (link("/admin/requests", "Requests", Section::Requests))
                            }
                            @if viewer.may(Permission::SessionsRead) {
                                (link("/admin/sessions", "Sessions", Section::Sessions))
                            }
                            @if viewer.may(Permission::EventsRead) {
                                (link("/admin/events", "Events", Section::Events))
                            }
                            (link("/admin/api", "API", Section::Api))
                        }
                    }
                    div.who #who {
                        span #who-name { (viewer.name) }
                        @if let Some(role) = role { " " span.role #who-role { (role) } }
                        @if let Some(token) = &viewer.csrf_token {
                            form.logout #logout-form method="post" action="/admin/logout" {
                                input type="hidden" name="csrf_token" value=(token);
                                button.secondary type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
                script src="/admin/static/admin.js" defer {}
            }
        }
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A license's end: its time, or "never" for a perpetual license.
fn expiry(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "never".to_owned(), time)
}

fn status_class(status: &str) -> String {
    format!("status status-{status}")
}

/// Pretty JSON for a `<pre>`.
fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Stored JSON for a person: indented when it parses, as stored when it does not (a row
/// written around the service may hold numbers no parser takes).
fn pretty_stored(value: &impl serde::Serialize) -> String {
    let compact = serde_json::to_string(value).unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(&compact) {
        Ok(parsed) => pretty(&parsed),
        Err(_) => compact,
    }
}
