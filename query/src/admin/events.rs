//! `/admin/events`: the event log, newest first, filtered by stream, type or correlation id,
//! each event's JSON on demand.

use crate::events::{EventView, event_view};
use axum::extract::State;
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppQuery};
use keyledger_events::store::ENVELOPE_COLUMNS;
use maud::{Markup, html};
use serde::Deserialize;
use utoipa::IntoParams;

use super::licenses::urlencode;
use super::{Section, Viewer, layout, pretty_stored, time};
use crate::QueryState;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only this stream's events (blank: any).
    pub stream_id: Option<String>,
    /// Only events of this type (blank: any).
    pub event_type: Option<String>,
    /// Only the events of this request id (blank: any).
    pub correlation_id: Option<String>,
    /// Show events before this position (the next page of older events).
    pub before: Option<i64>,
}

const PAGE: i64 = 50;

/// What a row's JSON shows: the stored JSON as it is, and the event's identity.
#[derive(serde::Serialize)]
struct Shown<'a> {
    data: &'a serde_json::value::RawValue,
    metadata: &'a serde_json::value::RawValue,
    event_id: uuid::Uuid,
    #[serde(with = "hex::serde")]
    hash: &'a [u8],
}

async fn newest(
    client: &impl GenericClient,
    stream_id: Option<&str>,
    event_type: Option<&str>,
    correlation_id: Option<&str>,
    before: i64,
) -> Result<Vec<EventView>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events \
             WHERE position < $4 \
               AND ($1::text IS NULL OR stream_id = $1) \
               AND ($2::text IS NULL OR event_type = $2) \
               AND ($3::text IS NULL OR metadata ->> 'correlation_id' = $3) \
             ORDER BY position DESC LIMIT $5"
        ))
        .await?;
    client
        .query(
            &statement,
            &[&stream_id, &event_type, &correlation_id, &before, &PAGE],
        )
        .await?
        .iter()
        .map(event_view)
        .collect()
}

/// The event log page, newest first, filtered, with a live mode.
#[utoipa::path(
    get,
    path = "/admin/events",
    tag = "admin hub",
    params(EventParams),
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String),
        (status = 303, description = "No credentials: to the login page, which comes back here after the login.", headers(("Location" = String, description = "`/admin/login`, with `next` naming this page."))),
    ),
)]
pub async fn list(
    State(state): State<QueryState>,
    viewer: Viewer,
    AppQuery(params): AppQuery<EventParams>,
) -> Result<Markup, ApiError> {
    let blank = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let stream_id = blank(&params.stream_id);
    let event_type = blank(&params.event_type);
    let correlation_id = blank(&params.correlation_id);
    let client = state.client().await?;
    let events = newest(
        &client,
        stream_id.as_deref(),
        event_type.as_deref(),
        correlation_id.as_deref(),
        params.before.unwrap_or(i64::MAX),
    )
    .await
    .map_err(ApiError::from)?;
    let filters: String = [
        ("stream_id", &stream_id),
        ("event_type", &event_type),
        ("correlation_id", &correlation_id),
    ]
    .iter()
    .filter_map(|(n, v)| v.as_deref().map(|v| format!("{n}={}&", urlencode(v))))
    .collect();
    let older = (events.len() as i64 == PAGE)
        .then(|| {
            events
                .last()
                .map(|e| format!("/admin/events?{filters}before={}", e.position))
        })
        .flatten();
    Ok(layout(
        &viewer,
        "Event log",
        Section::Events,
        html! {
            form.filters method="get" action="/admin/events" {
                label { "Stream" input name="stream_id" value=[stream_id.as_deref()] placeholder="license-…"; }
                label { "Type" input name="event_type" value=[event_type.as_deref()] placeholder="LicenseRevoked"; }
                label { "Correlation id" input name="correlation_id" value=[correlation_id.as_deref()]; }
                button type="submit" { "Filter" }
            }
            // Live mode (the newest page only): new events are added at the top as they are
            // committed, through the log's Server-Sent Events, with the same filters.
            @if params.before.is_none() {
                div.actions {
                    button.secondary #live-toggle type="button" aria-pressed="false"
                        data-after=(events.first().map_or(0, |e| e.position))
                        data-type=[event_type.as_deref()] data-stream=[stream_id.as_deref()]
                        data-correlation=[correlation_id.as_deref()] { "Live" }
                    span #live-status.muted role="status" {}
                }
            }
            div.table-wrap {
                table #events {
                    thead { tr { th { "Position" } th { "Type" } th { "Stream" } th { "Version" } th { "Recorded" } th { "Event" } } }
                    tbody {
                        @for e in &events {
                            tr {
                                td { (e.position) }
                                td { (e.event_type) }
                                td.wrap { a href={ "/admin/events?stream_id=" (urlencode(&e.stream_id)) } { (e.stream_id) } }
                                td { (e.version) }
                                td { (time(e.recorded_at)) }
                                td.wrap {
                                    details {
                                        summary { "JSON" }
                                        pre { (pretty_stored(&Shown {
                                            data: &e.data, metadata: &e.metadata, event_id: e.event_id,
                                            hash: &e.hash,
                                        })) }
                                    }
                                }
                            }
                        }
                        @if events.is_empty() { tr { td colspan="6" { "No event matches." } } }
                    }
                }
            }
            div.pager {
                @if params.before.is_some() { a href={ "/admin/events?" (filters) } { "Newest" } }
                @if let Some(href) = older { a href=(href) { "Older" } }
            }
        },
    ))
}
