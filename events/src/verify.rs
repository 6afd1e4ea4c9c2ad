//! `keyledger verify`: recomputes the hash chain from position 1 and names the first position
//! where the stored log differs from what was written.

use deadpool_postgres::GenericClient;

use crate::chain::{self, ChainInput};
use crate::store::read_all_on;

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
        let batch = read_all_on(client, expected_position - 1, 10_000).await?;
        if batch.is_empty() {
            break;
        }
        for event in &batch {
            if event.position != expected_position {
                return Ok(Report {
                    events,
                    head,
                    finding: Some(Finding::Missing {
                        expected: expected_position,
                        found: event.position,
                    }),
                });
            }
            let computed = chain::event_hash(
                &previous,
                &ChainInput {
                    position: event.position,
                    event_id: event.event_id,
                    stream_id: &event.stream_id,
                    version: event.version,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    data: &event.data,
                    metadata: &event.metadata,
                    recorded_at: event.recorded_at,
                },
            );
            if computed[..] != event.hash[..] {
                return Ok(Report {
                    events,
                    head,
                    finding: Some(Finding::Altered {
                        position: event.position,
                    }),
                });
            }
            previous = computed.to_vec();
            events += 1;
            expected_position += 1;
            let here = Head {
                position: event.position,
                hash: computed.to_vec(),
            };
            if expect_head.is_some_and(|h| h.position == event.position) {
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
