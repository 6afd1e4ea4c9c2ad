//! `GET /v1/events` (the ordered `$all` read, for auditors) and
//! `GET /v1/streams/{stream_id}/events`.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppPath, AppQuery};
use keyledger_events::Envelope;
use keyledger_events::store::{envelope_from_row, read_all_on};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{QueryState, page_limit};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// Position (for `$all`) or version (for a stream) to read after.
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct EventView {
    pub position: i64,
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
    pub hash: String,
}

impl From<Envelope> for EventView {
    fn from(e: Envelope) -> Self {
        EventView {
            position: e.position,
            event_id: e.event_id,
            stream_id: e.stream_id,
            version: e.version,
            event_type: e.event_type,
            schema_version: e.schema_version,
            data: e.data,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
            hash: hex::encode(&e.hash),
        }
    }
}

#[derive(Debug, Serialize)]
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

pub async fn all(
    State(state): State<QueryState>,
    AppQuery(params): AppQuery<LogParams>,
) -> Result<Json<EventPage>, ApiError> {
    let after = after(&params)?;
    let limit = page_limit(params.limit, 100, 1000)?;
    let client = state.client().await?;
    let events = read_all_on(&client, after, limit)
        .await
        .map_err(ApiError::unavailable)?;
    let next_after = events.last().map_or(after, |e| e.position);
    Ok(Json(EventPage {
        events: events.into_iter().map(EventView::from).collect(),
        next_after,
    }))
}

pub(crate) async fn read_stream(
    client: &impl GenericClient,
    stream_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Envelope>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "SELECT position, event_id, stream_id, version, event_type, schema_version, data, \
                    metadata, recorded_at, hash \
             FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3",
        )
        .await?;
    client
        .query(&statement, &[&stream_id, &after, &limit])
        .await?
        .iter()
        .map(envelope_from_row)
        .collect()
}

pub async fn stream(
    State(state): State<QueryState>,
    AppPath(stream_id): AppPath<String>,
    AppQuery(params): AppQuery<LogParams>,
) -> Result<Json<EventPage>, ApiError> {
    let after = after(&params)?;
    let limit = page_limit(params.limit, 100, 1000)?;
    let client = state.client().await?;
    let events = read_stream(&client, &stream_id, after, limit)
        .await
        .map_err(ApiError::unavailable)?;
    let next_after = events.last().map_or(after, |e| e.version);
    Ok(Json(EventPage {
        events: events.into_iter().map(EventView::from).collect(),
        next_after,
    }))
}
