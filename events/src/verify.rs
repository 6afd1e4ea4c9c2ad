//! `keyledger verify`: recomputes the hash chain from position 1 and names the first position
//! where the stored log differs from what was written.

use deadpool_postgres::GenericClient;

use crate::chain::{self, ChainInput, HashRule};
use crate::store::JsonText;

/// The stored columns the chain covers, with the JSON as stored text: verify never needs to
/// parse what it hashes (rule 2), so no stored value can stop it.
const READ_STORED: &str = "SELECT position, event_id, stream_id, version, event_type, \
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
    pub finding: Option<Finding>,
}

/// Walks the whole log in position order.
pub async fn verify(
    client: &impl GenericClient,
    expect_head: Option<&Head>,
) -> Result<Report, tokio_postgres::Error> {
    let mut previous = chain::GENESIS.to_vec();
    let mut expected_position = 1;
    let mut events = 0;
    let mut head = None;
    let mut at_expected: Option<Head> = None;
    loop {
        let statement = client.prepare_cached(READ_STORED).await?;
        let rows = client
            .query(&statement, &[&(expected_position - 1), &10_000i64])
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let position: i64 = row.try_get(0)?;
            if position != expected_position {
                return Ok(Report {
                    events,
                    head,
                    finding: Some(Finding::Missing {
                        expected: expected_position,
                        found: position,
                    }),
                });
            }
            let JsonText(data) = row.try_get(6)?;
            let JsonText(metadata) = row.try_get(7)?;
            let stored_hash: Vec<u8> = row.try_get(9)?;
            let rule: i16 = row.try_get(10)?;
            let covered = HashRule::from_column(rule)
                .ok_or_else(|| format!("unknown hash rule {rule}"))
                .and_then(|rule| {
                    let data = rule.covered(&data).map_err(|e| e.to_string())?;
                    let metadata = rule.covered(&metadata).map_err(|e| e.to_string())?;
                    Ok((data, metadata))
                });
            let (data, metadata) = match covered {
                Ok(covered) => covered,
                Err(reason) => {
                    return Ok(Report {
                        events,
                        head,
                        finding: Some(Finding::Unverifiable { position, reason }),
                    });
                }
            };
            let stream_id: String = row.try_get(2)?;
            let event_type: String = row.try_get(4)?;
            let computed = chain::event_hash(
                &previous,
                &ChainInput {
                    position,
                    event_id: row.try_get(1)?,
                    stream_id: &stream_id,
                    version: row.try_get(3)?,
                    event_type: &event_type,
                    schema_version: row.try_get(5)?,
                    data: &data,
                    metadata: &metadata,
                    recorded_at: row.try_get(8)?,
                },
            );
            if computed[..] != stored_hash[..] {
                return Ok(Report {
                    events,
                    head,
                    finding: Some(Finding::Altered { position }),
                });
            }
            previous = computed.to_vec();
            events += 1;
            expected_position += 1;
            let here = Head {
                position,
                hash: computed.to_vec(),
            };
            if expect_head.is_some_and(|h| h.position == position) {
                at_expected = Some(here.clone());
            }
            head = Some(here);
        }
    }
    let finding = expect_head.and_then(|expected| match &at_expected {
        Some(found) if found == expected => None,
        found => Some(Finding::HeadMismatch {
            expected: expected.clone(),
            found: found.clone(),
        }),
    });
    Ok(Report {
        events,
        head,
        finding,
    })
}
