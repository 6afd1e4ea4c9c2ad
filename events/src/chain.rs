//! The global hash chain: `hash = SHA-256(previous hash || canonical bytes of this event)`.
//!
//! Appends are serialized by the append lock, so every event has exactly one predecessor and
//! `keyledger verify` can recompute the chain from position 1.
//!
//! The JSON fields are covered as the exact text stored in the log's `json` columns (rule 2):
//! the writer renders a value once (`canonical_json`), hashes those bytes and stores the same
//! bytes, so `verify` hashes what it reads without parsing it, whatever the JSON holds. Events
//! written before the log kept its text (rule 1) were hashed over the canonical JSON of their
//! value; `verify` parses their stored text (exactly: serde_json's `float_roundtrip`) and
//! renders it again.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The predecessor of the first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// How an event's hash covers its JSON fields (the `hash_rule` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashRule {
    /// The canonical JSON of the parsed value: events written before the log kept its text.
    CanonicalValue = 1,
    /// The stored text itself, byte for byte.
    StoredText = 2,
}

impl HashRule {
    /// The rule of every event the service writes now.
    pub const CURRENT: HashRule = HashRule::StoredText;

    pub fn from_column(value: i16) -> Option<HashRule> {
        match value {
            1 => Some(HashRule::CanonicalValue),
            2 => Some(HashRule::StoredText),
            _ => None,
        }
    }

    pub fn column(self) -> i16 {
        self as i16
    }

    /// The bytes of a stored JSON field that the hash covers.
    pub fn covered<'a>(self, stored: &'a str) -> Result<Cow<'a, [u8]>, serde_json::Error> {
        match self {
            HashRule::StoredText => Ok(Cow::Borrowed(stored.as_bytes())),
            HashRule::CanonicalValue => {
                let value: Value = serde_json::from_str(stored)?;
                Ok(Cow::Owned(canonical_json(&value)))
            }
        }
    }
}

/// The fields of an event that the chain covers: everything stored except the hash itself.
/// `data` and `metadata` are the bytes their hash rule covers.
pub struct ChainInput<'a> {
    pub position: i64,
    pub event_id: Uuid,
    pub stream_id: &'a str,
    pub version: i64,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub data: &'a [u8],
    pub metadata: &'a [u8],
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
    field(&mut hasher, event.data);
    field(&mut hasher, event.metadata);
    hasher.update(event.recorded_at.timestamp_micros().to_be_bytes());
    hasher.finalize().into()
}

/// Length-prefixed, so that no two different field sequences hash the same bytes.
fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// JSON with object members sorted by key and no whitespace. Numbers are written as serde_json
/// writes them (integers in full, floats as the shortest text that parses back to the same
/// double), so parsing the text and rendering it again gives the same bytes.
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
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
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
        let data = canonical_json(&json!({"owner": "a"}));
        let other = canonical_json(&json!({"owner": "b"}));
        let meta = canonical_json(&json!({}));
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

    /// Any JSON value the service can hold: 64-bit integers, every finite double (-0.0,
    /// subnormals, the extremes), strings with escapes and non-BMP characters, deep nesting.
    pub(crate) fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            prop_oneof![
                Just(-0.0f64),
                Just(f64::MAX),
                Just(f64::MIN_POSITIVE),
                Just(5e-324),
                Just(1e19),
                Just(3.917_620_000_000_000_3)
            ]
            .prop_map(Value::from),
            "\\PC*".prop_map(Value::String),
            "[\\x01-\\x1f\"\\\\/\u{7f}\u{2028}\u{10000}-\u{10ffff}]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(8, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn canonical_text_parses_back_to_the_same_value_and_bytes(value in any_json()) {
            let text = canonical_json(&value);
            let parsed: Value = serde_json::from_slice(&text).unwrap();
            prop_assert_eq!(&parsed, &value);
            // Bit for bit, not just ==: -0.0 stays -0.0.
            prop_assert_eq!(canonical_json(&parsed), text.clone());
            let stored = String::from_utf8(text).unwrap();
            prop_assert_eq!(
                HashRule::CanonicalValue.covered(&stored).unwrap(),
                HashRule::StoredText.covered(&stored).unwrap()
            );
        }
    }
}
