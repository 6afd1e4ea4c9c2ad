//! Typed event payloads: one serde enum per aggregate, encoded to and decoded from the log.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::envelope::{Envelope, NewEvent};

#[derive(Debug, thiserror::Error)]
#[error("cannot decode {event_type} v{schema_version}: {source}")]
pub struct DecodeError {
    pub event_type: String,
    pub schema_version: i32,
    #[source]
    pub source: serde_json::Error,
}

/// An aggregate's event enum. The enum is serialized adjacently tagged (`type` = event type,
/// `data` = payload) so that the event type and the payload map onto the log's columns.
pub trait EventPayload: Serialize + DeserializeOwned + Sized {
    /// The event types this enum owns.
    const EVENT_TYPES: &'static [&'static str];

    fn event_type(&self) -> &'static str;

    /// The schema version written for new events of this type.
    fn schema_version(&self) -> i32 {
        1
    }

    /// Rewrites the payload of an older schema version into the current one. The default
    /// accepts every version as it is.
    fn upcast(_event_type: &str, _schema_version: i32, data: Value) -> Value {
        data
    }

    fn to_new_event(&self, event_id: Uuid) -> NewEvent {
        let tagged = serde_json::to_value(self).unwrap_or(Value::Null);
        let data = tagged.get("data").cloned().unwrap_or(Value::Null);
        NewEvent {
            event_id,
            event_type: self.event_type(),
            schema_version: self.schema_version(),
            data,
        }
    }

    /// Decodes a stored event; `Ok(None)` when the event type belongs to another enum.
    fn decode(envelope: &Envelope) -> Result<Option<Self>, DecodeError> {
        Self::decode_parts(
            &envelope.event_type,
            envelope.schema_version,
            envelope.data.clone(),
        )
    }

    fn decode_parts(
        event_type: &str,
        schema_version: i32,
        data: Value,
    ) -> Result<Option<Self>, DecodeError> {
        if !Self::EVENT_TYPES.contains(&event_type) {
            return Ok(None);
        }
        let data = Self::upcast(event_type, schema_version, data);
        serde_json::from_value(json!({ "type": event_type, "data": data }))
            .map(Some)
            .map_err(|source| DecodeError {
                event_type: event_type.to_owned(),
                schema_version,
                source,
            })
    }
}

/// Implements [`EventPayload`] for an event enum whose every variant holds one payload:
/// `event_payload!(LicenseEvent { LicenseIssued, LicenseRevoked, … })`. A variant's event type
/// is its name, as serde tags it; the list of types and `event_type` both come from these
/// names, and the match is exhaustive, so a variant left out does not compile.
#[macro_export]
macro_rules! event_payload {
    ($enum:ident { $($variant:ident),+ $(,)? }) => {
        impl $crate::payload::EventPayload for $enum {
            const EVENT_TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];

            fn event_type(&self) -> &'static str {
                match self {
                    $($enum::$variant(_) => stringify!($variant),)+
                }
            }
        }
    };
}

/// The event type of one variant, checked against its enum:
/// `event_type!(AuditEvent::CheckpointSigned)` is `"CheckpointSigned"`.
#[macro_export]
macro_rules! event_type {
    ($enum:ident :: $variant:ident) => {{
        let _ = $enum::$variant;
        stringify!($variant)
    }};
}

/// A `&'static [&'static str]` of event types, made at compile time from whole enums and
/// single variants: `event_types![UserEvent, RefreshFamilyEvent]`,
/// `event_types![LicenseEvent::LicenseRevoked, HeartbeatEvent::InstallationHeartbeat]`.
#[macro_export]
macro_rules! event_types {
    ($($enum:ident $(:: $variant:ident)?),+ $(,)?) => {{
        const LISTS: &[&[&str]] = &[$($crate::event_types!(@list $enum $(:: $variant)?)),+];
        const TYPES: [&str; $crate::payload::total_len(LISTS)] =
            $crate::payload::concat_types(LISTS);
        &TYPES
    }};
    (@list $enum:ident) => {
        <$enum as $crate::payload::EventPayload>::EVENT_TYPES
    };
    (@list $enum:ident :: $variant:ident) => {
        &[$crate::event_type!($enum :: $variant)]
    };
}

/// How many event types the lists hold together (for [`event_types!`]).
pub const fn total_len(lists: &[&[&str]]) -> usize {
    let mut total = 0;
    let mut i = 0;
    while i < lists.len() {
        total += lists[i].len();
        i += 1;
    }
    total
}

/// The lists one after the other; `N` is their [`total_len`] (for [`event_types!`]).
pub const fn concat_types<const N: usize>(lists: &[&[&'static str]]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut at = 0;
    let mut i = 0;
    while i < lists.len() {
        let mut j = 0;
        while j < lists[i].len() {
            out[at] = lists[i][j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    out
}
