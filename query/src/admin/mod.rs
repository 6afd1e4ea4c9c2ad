//! The admin hub: server-rendered pages for operators (licenses, requests, sessions, events),
//! with a little vanilla JavaScript over the JSON API. Nothing is fetched from elsewhere.

mod events;
mod hub;
mod licenses;
mod requests;
mod sessions;

use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use keyledger_api::Routes;
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
        .get("/admin/static/admin.css", css)
        .get("/admin/static/admin.js", js)
        .with_state(state)
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("static/admin.css"),
    )
}

async fn js() -> impl IntoResponse {
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
}

/// The page around every admin view.
fn layout(title: &str, section: Section, body: Markup) -> Markup {
    let link = |href: &str, label: &str, this: Section| {
        html! {
            li { a href=(href) aria-current=[(section == this).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
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
                            (link("/admin/licenses", "Licenses", Section::Licenses))
                            (link("/admin/requests", "Requests", Section::Requests))
                            (link("/admin/sessions", "Sessions", Section::Sessions))
                            (link("/admin/events", "Events", Section::Events))
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
