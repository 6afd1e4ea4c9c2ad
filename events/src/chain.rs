//! The global hash chain: `hash = SHA-256(previous hash || canonical bytes of this event)`.
//!
//! Appends are serialized by the append lock, so every event has exactly one predecessor and
//! `keyledger verify` can recompute the chain from position 1.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The predecessor of the first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// The fields of an event that the chain covers: everything stored except the hash itself.
pub struct ChainInput<'a> {
    pub position: i64,
    pub event_id: Uuid,
    pub stream_id: &'a str,
    pub version: i64,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub data: &'a Value,
    pub metadata: &'a Value,
    pub recorded_at: DateTime<Utc>,
}

pub fn event_hash(previous: &[u8], event: &ChainInput<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(event.position.to_be_bytes());
    hasher.update(event.event_id.as_bytes());
    field(&mut hasher, event.stream_id.as_bytes());
    hasher.update(event.version.to_be_bytes());
    field(&mut hasher, event.event_type.as_bytes());
    hasher.update(event.schema_version.to_be_bytes());
    field(&mut hasher, &canonical_json(event.data));
    field(&mut hasher, &canonical_json(event.metadata));
    hasher.update(event.recorded_at.timestamp_micros().to_be_bytes());
    hasher.finalize().into()
}

/// Length-prefixed, so that no two different field sequences hash the same bytes.
fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// JSON with object members sorted by key and no whitespace: the same bytes for the value we
/// wrote and for the value PostgreSQL's `jsonb` gives back.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_leaf(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(member, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        leaf => write_leaf(leaf, out),
    }
}

fn write_leaf(value: &Value, out: &mut Vec<u8>) {
    // Serializing a scalar into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Truncates a timestamp to the microsecond precision that `timestamptz` stores.
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_members_at_every_depth() {
        let value = json!({"b": 1, "a": {"d": [2, {"z": null, "y": "x"}], "c": true}});
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"a":{"c":true,"d":[2,{"y":"x","z":null}]},"b":1}"#
        );
    }

    #[test]
    fn a_changed_field_changes_the_hash() {
        let data = json!({"owner": "a"});
        let other = json!({"owner": "b"});
        let meta = json!({});
        let at = to_micros(Utc::now());
        let input = |data| ChainInput {
            position: 1,
            event_id: Uuid::nil(),
            stream_id: "license-x",
            version: 1,
            event_type: "LicenseIssued",
            schema_version: 1,
            data,
            metadata: &meta,
            recorded_at: at,
        };
        assert_ne!(
            event_hash(&GENESIS, &input(&data)),
            event_hash(&GENESIS, &input(&other))
        );
        assert_eq!(
            event_hash(&GENESIS, &input(&data)),
            event_hash(&GENESIS, &input(&data))
        );
    }
}
