//! Envelopes: an event as written (`NewEvent`) and as stored (`Envelope`), with its metadata.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// An event about to be appended: the store gives it a position, a version and a hash.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: &'static str,
    pub schema_version: i32,
    pub data: Value,
}

/// Who and what caused an event. Stored as the `metadata` column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The request id of the HTTP request (or job run) that caused the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The event or command that directly caused this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// Who caused it: `user:<id>`, `api_key:<id>`, `license:<id>`, `system`, or `api` for a
    /// request without credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl Metadata {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// What the appender expects the stream's current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the current version is (high-volume streams such as usage).
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have this version.
    Exact(i64),
}

impl ExpectedVersion {
    pub fn accepts(self, current: i64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exact(v) => current == v,
        }
    }
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub position: i64,
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
    #[serde(with = "hex_bytes")]
    pub hash: Vec<u8>,
}

impl Envelope {
    /// `license-3f…` → `license`.
    pub fn category(&self) -> &str {
        category_of(&self.stream_id)
    }

    pub fn correlation_id(&self) -> Option<&str> {
        self.metadata.get("correlation_id").and_then(Value::as_str)
    }

    pub fn causation_id(&self) -> Option<&str> {
        self.metadata.get("causation_id").and_then(Value::as_str)
    }
}

/// The category of a stream id `<category>-<uuid>`.
pub fn category_of(stream_id: &str) -> &str {
    match stream_id.rsplit_once('-') {
        // A uuid has dashes itself: the category is what precedes the 36-char uuid.
        Some(_) if stream_id.len() > 37 && stream_id.as_bytes()[stream_id.len() - 37] == b'-' => {
            &stream_id[..stream_id.len() - 37]
        }
        Some((category, _)) => category,
        None => stream_id,
    }
}

/// `<category>-<uuid>`.
pub fn stream_id(category: &str, id: Uuid) -> String {
    format!("{category}-{id}")
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_category_is_what_precedes_the_uuid() {
        let id = Uuid::nil();
        assert_eq!(category_of(&stream_id("license", id)), "license");
        assert_eq!(
            category_of(&stream_id("license_usage", id)),
            "license_usage"
        );
        assert_eq!(category_of("plain"), "plain");
        assert_eq!(category_of("a-b"), "a");
    }
}
