//! The refresh-token family aggregate: pure decide/apply. A family holds one live token; a
//! refresh replaces it; presenting a replaced token again revokes the family (RFC 9700 reuse
//! detection). Two refreshes racing with the same token: the append of one moves the stream's
//! version, the other decides again on the new state and finds its token replaced: reuse.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use keyledger_events::user::{
    RefreshFamilyEvent, RefreshFamilyRevoked, RefreshFamilyStarted, RefreshTokenRotated,
    RevokeReason,
};
use uuid::Uuid;

use crate::execute::Aggregate;

#[derive(Debug, Clone, Default, PartialEq)]
pub enum RefreshFamily {
    #[default]
    Absent,
    Existing {
        family_id: Uuid,
        user_id: Uuid,
        /// The live token's hash; `None` once revoked.
        current: Option<String>,
        expires_at: DateTime<Utc>,
        /// Hashes of the tokens already replaced.
        rotated: HashSet<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum FamilyCommand {
    Start {
        family_id: Uuid,
        user_id: Uuid,
        token_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    Rotate {
        presented_hash: String,
        new_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    Revoke {
        reason: RevokeReason,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FamilyError {
    NotFound,
    AlreadyExists,
    /// The family was revoked (logout, reuse, …): none of its tokens works.
    Revoked,
    Expired,
    /// The token is not one of this family's.
    UnknownToken,
}

impl RefreshFamily {
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            RefreshFamily::Existing { user_id, .. } => Some(*user_id),
            RefreshFamily::Absent => None,
        }
    }
}

impl Aggregate for RefreshFamily {
    type Event = RefreshFamilyEvent;
    type Command = FamilyCommand;
    type Error = FamilyError;

    fn apply(self, event: &RefreshFamilyEvent) -> RefreshFamily {
        match (self, event) {
            (_, RefreshFamilyEvent::RefreshFamilyStarted(e)) => RefreshFamily::Existing {
                family_id: e.family_id,
                user_id: e.user_id,
                current: Some(e.token_hash.clone()),
                expires_at: e.expires_at,
                rotated: HashSet::new(),
            },
            (
                RefreshFamily::Existing {
                    family_id,
                    user_id,
                    mut rotated,
                    ..
                },
                RefreshFamilyEvent::RefreshTokenRotated(e),
            ) => {
                rotated.insert(e.old_hash.clone());
                RefreshFamily::Existing {
                    family_id,
                    user_id,
                    current: Some(e.new_hash.clone()),
                    expires_at: e.expires_at,
                    rotated,
                }
            }
            (
                RefreshFamily::Existing {
                    family_id,
                    user_id,
                    expires_at,
                    rotated,
                    ..
                },
                RefreshFamilyEvent::RefreshFamilyRevoked(_),
            ) => RefreshFamily::Existing {
                family_id,
                user_id,
                current: None,
                expires_at,
                rotated,
            },
            (state, _) => state,
        }
    }

    fn decide(&self, command: &FamilyCommand) -> Result<Vec<RefreshFamilyEvent>, FamilyError> {
        let RefreshFamily::Existing {
            family_id,
            user_id,
            current,
            expires_at,
            rotated,
        } = self
        else {
            return match command {
                FamilyCommand::Start {
                    family_id,
                    user_id,
                    token_hash,
                    expires_at,
                    at,
                } => Ok(vec![RefreshFamilyEvent::RefreshFamilyStarted(
                    RefreshFamilyStarted {
                        family_id: *family_id,
                        user_id: *user_id,
                        token_hash: token_hash.clone(),
                        expires_at: *expires_at,
                        at: *at,
                    },
                )]),
                _ => Err(FamilyError::NotFound),
            };
        };
        let revoked = |reason, presented_hash: Option<String>, at: &DateTime<Utc>| {
            RefreshFamilyEvent::RefreshFamilyRevoked(RefreshFamilyRevoked {
                family_id: *family_id,
                user_id: *user_id,
                reason,
                presented_hash,
                at: *at,
            })
        };
        match command {
            FamilyCommand::Start { .. } => Err(FamilyError::AlreadyExists),
            FamilyCommand::Revoke { .. } if current.is_none() => Ok(vec![]),
            FamilyCommand::Revoke { reason, at } => Ok(vec![revoked(*reason, None, at)]),
            FamilyCommand::Rotate {
                presented_hash, at, ..
            } if rotated.contains(presented_hash) => match current {
                // Reuse of a replaced token: the whole family ends, and that is recorded.
                Some(_) => Ok(vec![revoked(
                    RevokeReason::Reuse,
                    Some(presented_hash.clone()),
                    at,
                )]),
                None => Err(FamilyError::Revoked),
            },
            FamilyCommand::Rotate { .. } if current.is_none() => Err(FamilyError::Revoked),
            FamilyCommand::Rotate {
                presented_hash,
                new_hash,
                expires_at: new_expires_at,
                at,
            } => {
                if current.as_deref() != Some(presented_hash.as_str()) {
                    return Err(FamilyError::UnknownToken);
                }
                if *at >= *expires_at {
                    return Err(FamilyError::Expired);
                }
                Ok(vec![RefreshFamilyEvent::RefreshTokenRotated(
                    RefreshTokenRotated {
                        family_id: *family_id,
                        user_id: *user_id,
                        old_hash: presented_hash.clone(),
                        new_hash: new_hash.clone(),
                        expires_at: *new_expires_at,
                        at: *at,
                    },
                )])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn started() -> RefreshFamilyEvent {
        RefreshFamilyEvent::RefreshFamilyStarted(RefreshFamilyStarted {
            family_id: Uuid::nil(),
            user_id: Uuid::nil(),
            token_hash: "h1".into(),
            expires_at: at(100),
            at: at(0),
        })
    }

    fn rotate(presented: &str, new: &str, now: i64) -> FamilyCommand {
        FamilyCommand::Rotate {
            presented_hash: presented.into(),
            new_hash: new.into(),
            expires_at: at(now + 100),
            at: at(now),
        }
    }

    fn given(events: &[RefreshFamilyEvent]) -> RefreshFamily {
        events
            .iter()
            .fold(RefreshFamily::default(), |s, e| s.apply(e))
    }

    #[test]
    fn given_a_family_when_its_live_token_is_presented_then_it_rotates() {
        let events = given(&[started()]).decide(&rotate("h1", "h2", 10)).unwrap();
        let [RefreshFamilyEvent::RefreshTokenRotated(e)] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert_eq!((e.old_hash.as_str(), e.new_hash.as_str()), ("h1", "h2"));
    }

    #[test]
    fn given_a_rotated_token_when_presented_again_then_the_family_is_revoked_for_reuse() {
        let state = given(&[started()]);
        let rotated = state.decide(&rotate("h1", "h2", 10)).unwrap();
        let state = given(&[started(), rotated[0].clone()]);
        let events = state.decide(&rotate("h1", "h3", 20)).unwrap();
        let [RefreshFamilyEvent::RefreshFamilyRevoked(e)] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert_eq!(e.reason, RevokeReason::Reuse);
        assert_eq!(e.presented_hash.as_deref(), Some("h1"));
        // After that, the newest token is dead too.
        let revoked = state.clone().apply(&events[0]);
        assert_eq!(
            revoked.decide(&rotate("h2", "h4", 30)),
            Err(FamilyError::Revoked)
        );
    }

    #[test]
    fn given_a_family_when_its_token_has_expired_then_refresh_is_refused() {
        assert_eq!(
            given(&[started()]).decide(&rotate("h1", "h2", 100)),
            Err(FamilyError::Expired)
        );
    }

    #[test]
    fn given_a_revoked_family_when_revoked_again_then_nothing_happens() {
        let logout = FamilyCommand::Revoke {
            reason: RevokeReason::Logout,
            at: at(5),
        };
        let events = given(&[started()]).decide(&logout).unwrap();
        assert_eq!(events.len(), 1);
        let state = given(&[started(), events[0].clone()]);
        assert_eq!(state.decide(&logout), Ok(vec![]));
        assert_eq!(
            state.decide(&rotate("h1", "h2", 6)),
            Err(FamilyError::Revoked)
        );
    }

    #[test]
    fn given_no_family_when_rotated_then_not_found() {
        assert_eq!(
            given(&[]).decide(&rotate("h1", "h2", 1)),
            Err(FamilyError::NotFound)
        );
    }
}
