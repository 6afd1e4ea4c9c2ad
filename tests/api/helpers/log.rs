//! The event log (`/v1/events`, `/v1/streams/{id}/events`, the export, the checkpoints and
//! their keys) and the request log (`/v1/requests/**`).

use chrono::{DateTime, Utc};
use reqwest::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::TestApp;
use super::client::{Api, expect};

/// An event as `/v1/events`, `/v1/streams/{id}/events` and `/v1/licenses/{id}/events` show it.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Event {
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

/// A page of events; `next_after` is a log position (or a stream version).
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub next_after: i64,
}

impl EventPage {
    /// The event types, in order.
    pub fn types(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.event_type.as_str()).collect()
    }
}

/// A recorded request (`GET /v1/requests` items).
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct RequestRecord {
    pub record_id: Uuid,
    pub request_id: String,
    pub service: String,
    pub method: String,
    pub route: Option<String>,
    pub path: String,
    pub query: Option<String>,
    pub caller: Option<String>,
    pub status: i32,
    pub duration_ms: f64,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    /// As the service writes it (RFC 3339).
    pub at: String,
}

/// `GET /v1/requests`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct RequestPage {
    pub items: Vec<RequestRecord>,
    pub next_cursor: Option<String>,
}

/// `GET /v1/requests/{id}`: the record and the events the request caused.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct RequestDetail {
    #[serde(flatten)]
    pub request: RequestRecord,
    pub events: Vec<Event>,
}

impl TestApp {
    pub fn log(&self) -> Log<'_> {
        self.api().log()
    }
}

impl<'a> Api<'a> {
    pub fn log(self) -> Log<'a> {
        Log(self)
    }
}

/// The event log: `/v1/events`, `/v1/streams/{id}/events`, the export and the checkpoints.
pub struct Log<'a>(Api<'a>);

impl Log<'_> {
    /// `GET /v1/events?after=…&limit=…`.
    pub async fn try_page(&self, after: i64, limit: i64) -> Response {
        self.0
            .get(&format!("/v1/events?after={after}&limit={limit}"))
            .await
    }

    pub async fn page(&self, after: i64, limit: i64) -> EventPage {
        expect(self.try_page(after, limit).await, 200, "a page of events").await
    }

    pub async fn try_stream(&self, stream_id: &str) -> Response {
        self.0.get(&format!("/v1/streams/{stream_id}/events")).await
    }

    /// A stream's events (`license-<id>`, `session-<id>`, …).
    pub async fn stream(&self, stream_id: &str) -> EventPage {
        expect(self.try_stream(stream_id).await, 200, "a stream").await
    }

    /// `GET /v1/events/export{query}`: NDJSON.
    pub async fn try_export(&self, query: &str) -> Response {
        self.0.get(&format!("/v1/events/export{query}")).await
    }

    /// `GET /.well-known/keyledger-keys.json`: the keys checkpoints and certificates are
    /// signed with.
    pub async fn try_keys(&self) -> Response {
        self.0.get("/.well-known/keyledger-keys.json").await
    }

    pub async fn try_latest_checkpoint(&self) -> Response {
        self.0.get("/v1/checkpoints/latest").await
    }
}

impl TestApp {
    pub fn requests(&self) -> Requests<'_> {
        self.api().requests()
    }
}

impl<'a> Api<'a> {
    pub fn requests(self) -> Requests<'a> {
        Requests(self)
    }
}

/// The request log: `/v1/requests/**`.
pub struct Requests<'a>(Api<'a>);

impl Requests<'_> {
    /// `POST /v1/requests` with records of another service.
    pub async fn try_ingest(&self, body: &(impl Serialize + ?Sized)) -> Response {
        self.0.post("/v1/requests", body).await
    }

    /// `GET /v1/requests{query}`.
    pub async fn try_list(&self, query: &str) -> Response {
        self.0.get(&format!("/v1/requests{query}")).await
    }

    pub async fn list(&self, query: &str) -> RequestPage {
        expect(self.try_list(query).await, 200, "listing requests").await
    }

    pub async fn try_get(&self, id: impl ToString) -> Response {
        let id = id.to_string();
        self.0.get(&format!("/v1/requests/{id}")).await
    }

    pub async fn get(&self, id: impl ToString) -> RequestDetail {
        expect(self.try_get(id).await, 200, "a recorded request").await
    }
}
