//! API request records (`request-<record id>` streams): every request to the service, and the
//! records other services of the platform send, redacted before they are written.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const REQUEST_CATEGORY: &str = "request";

pub fn request_stream(record_id: Uuid) -> String {
    crate::envelope::stream_id(REQUEST_CATEGORY, record_id)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum RequestEvent {
    ApiRequestRecorded(ApiRequestRecorded),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiRequestRecorded {
    pub record_id: Uuid,
    /// The `x-request-id`: the correlation id of the events the request caused.
    pub request_id: String,
    pub service: String,
    pub method: String,
    /// The route template (`/v1/licenses/{id}`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// An API key's name or a license key's display prefix, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    pub status: u16,
    pub duration_ms: f64,
    /// Redacted and truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    /// When the request arrived.
    pub at: DateTime<Utc>,
}

crate::event_payload!(RequestEvent { ApiRequestRecorded });
