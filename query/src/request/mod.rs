//! The request log: `GET /v1/requests` (filters, newest first, keyset pages) and
//! `GET /v1/requests/{id}` (the record with its bodies and the events the request caused).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppPath, AppQuery, Code, ConsistencyPosition};
use keyledger_events::request::request_stream;
use keyledger_projections::request;
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::events::{EventView, event_view};
use crate::{ConsistencyHeader, QueryState, page_limit};
use keyledger_events::store::ENVELOPE_COLUMNS;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RequestParams {
    /// The service that recorded the request, exactly (blank: any).
    pub service: Option<String>,
    /// The HTTP method, in any case (blank: any).
    pub method: Option<String>,
    /// The answer's status: 100 to 599.
    #[param(minimum = 100, maximum = 599)]
    pub status: Option<i32>,
    /// `1xx` … `5xx` (blank: any).
    #[param(pattern = "^(\\+?0*[1-5]xx)?$")]
    pub status_class: Option<String>,
    /// The route template, exactly, e.g. `/v1/licenses/{id}` (blank: any).
    pub route: Option<String>,
    /// Text the path contains (blank: any).
    pub path_contains: Option<String>,
    /// The caller, exactly (`user:<id>`, `api_key:<id>`, …; blank: any).
    pub caller: Option<String>,
    /// Requests at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Requests before this instant.
    pub to: Option<DateTime<Utc>>,
    /// Requests per page: 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Opaque: the `next_cursor` of the previous page (blank: the first page).
    pub cursor: Option<String>,
}

/// A recorded API request, bodies redacted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequestView {
    pub record_id: Uuid,
    /// The request's `X-Request-Id`: the events it caused carry it as `correlation_id`.
    pub request_id: String,
    pub service: String,
    pub method: String,
    /// The route template, when a route matched.
    pub route: Option<String>,
    pub path: String,
    pub query: Option<String>,
    /// Who called (`user:<id>`, `api_key:<id>`, …).
    pub caller: Option<String>,
    pub status: i32,
    pub duration_ms: f64,
    /// The request body, redacted (absent or not captured: `null`).
    pub request_body: Option<String>,
    /// The response body, redacted (not captured: `null`).
    pub response_body: Option<String>,
    pub at: DateTime<Utc>,
}

/// A page of recorded requests, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestPage {
    pub items: Vec<RequestView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A recorded request with the events it caused.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestDetail {
    #[serde(flatten)]
    pub request: RequestView,
    /// The events whose correlation id is this request's id.
    pub events: Vec<EventView>,
}

const COLUMNS: &str = "record_id, request_id, service, method, route, path, query, caller, status, \
                       duration_ms, request_body, response_body, at";

fn from_row(row: &Row) -> Result<RequestView, tokio_postgres::Error> {
    Ok(RequestView {
        record_id: row.try_get(0)?,
        request_id: row.try_get(1)?,
        service: row.try_get(2)?,
        method: row.try_get(3)?,
        route: row.try_get(4)?,
        path: row.try_get(5)?,
        query: row.try_get(6)?,
        caller: row.try_get(7)?,
        status: row.try_get(8)?,
        duration_ms: row.try_get(9)?,
        request_body: row.try_get(10)?,
        response_body: row.try_get(11)?,
        at: row.try_get(12)?,
    })
}

/// Validated filters.
pub struct Filter {
    pub service: Option<String>,
    pub method: Option<String>,
    pub status: Option<i32>,
    pub status_range: Option<(i32, i32)>,
    pub route: Option<String>,
    pub path_contains: Option<String>,
    pub caller: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

impl Filter {
    pub fn parse(params: RequestParams) -> Result<Filter, ApiError> {
        let status_range = match params.status_class.as_deref() {
            None | Some("") => None,
            Some(class) => {
                let digit = class
                    .strip_suffix("xx")
                    .and_then(|d| d.parse::<i32>().ok())
                    .filter(|d| (1..=5).contains(d))
                    .ok_or_else(|| {
                        ApiError::invalid_parameter(
                            "status_class",
                            "must be 1xx, 2xx, 3xx, 4xx or 5xx",
                        )
                    })?;
                Some((digit * 100, digit * 100 + 99))
            }
        };
        if params.status.is_some_and(|s| !(100..=599).contains(&s)) {
            return Err(ApiError::invalid_parameter(
                "status",
                "must be between 100 and 599",
            ));
        }
        let after = match params.cursor.as_deref() {
            None | Some("") => None,
            Some(text) => Some(crate::cursor::decode(text).ok_or_else(|| {
                ApiError::invalid_parameter("cursor", "is not a cursor from this API")
            })?),
        };
        let empty_none = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        Ok(Filter {
            service: empty_none(params.service),
            method: empty_none(params.method).map(|m| m.to_ascii_uppercase()),
            status: params.status,
            status_range,
            route: empty_none(params.route),
            path_contains: empty_none(params.path_contains),
            caller: empty_none(params.caller),
            from: params.from,
            to: params.to,
            after,
            limit: page_limit(params.limit, 50, 1000)?,
        })
    }
}

fn encode_cursor(item: &RequestView) -> String {
    crate::cursor::encode(item.at, item.record_id)
}

pub async fn search(
    client: &impl GenericClient,
    filter: &Filter,
) -> Result<Vec<RequestView>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM api_requests \
             WHERE ($1::text IS NULL OR service = $1) \
               AND ($2::text IS NULL OR method = $2) \
               AND ($3::int IS NULL OR status = $3) \
               AND ($4::int IS NULL OR status BETWEEN $4 AND $5) \
               AND ($6::text IS NULL OR route = $6) \
               AND ($7::text IS NULL OR strpos(path, $7) > 0) \
               AND ($8::text IS NULL OR caller = $8) \
               AND ($9::timestamptz IS NULL OR at >= $9) \
               AND ($10::timestamptz IS NULL OR at < $10) \
               AND ($11::timestamptz IS NULL OR (at, record_id) < ($11, $12::uuid)) \
             ORDER BY at DESC, record_id DESC LIMIT $13"
        ))
        .await?;
    let (low, high) = match filter.status_range {
        Some((low, high)) => (Some(low), Some(high)),
        None => (None, None),
    };
    let (after_at, after_id) = match filter.after {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    client
        .query(
            &statement,
            &[
                &filter.service,
                &filter.method,
                &filter.status,
                &low,
                &high,
                &filter.route,
                &filter.path_contains,
                &filter.caller,
                &filter.from,
                &filter.to,
                &after_at,
                &after_id,
                &filter.limit,
            ],
        )
        .await?
        .iter()
        .map(from_row)
        .collect()
}

pub fn next_cursor(items: &[RequestView], limit: i64) -> Option<String> {
    (items.len() as i64 == limit)
        .then(|| items.last().map(encode_cursor))
        .flatten()
}

/// Searches the request log, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/requests",
    tag = "requests",
    params(RequestParams, ConsistencyHeader),
    responses(
        (status = 200, description = "A page of recorded requests.", body = RequestPage),
        (status = 400, description = "`VAL_INVALID_PARAMETER`: a `status` or `status_class` out of range, a `limit` out of range or a cursor not from this API."),
    ),
)]
pub async fn list(
    State(state): State<QueryState>,
    ConsistencyPosition(position): ConsistencyPosition,
    AppQuery(params): AppQuery<RequestParams>,
) -> Result<Json<RequestPage>, ApiError> {
    let filter = Filter::parse(params)?;
    state.consistent(&[request::NAME], position).await?;
    let client = state.client().await?;
    let items = search(&client, &filter).await.map_err(ApiError::from)?;
    let next_cursor = next_cursor(&items, filter.limit);
    Ok(Json(RequestPage { items, next_cursor }))
}

/// The events a request caused: the log's events whose correlation id is the request id
/// (`$1`), oldest first. Its `event_type` condition is the predicate of the partial index
/// `events_correlation_idx` (V11), which leaves request records out.
pub fn events_of_a_request() -> String {
    format!(
        "SELECT {ENVELOPE_COLUMNS} FROM events WHERE metadata ->> 'correlation_id' = $1 \
           AND event_type <> 'ApiRequestRecorded' \
         ORDER BY position LIMIT 100"
    )
}

pub async fn find(
    client: &impl GenericClient,
    record_id: Uuid,
) -> Result<Option<RequestDetail>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM api_requests WHERE record_id = $1"
        ))
        .await?;
    let Some(row) = client.query_opt(&statement, &[&record_id]).await? else {
        return Ok(None);
    };
    let request = from_row(&row)?;
    let statement = client.prepare_cached(&events_of_a_request()).await?;
    let events = client
        .query(&statement, &[&request.request_id])
        .await?
        .iter()
        .map(event_view)
        .collect::<Result<_, _>>()?;
    Ok(Some(RequestDetail { request, events }))
}

/// Reads a recorded request, with the events it caused.
#[utoipa::path(
    get,
    path = "/v1/requests/{id}",
    tag = "requests",
    params(("id" = Uuid, Path, description = "The record's id (`record_id`)."), ConsistencyHeader),
    responses(
        (status = 200, description = "The request, with the events whose correlation id is its request id (at most 100).", body = RequestDetail),
        (status = 404, description = "`RES_NOT_FOUND`: no request record has this id."),
    ),
)]
pub async fn get(
    State(state): State<QueryState>,
    ConsistencyPosition(position): ConsistencyPosition,
    AppPath(record_id): AppPath<Uuid>,
) -> Result<Json<RequestDetail>, ApiError> {
    state.consistent(&[request::NAME], position).await?;
    state
        .found(
            &request_stream(record_id),
            &[request::NAME],
            |client| async move { find(&client, record_id).await },
            || ApiError::not_found(Code::ResNotFound, "no request record has this id"),
        )
        .await
        .map(Json)
}
