//! The license aggregate: pure decide/apply over the license's own stream.

use chrono::{DateTime, Utc};
use keyledger_events::license::{LicenseEvent, LicenseIssued, LicenseRevoked, Tier};
use serde_json::Value;
use uuid::Uuid;

use crate::execute::Aggregate;

#[derive(Debug, Clone, Default, PartialEq)]
pub enum License {
    #[default]
    Absent,
    Active {
        license_id: Uuid,
    },
    Revoked {
        license_id: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum LicenseCommand {
    Issue(IssueLicense),
    Revoke {
        license_id: Uuid,
        reason: String,
        revoked_at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct IssueLicense {
    pub license_id: Uuid,
    pub key_hash: String,
    pub key_prefix: String,
    pub owner: String,
    pub tier: Tier,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub metadata: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenseError {
    NotFound,
    AlreadyIssued,
    AlreadyRevoked,
}

impl Aggregate for License {
    type Event = LicenseEvent;
    type Command = LicenseCommand;
    type Error = LicenseError;

    fn apply(self, event: &LicenseEvent) -> License {
        match event {
            LicenseEvent::LicenseIssued(e) => License::Active {
                license_id: e.license_id,
            },
            LicenseEvent::LicenseRevoked(e) => License::Revoked {
                license_id: e.license_id,
            },
        }
    }

    fn decide(&self, command: &LicenseCommand) -> Result<Vec<LicenseEvent>, LicenseError> {
        match (self, command) {
            (License::Absent, LicenseCommand::Issue(issue)) => {
                Ok(vec![LicenseEvent::LicenseIssued(LicenseIssued {
                    license_id: issue.license_id,
                    key_hash: issue.key_hash.clone(),
                    key_prefix: issue.key_prefix.clone(),
                    owner: issue.owner.clone(),
                    tier: issue.tier,
                    issued_at: issue.issued_at,
                    expires_at: issue.expires_at,
                    metadata: issue.metadata.clone(),
                })])
            }
            (_, LicenseCommand::Issue(_)) => Err(LicenseError::AlreadyIssued),
            (License::Absent, LicenseCommand::Revoke { .. }) => Err(LicenseError::NotFound),
            (License::Revoked { .. }, LicenseCommand::Revoke { .. }) => {
                Err(LicenseError::AlreadyRevoked)
            }
            (
                License::Active { license_id },
                LicenseCommand::Revoke {
                    reason, revoked_at, ..
                },
            ) => Ok(vec![LicenseEvent::LicenseRevoked(LicenseRevoked {
                license_id: *license_id,
                reason: reason.clone(),
                revoked_at: *revoked_at,
            })]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn given(events: &[LicenseEvent]) -> License {
        events.iter().fold(License::default(), License::apply)
    }

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn issue() -> LicenseCommand {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        LicenseCommand::Issue(IssueLicense {
            license_id: id(),
            key_hash: "ab".repeat(32),
            key_prefix: "lic_abcdefgh".into(),
            owner: "acme".into(),
            tier: Tier::Pro,
            issued_at: at,
            expires_at: at + chrono::Duration::days(365),
            metadata: json!({}),
        })
    }

    fn revoke() -> LicenseCommand {
        LicenseCommand::Revoke {
            license_id: id(),
            reason: "refund".into(),
            revoked_at: DateTime::from_timestamp(1_700_000_100, 0).unwrap(),
        }
    }

    fn issued() -> LicenseEvent {
        License::Absent.decide(&issue()).unwrap().remove(0)
    }

    fn revoked() -> LicenseEvent {
        given(&[issued()]).decide(&revoke()).unwrap().remove(0)
    }

    #[test]
    fn issuing_a_new_license_records_license_issued() {
        let events = given(&[]).decide(&issue()).unwrap();
        assert!(
            matches!(&events[..], [LicenseEvent::LicenseIssued(e)] if e.owner == "acme" && e.tier == Tier::Pro)
        );
    }

    #[test]
    fn issuing_an_existing_license_id_is_rejected() {
        assert_eq!(
            given(&[issued()]).decide(&issue()),
            Err(LicenseError::AlreadyIssued)
        );
    }

    #[test]
    fn revoking_an_active_license_records_the_reason() {
        let events = given(&[issued()]).decide(&revoke()).unwrap();
        assert!(matches!(&events[..], [LicenseEvent::LicenseRevoked(e)] if e.reason == "refund"));
    }

    #[test]
    fn revoking_a_revoked_license_is_rejected() {
        assert_eq!(
            given(&[issued(), revoked()]).decide(&revoke()),
            Err(LicenseError::AlreadyRevoked)
        );
    }

    #[test]
    fn revoking_an_unknown_license_is_not_found() {
        assert_eq!(given(&[]).decide(&revoke()), Err(LicenseError::NotFound));
    }

    #[test]
    fn reissuing_a_revoked_license_is_rejected() {
        assert_eq!(
            given(&[issued(), revoked()]).decide(&issue()),
            Err(LicenseError::AlreadyIssued)
        );
    }
}
