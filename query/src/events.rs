//! `GET /v1/events` (the ordered `$all` read, for auditors) and
//! `GET /v1/streams/{stream_id}/events`.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppPath, AppQuery};
use keyledger_events::Envelope;
use keyledger_events::store::{ENVELOPE_COLUMNS, JsonText};
use keyledger_events::verify::read_stored;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};

use crate::{QueryState, page_limit};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// Position (for `$all`) or version (for a stream) to read after: 0 or more (default 0).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Events per page: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// An event as the API shows it: `data` and `metadata` are the stored JSON text itself.
pub type EventView = Envelope<Box<RawValue>>;

pub(crate) fn event_view(row: &Row) -> Result<EventView, tokio_postgres::Error> {
    Ok(Envelope::<JsonText>::from_row(row)?.map_json(raw_json))
}

/// Stored JSON as it is. Text that is valid JSON for PostgreSQL but beyond what the JSON
/// writer takes (nesting deeper than 128) is shown as a JSON string of the text.
fn raw_json(JsonText(text): JsonText) -> Box<RawValue> {
    RawValue::from_string(text.clone()).unwrap_or_else(|_| {
        let quoted = serde_json::to_string(&text).unwrap_or_else(|_| "null".to_owned());
        RawValue::from_string(quoted).unwrap_or_default()
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Export the events after this position: 0 or more (default 0: from the first).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Up to and including this position, not before `after` (default: the head when the
    /// export starts).
    #[param(minimum = 0)]
    pub until: Option<i64>,
}

/// Events read per page of an export: memory stays bounded by one page whatever the range.
const EXPORT_PAGE: i64 = 1000;

/// Exports the event log as NDJSON, for `keyledger verify --file`.
///
/// One event a line with every field the hash chain covers (`keyledger verify --file` checks
/// it without a database). The range is fixed when the export starts; pages are read one at a
/// time on a pooled connection, so a whole log streams in constant memory. A failure midway
/// cuts the response off rather than ending it cleanly.
#[utoipa::path(
    get,
    path = "/v1/events/export",
    tag = "events",
    params(ExportParams),
    responses(
        (status = 200, description = "The events after `after` up to `until`, one JSON object a line.", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "`VAL_INVALID_PARAMETER`: `after` is negative or `until` is before it."),
    ),
)]
pub async fn export(
    State(state): State<QueryState>,
    AppQuery(params): AppQuery<ExportParams>,
) -> Result<Response, ApiError> {
    let after = after(&LogParams {
        after: params.after,
        limit: None,
    })?;
    let until = match params.until {
        Some(until) if until < after => {
            return Err(ApiError::invalid_parameter(
                "until",
                "must not be before `after`",
            ));
        }
        Some(until) => until,
        None => state
            .client()
            .await?
            .query_one("SELECT coalesce(max(position), 0) FROM events", &[])
            .await?
            .try_get(0)?,
    };
    let pool = state.pool.clone();
    let pages = futures::stream::try_unfold(after, move |after| {
        let pool = pool.clone();
        async move {
            if after >= until {
                return Ok(None);
            }
            let client = pool.get().await.map_err(std::io::Error::other)?;
            let events = read_stored(&client, after, until, EXPORT_PAGE)
                .await
                .map_err(std::io::Error::other)?;
            let Some(last) = events.last().map(|event| event.position) else {
                return Ok(None);
            };
            let mut chunk = Vec::with_capacity(events.len() * 512);
            for event in &events {
                serde_json::to_writer(&mut chunk, event)?;
                chunk.push(b'\n');
            }
            Ok::<_, std::io::Error>(Some((Bytes::from(chunk), last)))
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pages),
    )
        .into_response())
}

/// A page of events, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page; equal to `after` when nothing new was found.
    pub next_after: i64,
}

fn after(params: &LogParams) -> Result<i64, ApiError> {
    match params.after {
        None => Ok(0),
        Some(a) if a >= 0 => Ok(a),
        Some(_) => Err(ApiError::invalid_parameter("after", "must be 0 or more")),
    }
}

/// Reads the whole log (`$all`) in order, a page at a time: for auditors.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(LogParams),
    responses(
        (status = 200, description = "A page of events; `next_after` is a log position.", body = EventPage),
        (status = 400, description = "`VAL_INVALID_PARAMETER`: `after` is negative or `limit` out of range."),
    ),
)]
pub async fn all(
    State(state): State<QueryState>,
    AppQuery(params): AppQuery<LogParams>,
) -> Result<Json<EventPage>, ApiError> {
    let after = after(&params)?;
    let limit = page_limit(params.limit, 100, 1000)?;
    let client = state.client().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
        ))
        .await?;
    let events = client
        .query(&statement, &[&after, &limit])
        .await?
        .iter()
        .map(event_view)
        .collect::<Result<Vec<_>, _>>()?;
    let next_after = events.last().map_or(after, |e| e.position);
    Ok(Json(EventPage { events, next_after }))
}

/// A stream's events recorded at or before `as_of`, oldest first: what "as of an instant"
/// folds.
pub(crate) async fn stream_until(
    client: &impl GenericClient,
    stream_id: &str,
    as_of: DateTime<Utc>,
) -> Result<Vec<Envelope>, ApiError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events \
             WHERE stream_id = $1 AND recorded_at <= $2 ORDER BY version"
        ))
        .await?;
    client
        .query(&statement, &[&stream_id, &as_of])
        .await?
        .iter()
        .map(|row| {
            Envelope::<JsonText>::from_row(row)?
                .parse()
                .map_err(ApiError::internal)
        })
        .collect()
}

pub(crate) async fn read_stream(
    client: &impl GenericClient,
    stream_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<EventView>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events \
             WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3"
        ))
        .await?;
    client
        .query(&statement, &[&stream_id, &after, &limit])
        .await?
        .iter()
        .map(event_view)
        .collect()
}

/// Reads one stream's events in order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/streams/{stream_id}/events",
    tag = "events",
    params(("stream_id" = String, Path, description = "The stream, `<category>-<id>` (e.g. `license-<uuid>`); an unknown stream has no events."), LogParams),
    responses(
        (status = 200, description = "A page of the stream's events; `next_after` is a stream version.", body = EventPage),
        (status = 400, description = "`VAL_INVALID_PARAMETER`: `after` is negative or `limit` out of range."),
    ),
)]
pub async fn stream(
    State(state): State<QueryState>,
    AppPath(stream_id): AppPath<String>,
    AppQuery(params): AppQuery<LogParams>,
) -> Result<Json<EventPage>, ApiError> {
    let after = after(&params)?;
    let limit = page_limit(params.limit, 100, 1000)?;
    let client = state.client().await?;
    let events = read_stream(&client, &stream_id, after, limit).await?;
    let next_after = events.last().map_or(after, |e| e.version);
    Ok(Json(EventPage { events, next_after }))
}
