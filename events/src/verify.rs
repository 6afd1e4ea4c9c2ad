//! `keyledger verify`: recomputes the hash chain from position 1 and names the first position
//! where the stored log differs from what was written.

use deadpool_postgres::GenericClient;

use crate::audit::{AuditEvent, KeySet, SignedCheckpoint};
use crate::chain::{self, ChainInput, HashRule};
use crate::store::JsonText;

/// The stored columns the chain covers, with the JSON as stored text: verify never needs to
/// parse what it hashes (rule 2), so no stored value can stop it.
pub const READ_STORED: &str = "SELECT position, event_id, stream_id, version, event_type, \
    schema_version, data, metadata, recorded_at, hash, hash_rule \
    FROM events WHERE position > $1 ORDER BY position LIMIT $2";

#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub position: i64,
    pub hash: Vec<u8>,
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.position, hex::encode(&self.hash))
    }
}

impl std::str::FromStr for Head {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (position, hash) = text
            .split_once(':')
            .ok_or_else(|| "expected <position>:<hex hash>".to_owned())?;
        Ok(Head {
            position: position
                .parse()
                .map_err(|_| format!("`{position}` is not a position"))?,
            hash: hex::decode(hash).map_err(|_| format!("`{hash}` is not a hex hash"))?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// The row at `position` is not the row that was written (edited, or replaced).
    Altered { position: i64 },
    /// Positions jump: rows between were deleted.
    Missing { expected: i64, found: i64 },
    /// The log is shorter than the auditor's head, or differs from it there.
    HeadMismatch { expected: Head, found: Option<Head> },
    /// The row at `position` cannot be checked: its hash rule is unknown, or (rule 1) its JSON
    /// does not parse. Only a row written around the service can be like this.
    Unverifiable { position: i64, reason: String },
    /// A line of an export is not an event.
    Malformed { line: usize, reason: String },
    /// The signed checkpoint recorded at `position` does not verify with the published keys.
    BadCheckpoint { position: i64, reason: String },
    /// The signed checkpoint recorded at `position` states a hash at `at` that the chain does
    /// not have there.
    CheckpointMismatch { position: i64, at: i64 },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Altered { position } => write!(
                f,
                "the event at position {position} does not match the hash chain: it was altered after it was written"
            ),
            Finding::Missing { expected, found } => write!(
                f,
                "the event at position {expected} is missing (the next stored position is {found})"
            ),
            Finding::HeadMismatch {
                expected,
                found: Some(found),
            } => write!(
                f,
                "the expected head {expected} does not match the log there ({found}): the log was cut or rewritten"
            ),
            Finding::HeadMismatch {
                expected,
                found: None,
            } => write!(
                f,
                "the expected head {expected} is past the end of the log: events were cut off"
            ),
            Finding::BadCheckpoint { position, reason } => write!(
                f,
                "the signed checkpoint at position {position} does not verify: {reason}"
            ),
            Finding::CheckpointMismatch { position, at } => write!(
                f,
                "the signed checkpoint at position {position} states a head at {at} that the chain does not have: the log was rewritten"
            ),
            Finding::Malformed { line, reason } => {
                write!(f, "line {line} of the export is not an event ({reason})")
            }
            Finding::Unverifiable { position, reason } => write!(
                f,
                "the event at position {position} cannot be checked ({reason}): it was not written by the service"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub events: i64,
    pub head: Option<Head>,
    /// Signed checkpoints checked (`None` without keys: none were).
    pub checkpoints: Option<i64>,
    pub finding: Option<Finding>,
}

/// One event as stored: every column the chain covers, the JSON fields as their stored text,
/// the hash and its rule. It is also one line of an export (`keyledger export`,
/// `GET /v1/events/export`): `data` and `metadata` are JSON strings holding the stored text, so
/// a line carries the exact bytes the hash covers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredEvent {
    pub position: i64,
    pub event_id: uuid::Uuid,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub data: String,
    pub metadata: String,
    #[serde(with = "micros")]
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    #[serde(with = "hex::serde")]
    pub hash: Vec<u8>,
    pub hash_rule: i16,
}

/// RFC 3339 with exactly six fractional digits: the precision the log keeps and hashes.
mod micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// The columns of a [`StoredEvent`], in its field order.
pub const STORED_COLUMNS: &str = concat!(crate::envelope_columns!(), ", hash_rule");

impl StoredEvent {
    /// Reads a row of [`STORED_COLUMNS`].
    pub fn from_row(row: &tokio_postgres::Row) -> Result<StoredEvent, tokio_postgres::Error> {
        let JsonText(data) = row.try_get(6)?;
        let JsonText(metadata) = row.try_get(7)?;
        Ok(StoredEvent {
            position: row.try_get(0)?,
            event_id: row.try_get(1)?,
            stream_id: row.try_get(2)?,
            version: row.try_get(3)?,
            event_type: row.try_get(4)?,
            schema_version: row.try_get(5)?,
            data,
            metadata,
            recorded_at: row.try_get(8)?,
            hash: row.try_get(9)?,
            hash_rule: row.try_get(10)?,
        })
    }
}

/// How many of the latest hashes the check keeps to compare signed checkpoints with: a
/// checkpoint is recorded right after the head it signs.
const RECENT_HASHES: usize = 100_000;

/// Checks events one at a time, in position order, from the first event of the log.
pub struct Chain<'a> {
    previous: Vec<u8>,
    expected_position: i64,
    events: i64,
    head: Option<Head>,
    expect_head: Option<&'a Head>,
    at_expected: Option<Head>,
    /// With keys, every `CheckpointSigned` event is checked too.
    keys: Option<&'a KeySet>,
    recent: std::collections::VecDeque<(i64, [u8; 32])>,
    checkpoints: i64,
}

impl<'a> Chain<'a> {
    pub fn new(expect_head: Option<&'a Head>) -> Chain<'a> {
        Chain {
            previous: chain::GENESIS.to_vec(),
            expected_position: 1,
            events: 0,
            head: None,
            expect_head,
            at_expected: None,
            keys: None,
            recent: std::collections::VecDeque::new(),
            checkpoints: 0,
        }
    }

    /// Also checks each signed checkpoint in the log: its signature against `keys`, and the
    /// hash it states against the chain.
    pub fn with_keys(mut self, keys: &'a KeySet) -> Chain<'a> {
        self.keys = Some(keys);
        self
    }

    fn check_checkpoint(&self, event: &StoredEvent) -> Result<(), Finding> {
        let position = event.position;
        let bad = |reason: String| Finding::BadCheckpoint { position, reason };
        let signed: SignedCheckpoint = serde_json::from_str(&event.data)
            .map_err(|e| bad(format!("not a signed checkpoint ({e})")))?;
        if let Some(keys) = self.keys {
            signed.verify(keys).map_err(|e| bad(e.to_string()))?;
        }
        let at = signed.checkpoint.position;
        let stated = hex::decode(&signed.checkpoint.hash)
            .map_err(|_| bad("its hash is not hex".to_owned()))?;
        match self.recent.iter().rev().find(|(p, _)| *p == at) {
            Some((_, hash)) if hash[..] == stated[..] => Ok(()),
            Some(_) => Err(Finding::CheckpointMismatch { position, at }),
            None => Err(bad(format!(
                "it signs position {at}, which is not among the {RECENT_HASHES} events before it"
            ))),
        }
    }

    /// Checks the next event; a finding ends the check (the report of `finish_with` names it).
    pub fn check(&mut self, event: &StoredEvent) -> Result<(), Finding> {
        let position = event.position;
        if position != self.expected_position {
            return Err(Finding::Missing {
                expected: self.expected_position,
                found: position,
            });
        }
        let rule = event.hash_rule;
        let (data, metadata) = HashRule::from_column(rule)
            .ok_or_else(|| format!("unknown hash rule {rule}"))
            .and_then(|rule| {
                let data = rule.covered(&event.data).map_err(|e| e.to_string())?;
                let metadata = rule.covered(&event.metadata).map_err(|e| e.to_string())?;
                Ok((data, metadata))
            })
            .map_err(|reason| Finding::Unverifiable { position, reason })?;
        let computed = chain::event_hash(
            &self.previous,
            &ChainInput {
                position,
                event_id: event.event_id,
                stream_id: &event.stream_id,
                version: event.version,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                data: &data,
                metadata: &metadata,
                recorded_at: event.recorded_at,
            },
        );
        if computed[..] != event.hash[..] {
            return Err(Finding::Altered { position });
        }
        if self.keys.is_some() {
            if event.event_type == crate::event_type!(AuditEvent::CheckpointSigned) {
                self.check_checkpoint(event)?;
                self.checkpoints += 1;
            }
            if self.recent.len() == RECENT_HASHES {
                self.recent.pop_front();
            }
            self.recent.push_back((position, computed));
        }
        self.previous = computed.to_vec();
        self.events += 1;
        self.expected_position += 1;
        let here = Head {
            position,
            hash: computed.to_vec(),
        };
        if self.expect_head.is_some_and(|h| h.position == position) {
            self.at_expected = Some(here.clone());
        }
        self.head = Some(here);
        Ok(())
    }

    /// The report once every event was checked (`finding: None`) or one failed.
    pub fn finish_with(self, finding: Option<Finding>) -> Report {
        let finding = finding.or_else(|| {
            self.expect_head
                .and_then(|expected| match &self.at_expected {
                    Some(found) if found == expected => None,
                    found => Some(Finding::HeadMismatch {
                        expected: expected.clone(),
                        found: found.clone(),
                    }),
                })
        });
        Report {
            events: self.events,
            head: self.head,
            checkpoints: self.keys.map(|_| self.checkpoints),
            finding,
        }
    }
}

/// The events after position `after` up to `until` (inclusive), at most `limit`, as stored.
pub async fn read_stored(
    client: &impl GenericClient,
    after: i64,
    until: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {STORED_COLUMNS} FROM events WHERE position > $1 AND position <= $2 \
             ORDER BY position LIMIT $3"
        ))
        .await?;
    client
        .query(&statement, &[&after, &until, &limit])
        .await?
        .iter()
        .map(StoredEvent::from_row)
        .collect()
}

/// Walks the whole log in position order.
pub async fn verify(
    client: &impl GenericClient,
    mut chain: Chain<'_>,
) -> Result<Report, tokio_postgres::Error> {
    let mut after = 0i64;
    loop {
        let statement = client.prepare_cached(READ_STORED).await?;
        let rows = client.query(&statement, &[&after, &10_000i64]).await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let event = StoredEvent::from_row(row)?;
            if let Err(finding) = chain.check(&event) {
                return Ok(chain.finish_with(Some(finding)));
            }
            after = event.position;
        }
    }
    Ok(chain.finish_with(None))
}

/// Verifies an export (NDJSON, one [`StoredEvent`] a line) without a database. A line that is
/// not an event is reported by its line number.
pub fn verify_export(
    reader: impl std::io::BufRead,
    mut chain: Chain<'_>,
) -> std::io::Result<Report> {
    for (index, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let finding = match serde_json::from_str::<StoredEvent>(&line) {
            Ok(event) => chain.check(&event).err(),
            Err(error) => Some(Finding::Malformed {
                line: index + 1,
                reason: error.to_string(),
            }),
        };
        if let Some(finding) = finding {
            return Ok(chain.finish_with(Some(finding)));
        }
    }
    Ok(chain.finish_with(None))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;

    /// A chain of events with the given stored texts (any text, JSON or not, with any
    /// character), hashed as the writer hashes them.
    fn chain_of(texts: &[(String, String)]) -> Vec<StoredEvent> {
        let mut previous = chain::GENESIS.to_vec();
        let mut events = Vec::new();
        for (index, (data, metadata)) in texts.iter().enumerate() {
            let position = index as i64 + 1;
            let event_id = uuid::Uuid::from_u128(position as u128);
            let recorded_at = Utc
                .timestamp_micros(1_764_000_000_000_000 + position)
                .unwrap();
            let hash = chain::event_hash(
                &previous,
                &ChainInput {
                    position,
                    event_id,
                    stream_id: "test-1",
                    version: position,
                    event_type: "Tested",
                    schema_version: 1,
                    data: data.as_bytes(),
                    metadata: metadata.as_bytes(),
                    recorded_at,
                },
            );
            previous = hash.to_vec();
            events.push(StoredEvent {
                position,
                event_id,
                stream_id: "test-1".to_owned(),
                version: position,
                event_type: "Tested".to_owned(),
                schema_version: 1,
                data: data.clone(),
                metadata: metadata.clone(),
                recorded_at,
                hash: hash.to_vec(),
                hash_rule: HashRule::StoredText.column(),
            });
        }
        events
    }

    fn export(events: &[StoredEvent]) -> String {
        events
            .iter()
            .map(|event| serde_json::to_string(event).unwrap() + "\n")
            .collect()
    }

    proptest! {
        #[test]
        fn any_stored_text_exports_to_one_line_that_verifies_and_a_changed_byte_is_named(
            texts in prop::collection::vec(("\\PC*|[\\n\\r\"\\\\\u{2028}]{0,4}", "\\PC{0,40}"), 1..8),
            victim in any::<prop::sample::Index>(),
        ) {
            let events = chain_of(&texts);
            let text = export(&events);
            prop_assert_eq!(text.lines().count(), events.len());
            for (line, event) in text.lines().zip(&events) {
                prop_assert_eq!(&serde_json::from_str::<StoredEvent>(line).unwrap(), event);
            }
            let report =
                verify_export(std::io::Cursor::new(text.as_bytes()), Chain::new(None)).unwrap();
            prop_assert_eq!(report.finding, None);
            prop_assert_eq!(report.events, events.len() as i64);

            let mut altered = events.clone();
            let at = victim.index(altered.len());
            altered[at].data.push(' ');
            let report = verify_export(
                std::io::Cursor::new(export(&altered).as_bytes()),
                Chain::new(None),
            )
            .unwrap();
            prop_assert_eq!(
                report.finding,
                Some(Finding::Altered { position: at as i64 + 1 })
            );
        }
    }
}
