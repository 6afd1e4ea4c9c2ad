//! `GET /v1/events/stream?after=&category=&type=`: the log as Server-Sent Events, live.
//!
//! Each event is one SSE message whose `id:` is its position and whose data is the event as
//! `GET /v1/events` shows it. A client that reconnects with `Last-Event-ID` (browsers'
//! `EventSource` do) resumes right after it: positions are gap-free and commit order is
//! position order, so reading `position > id` up to a head read first misses nothing and
//! repeats nothing. The stream is produced as the client reads it: at most one page of events
//! is held per client, and a client that stops reading only stops the reads for itself.
//! Keep-alive comments go out every 15 s.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use deadpool_postgres::Pool;
use futures::Stream;
use keyledger_api::{ApiError, AppQuery};
use serde::Deserialize;
use tokio::sync::watch;
use utoipa::IntoParams;

use crate::QueryState;
use crate::events::{EventView, event_view};
use keyledger_events::store::ENVELOPE_COLUMNS;

/// Events read per page.
const PAGE: i64 = 500;
/// Longest wait for a new commit before looking at the log again (other nodes' commits reach
/// this process through NOTIFY; this bounds the wait if one is missed).
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TailParams {
    /// Start after this position: 0 or more (default 0); `Last-Event-ID` takes precedence.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Only streams of this category (`license`, `session`, `request`, …): 1 to 128 letters,
    /// digits or underscores.
    #[param(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_]+$")]
    pub category: Option<String>,
    /// Only events of this type: 1 to 128 letters, digits or underscores.
    #[serde(rename = "type")]
    #[param(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_]+$")]
    pub event_type: Option<String>,
}

/// The `Last-Event-ID` header a reconnecting `EventSource` sends.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct LastEventIdHeader {
    /// Resume after this position (the `id:` of the last message received): 0 or more.
    #[param(rename = "Last-Event-ID", minimum = 0, nullable = false)]
    last_event_id: Option<i64>,
}

struct Filter {
    category: Option<String>,
    event_type: Option<String>,
}

fn checked(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v)
            if v.is_empty()
                || v.len() > 128
                || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Err(ApiError::invalid_parameter(
                name,
                "must be 1 to 128 letters, digits or underscores",
            ))
        }
        other => Ok(other),
    }
}

/// Follows the event log live, as Server-Sent Events.
///
/// Each message's `id:` is the event's position and its `data:` the event as `GET /v1/events`
/// shows it; a comment every 15 s keeps the connection alive. The stream does not end.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "events",
    params(TailParams, LastEventIdHeader),
    responses(
        (status = 200, description = "The events after the starting position, then each new one as it is committed.", content_type = "text/event-stream", body = String),
        (status = 400, description = "`VAL_INVALID_PARAMETER`: a negative `after` or `Last-Event-ID`, or a `category` or `type` that is not 1 to 128 letters, digits or underscores."),
    ),
)]
pub async fn handle(
    State(state): State<QueryState>,
    headers: HeaderMap,
    AppQuery(params): AppQuery<TailParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    ApiError::invalid_parameter("Last-Event-ID", "must be a position (0 or more)")
                })
        })
        .transpose()?;
    let after = match resume.or(params.after) {
        None => 0,
        Some(after) if after >= 0 => after,
        Some(_) => return Err(ApiError::invalid_parameter("after", "must be 0 or more")),
    };
    let filter = Filter {
        category: checked("category", params.category)?,
        event_type: checked("type", params.event_type)?,
    };
    let tail = Tail {
        pool: state.pool.clone(),
        head: state.notifier.head(),
        filter,
        after,
        pending: VecDeque::new(),
    };
    let stream = futures::stream::unfold(tail, |mut tail| async move {
        let event = tail.next().await;
        Some((Ok(event), tail))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct Tail {
    pool: Pool,
    head: watch::Receiver<i64>,
    filter: Filter,
    /// Everything up to here was read (sent, or not the filter's).
    after: i64,
    pending: VecDeque<EventView>,
}

impl Tail {
    /// The next message: an event, or (when the database cannot be read) a comment, after
    /// which the stream tries again.
    async fn next(&mut self) -> Event {
        loop {
            if let Some(event) = self.pending.pop_front() {
                let data = serde_json::to_string(&event).unwrap_or_default();
                return Event::default().id(event.position.to_string()).data(data);
            }
            match self.read().await {
                Ok(true) => continue,
                Ok(false) => {
                    // Caught up: wait for a commit this process hears of, or look again soon.
                    let _ = tokio::time::timeout(POLL, self.head.changed()).await;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "the event stream cannot read the log");
                    tokio::time::sleep(POLL).await;
                    return Event::default().comment("the log cannot be read right now; retrying");
                }
            }
        }
    }

    /// Reads the next page into `pending`; `false` when there was nothing new.
    async fn read(&mut self) -> anyhow::Result<bool> {
        let client = self.pool.get().await?;
        // The head first: every position up to it is committed, so the rows up to it form a
        // gap-free prefix of the log.
        let head: i64 = client
            .query_one("SELECT coalesce(max(position), 0) FROM events", &[])
            .await?
            .try_get(0)?;
        if head <= self.after {
            return Ok(false);
        }
        let statement = client
            .prepare_cached(&format!(
                "SELECT {ENVELOPE_COLUMNS} FROM events \
                 WHERE position > $1 AND position <= $2 \
                   AND ($3::text IS NULL OR starts_with(stream_id, $3 || '-')) \
                   AND ($4::text IS NULL OR event_type = $4) \
                 ORDER BY position LIMIT $5"
            ))
            .await?;
        let rows = client
            .query(
                &statement,
                &[
                    &self.after,
                    &head,
                    &self.filter.category,
                    &self.filter.event_type,
                    &PAGE,
                ],
            )
            .await?;
        let full = rows.len() as i64 == PAGE;
        for row in &rows {
            self.pending.push_back(event_view(row)?);
        }
        // A full page stops at its last event; otherwise everything up to the head was read.
        self.after = match (full, self.pending.back()) {
            (true, Some(last)) => last.position,
            _ => head,
        };
        Ok(true)
    }
}
