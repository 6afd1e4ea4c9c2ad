//! Envelopes: an event as written (`NewEvent`) and as stored (`Envelope`), with its metadata.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
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

/// An event as stored in the log: its place in the whole log (`position`) and in its stream
/// (`version`), what it records (`data`) and who caused it (`metadata`), and its link in the
/// hash chain.
///
/// `J` is how the two JSON fields are held. The service folds and projects an
/// `Envelope<Value>`; the HTTP API answers with an `Envelope<Box<RawValue>>`, the JSON text
/// exactly as stored, so an auditor sees the bytes the hash chain covers and no stored value
/// can make a page fail. Both are read from the same row (`Envelope::<JsonText>::from_row`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(
    as = EventView,
    bound = "",
    description = "An event as stored: `data` and `metadata` are the stored JSON text itself, so \
        an auditor sees the bytes the hash chain covers, and no stored value can make a page fail."
)]
pub struct Envelope<J = Value> {
    /// The event's place in the whole log.
    pub position: i64,
    pub event_id: Uuid,
    /// `<category>-<id>`, e.g. `license-…`.
    pub stream_id: String,
    /// The event's place in its stream, from 1.
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    /// The event's JSON as stored (an object; stored JSON nested deeper than 128 levels is
    /// shown as a JSON string of its text).
    #[schema(value_type = Value)]
    pub data: J,
    /// The event's metadata JSON as stored (`correlation_id`, `actor`, …), shown like `data`.
    #[schema(value_type = Value)]
    pub metadata: J,
    pub recorded_at: DateTime<Utc>,
    /// The hash chain's hash of this event, hex.
    #[serde(with = "hex::serde")]
    #[schema(value_type = String)]
    pub hash: Vec<u8>,
}

impl<J> Envelope<J> {
    /// `license-3f…` → `license`.
    pub fn category(&self) -> &str {
        category_of(&self.stream_id)
    }

    /// The same event with its JSON fields held another way.
    pub fn map_json<K>(self, mut f: impl FnMut(J) -> K) -> Envelope<K> {
        match self.try_map_json(|json, _| Ok::<_, std::convert::Infallible>(f(json))) {
            Ok(envelope) => envelope,
            Err(never) => match never {},
        }
    }

    /// The same event with its JSON fields held another way, or the first field that cannot
    /// be (named `data` or `metadata`).
    pub fn try_map_json<K, E>(
        self,
        mut f: impl FnMut(J, &'static str) -> Result<K, E>,
    ) -> Result<Envelope<K>, E> {
        Ok(Envelope {
            data: f(self.data, "data")?,
            metadata: f(self.metadata, "metadata")?,
            position: self.position,
            event_id: self.event_id,
            stream_id: self.stream_id,
            version: self.version,
            event_type: self.event_type,
            schema_version: self.schema_version,
            recorded_at: self.recorded_at,
            hash: self.hash,
        })
    }
}

impl Envelope {
    pub fn correlation_id(&self) -> Option<&str> {
        self.metadata.get("correlation_id").and_then(Value::as_str)
    }

    pub fn causation_id(&self) -> Option<&str> {
        self.metadata.get("causation_id").and_then(Value::as_str)
    }
}

impl Envelope<Box<RawValue>> {
    /// Who caused the event (`user:<id>`, `api_key:<id>`, `license:<id>`, `system`, …), from
    /// its metadata.
    pub fn actor(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Actor {
            actor: Option<String>,
        }
        serde_json::from_str::<Actor>(self.metadata.get())
            .ok()
            .and_then(|m| m.actor)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::any_json;
    use crate::store::JsonText;
    use proptest::prelude::*;

    fn stored(data: &str, metadata: &str) -> Envelope<JsonText> {
        Envelope {
            position: 7,
            event_id: Uuid::nil(),
            stream_id: stream_id("license", Uuid::nil()),
            version: 2,
            event_type: "LicenseRevoked".to_owned(),
            schema_version: 1,
            data: JsonText(data.to_owned()),
            metadata: JsonText(metadata.to_owned()),
            recorded_at: DateTime::UNIX_EPOCH,
            hash: vec![0xab; 32],
        }
    }

    proptest! {
        /// The API's view of an event (the stored text) and the event the service folds say
        /// the same thing, field for field.
        #[test]
        fn the_view_shows_the_event_the_service_reads(data in any_json(), metadata in any_json()) {
            let data_text = serde_json::to_string(&data).unwrap();
            let metadata_text = serde_json::to_string(&metadata).unwrap();
            let read = stored(&data_text, &metadata_text).parse().unwrap();
            prop_assert_eq!(&read.data, &data);
            prop_assert_eq!(&read.metadata, &metadata);
            let shown = stored(&data_text, &metadata_text)
                .map_json(|JsonText(text)| RawValue::from_string(text).unwrap());
            prop_assert_eq!(shown.data.get(), data_text.as_str());
            prop_assert_eq!(
                serde_json::to_value(&shown).unwrap(),
                serde_json::to_value(&read).unwrap()
            );
        }
    }

    #[test]
    fn stored_json_the_service_cannot_parse_is_named_by_its_field() {
        let unreadable = stored("{}", "{\"actor\":").parse().unwrap_err();
        assert_eq!(
            (unreadable.position, unreadable.event_type.as_str()),
            (7, "LicenseRevoked")
        );
        assert!(
            unreadable.reason.starts_with("its metadata is not JSON"),
            "{}",
            unreadable.reason
        );
    }

    #[test]
    fn the_hash_is_hex_on_the_wire() {
        let shown = stored("{}", "{}").map_json(|JsonText(text)| text);
        let wire = serde_json::to_value(&shown).unwrap();
        assert_eq!(wire["hash"], "ab".repeat(32));
        let back: Envelope<String> = serde_json::from_value(wire).unwrap();
        assert_eq!(back.hash, vec![0xab; 32]);
    }

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
