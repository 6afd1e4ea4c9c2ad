//! The request log: a middleware records every request (method, route, path, query, caller,
//! status, duration, redacted and truncated bodies) as an `ApiRequestRecorded` event.
//!
//! It never slows or fails a response beyond copying bounded bodies: records go through a
//! bounded queue to a batching writer; when the queue is full the record is dropped and
//! counted (`keyledger_request_log_dropped_total` and a log line at most once a second).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use keyledger_events::request::{ApiRequestRecorded, RequestEvent, request_stream};
use keyledger_events::{AppendRequest, EventPayload, EventStore, ExpectedVersion, Metadata};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::{ApiError, Code};
use crate::redact::{is_secret_name, redact_body, redact_body_prefix, redact_text};
use crate::request_id::RequestId;

/// Bytes of a body the log reads to keep `chars` characters: a character is at most 4 bytes.
fn capture_bytes(chars: usize) -> usize {
    chars.saturating_mul(4).saturating_add(4)
}

/// A body's first bytes, read without buffering the rest.
struct Captured {
    /// At most the bytes asked for.
    prefix: Bytes,
    /// The body ended within them.
    complete: bool,
}

/// Reads `body` until `cap` bytes are in hand or it ends; gives those bytes and a body that
/// yields everything (what was read, then the rest as it arrives).
async fn capture(body: Body, cap: usize) -> Result<(Captured, Body), axum::Error> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut read = 0;
    while read < cap {
        match stream.next().await {
            Some(chunk) => {
                let chunk = chunk?;
                read += chunk.len();
                chunks.push(chunk);
            }
            None => {
                let whole = Bytes::from(chunks.concat());
                let captured = Captured {
                    prefix: whole.clone(),
                    complete: true,
                };
                return Ok((captured, Body::from(whole)));
            }
        }
    }
    let mut prefix = Vec::with_capacity(cap);
    for chunk in &chunks {
        let take = (cap - prefix.len()).min(chunk.len());
        prefix.extend_from_slice(&chunk[..take]);
    }
    let captured = Captured {
        prefix: Bytes::from(prefix),
        complete: false,
    };
    let rest = futures::stream::iter(chunks.into_iter().map(Ok)).chain(stream);
    Ok((captured, Body::from_stream(rest)))
}

impl Captured {
    /// As stored: redacted, cut to `limit` characters; `None` for an empty body.
    /// A form body (the admin hub's login) as stored: secret-named fields redacted like a
    /// query string's, a field cut at the end dropped.
    fn stored_form(&self, limit: usize) -> Option<String> {
        let text = String::from_utf8_lossy(&self.prefix);
        if self.complete {
            return (!text.is_empty()).then(|| truncate_chars(&redact_query(&text), limit));
        }
        let whole = text.rsplit_once('&').map_or("", |(whole, _)| whole);
        let cut = truncate_chars(&redact_query(whole), limit);
        Some(if cut.ends_with("…[truncated]") {
            cut
        } else {
            format!("{cut}…[truncated]")
        })
    }

    fn stored(&self, limit: usize) -> Option<String> {
        if self.complete {
            (!self.prefix.is_empty()).then(|| redact_body(&self.prefix, limit))
        } else {
            Some(redact_body_prefix(&self.prefix, limit))
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestLogConfig {
    pub enabled: bool,
    /// Share of requests recorded, 0.0 to 1.0.
    pub sample_rate: f64,
    /// Characters of each body kept.
    pub body_limit: usize,
    /// Path prefixes not recorded, on top of `/health`, `/metrics` and `/admin/static/`.
    pub exclude: Vec<String>,
    pub queue: usize,
    pub service: String,
}

impl Default for RequestLogConfig {
    fn default() -> Self {
        RequestLogConfig {
            enabled: true,
            sample_rate: 1.0,
            body_limit: 2000,
            exclude: Vec::new(),
            queue: 10_000,
            service: "keyledger".into(),
        }
    }
}

#[derive(Clone)]
pub struct RequestLog {
    config: Arc<RequestLogConfig>,
    queue: mpsc::Sender<ApiRequestRecorded>,
    dropped: Arc<AtomicU64>,
    last_warning: Arc<AtomicI64>,
}

/// Where the route template lands once the router has matched the request.
#[derive(Clone, Default)]
struct RouteSlot(Arc<OnceLock<String>>);

impl RequestLog {
    pub fn new(config: RequestLogConfig) -> (RequestLog, mpsc::Receiver<ApiRequestRecorded>) {
        let (queue, records) = mpsc::channel(config.queue.max(1));
        (
            RequestLog {
                config: Arc::new(config),
                queue,
                dropped: Arc::default(),
                last_warning: Arc::default(),
            },
            records,
        )
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn records(&self, path: &str) -> bool {
        if !self.config.enabled {
            return false;
        }
        // `/mcp` is a transport: each tool call in it is recorded as its route (`mcp:<tool>`).
        let excluded = ["/health", "/metrics", "/admin/static/", "/mcp"]
            .iter()
            .any(|p| path.starts_with(p))
            || self
                .config
                .exclude
                .iter()
                .any(|p| path.starts_with(p.as_str()));
        !excluded
            && (self.config.sample_rate >= 1.0 || rand::random::<f64>() < self.config.sample_rate)
    }

    fn enqueue(&self, record: ApiRequestRecorded) {
        if self.queue.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("keyledger_request_log_dropped_total").increment(1);
            let now = Utc::now().timestamp();
            if self.last_warning.swap(now, Ordering::Relaxed) != now {
                tracing::warn!(
                    dropped = self.dropped(),
                    "request log queue full: records dropped"
                );
            }
        }
    }
}

/// `text` cut to `limit` characters, marked when cut.
fn truncate_chars(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…[truncated]", &text[..cut]),
    }
}

/// A query string with secret-named parameters and keys redacted.
fn redact_query(query: &str) -> String {
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}=[REDACTED]"),
            _ => pair.to_owned(),
        })
        .collect();
    redact_text(&pairs.join("&"))
}

/// The caller: a license key's display prefix from `X-License-Key` or a `key` member.
fn caller(headers: &axum::http::HeaderMap, body: &[u8]) -> Option<String> {
    let from_header = headers
        .get("x-license-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from_body = || {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()?
            .get("key")?
            .as_str()
            .map(str::to_owned)
    };
    let key = from_header.or_else(from_body)?;
    let redacted = redact_text(key.trim());
    (redacted != key.trim()).then(|| redacted.trim_end_matches('…').to_owned())
}

fn is_form(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("x-www-form-urlencoded"))
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

/// The outer middleware: times the request and records it.
pub async fn layer(State(log): State<RequestLog>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if !log.records(&path) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let at = keyledger_events::chain::to_micros(Utc::now());
    let method = request.method().to_string();
    let query = request.uri().query().map(redact_query);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    let slot = RouteSlot::default();
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(slot.clone());
    let cap = capture_bytes(log.config.body_limit);
    let (captured, body) = match capture(body, cap).await {
        Ok(captured) => captured,
        Err(error) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                Code::ValInvalidBody,
                format!("cannot read the body: {error}"),
            )
            .into_response();
        }
    };
    // The key is in the body of a validation or a lookup, which is small.
    let caller = caller(
        &parts.headers,
        if captured.complete {
            &captured.prefix
        } else {
            &[]
        },
    );
    let request_body = if is_form(&parts.headers) {
        captured.stored_form(log.config.body_limit)
    } else {
        captured.stored(log.config.body_limit)
    };
    let response = next.run(Request::from_parts(parts, body)).await;

    let (parts, body) = response.into_parts();
    let (response, response_body) = if is_json(&parts.headers) {
        match capture(body, cap).await {
            Ok((captured, body)) => (
                Response::from_parts(parts, body),
                captured.stored(log.config.body_limit),
            ),
            Err(_) => (
                ApiError::internal("a response body could not be read").into_response(),
                None,
            ),
        }
    } else {
        (Response::from_parts(parts, body), None)
    };
    log.enqueue(ApiRequestRecorded {
        record_id: Uuid::new_v4(),
        request_id,
        service: log.config.service.clone(),
        method,
        route: slot.0.get().cloned(),
        path: redact_text(&path),
        query,
        caller,
        status: response.status().as_u16(),
        // Whole microseconds, so that it reads `1.247` rather than `1.2468080000000001`.
        duration_ms: started.elapsed().as_micros() as f64 / 1000.0,
        request_body,
        response_body,
        at,
    });
    response
}

/// What the request log calls a request made on a caller's behalf inside the service (an MCP
/// tool call is `mcp:<tool>`) instead of its route template.
#[derive(Debug, Clone)]
pub struct RouteLabel(pub String);

/// The inner middleware (a route layer): notes the matched route template (or the request's
/// `RouteLabel`).
pub async fn note_route(request: Request, next: Next) -> Response {
    if let Some(slot) = request.extensions().get::<RouteSlot>() {
        let route = match request.extensions().get::<RouteLabel>() {
            Some(label) => Some(label.0.clone()),
            None => request
                .extensions()
                .get::<MatchedPath>()
                .map(|matched| matched.as_str().to_owned()),
        };
        if let Some(route) = route {
            let _ = slot.0.set(route);
        }
    }
    next.run(request).await
}

/// Appends recorded requests in batches until the queue closes.
pub async fn run_writer(
    store: Arc<dyn EventStore>,
    mut records: mpsc::Receiver<ApiRequestRecorded>,
) {
    let mut batch = Vec::with_capacity(500);
    while records.recv_many(&mut batch, 500).await > 0 {
        let appends = batch.drain(..).map(|record| {
            let store = store.clone();
            async move { store.append(record_append(record)).await }
        });
        for result in futures::future::join_all(appends).await {
            if let Err(error) = result {
                tracing::warn!(error = %error, "a request record could not be written");
            }
        }
    }
}

/// The append of one record (also used for records other services send).
pub fn record_append(record: ApiRequestRecorded) -> AppendRequest {
    let metadata = Metadata {
        correlation_id: Some(record.request_id.clone()),
        causation_id: Some(record.request_id.clone()),
        actor: Some(record.service.clone()),
        idempotency_key: None,
    };
    let stream_id = request_stream(record.record_id);
    let event = RequestEvent::ApiRequestRecorded(record);
    AppendRequest {
        stream_id,
        expected: ExpectedVersion::NoStream,
        events: vec![event.to_new_event(Uuid::new_v4())],
        metadata,
        idempotency: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ApiRequestRecorded {
        ApiRequestRecorded {
            record_id: Uuid::nil(),
            request_id: "r".into(),
            service: "keyledger".into(),
            method: "GET".into(),
            route: None,
            path: "/".into(),
            query: None,
            caller: None,
            status: 200,
            duration_ms: 1.0,
            request_body: None,
            response_body: None,
            at: Utc::now(),
        }
    }

    #[test]
    fn a_form_body_is_stored_without_its_password_or_csrf_token() {
        let form = |body: &'static str, complete| Captured {
            prefix: Bytes::from_static(body.as_bytes()),
            complete,
        };
        let stored = form("email=a%40b.example&password=hunter22&csrf_token=abc", true)
            .stored_form(2000)
            .unwrap();
        assert_eq!(
            stored,
            "email=a%40b.example&password=[REDACTED]&csrf_token=[REDACTED]"
        );
        // Cut inside a field: the field is dropped.
        let cut = form("email=a%40b.example&password=hunt", false)
            .stored_form(2000)
            .unwrap();
        assert_eq!(cut, "email=a%40b.example…[truncated]");
    }

    #[test]
    fn a_full_queue_drops_and_counts_records_without_waiting() {
        let (log, _records) = RequestLog::new(RequestLogConfig {
            queue: 2,
            ..RequestLogConfig::default()
        });
        for _ in 0..5 {
            log.enqueue(record());
        }
        assert_eq!(log.dropped(), 3);
    }

    #[test]
    fn health_metrics_and_admin_assets_are_not_recorded() {
        let (log, _records) = RequestLog::new(RequestLogConfig::default());
        assert!(!log.records("/health/ready"));
        assert!(!log.records("/metrics"));
        assert!(!log.records("/admin/static/admin.css"));
        assert!(log.records("/admin/licenses"));
        assert!(log.records("/v1/licenses"));
    }

    #[test]
    fn secret_query_parameters_are_redacted() {
        assert_eq!(
            redact_query("owner=acme&api_token=abc"),
            "owner=acme&api_token=[REDACTED]"
        );
    }

    #[test]
    fn the_caller_is_the_display_prefix_of_the_key_in_the_body() {
        let body = br#"{"key": "lic_4vJ9hGq2r7mXkP3sT8wYzA1bC5dE6fH7jK8mN9pQ"}"#;
        assert_eq!(
            caller(&Default::default(), body).as_deref(),
            Some("lic_4vJ9hGq2")
        );
        assert_eq!(caller(&Default::default(), br#"{"owner": "x"}"#), None);
    }
}
