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
    use crate::spec::Spec;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn start() -> FamilyCommand {
        FamilyCommand::Start {
            family_id: Uuid::nil(),
            user_id: Uuid::nil(),
            token_hash: "h1".into(),
            expires_at: at(100),
            at: at(0),
        }
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

    /// What `rotate(old, new, now)` records.
    fn rotated(old: &str, new: &str, now: i64) -> RefreshFamilyEvent {
        RefreshFamilyEvent::RefreshTokenRotated(RefreshTokenRotated {
            family_id: Uuid::nil(),
            user_id: Uuid::nil(),
            old_hash: old.into(),
            new_hash: new.into(),
            expires_at: at(now + 100),
            at: at(now),
        })
    }

    fn revoked(reason: RevokeReason, presented: Option<&str>, now: i64) -> RefreshFamilyEvent {
        RefreshFamilyEvent::RefreshFamilyRevoked(RefreshFamilyRevoked {
            family_id: Uuid::nil(),
            user_id: Uuid::nil(),
            reason,
            presented_hash: presented.map(Into::into),
            at: at(now),
        })
    }

    fn logout() -> FamilyCommand {
        FamilyCommand::Revoke {
            reason: RevokeReason::Logout,
            at: at(5),
        }
    }

    #[test]
    fn given_nothing_when_started_then_the_family_holds_its_first_token() {
        RefreshFamily::given([]).when(start()).then([started()]);
        RefreshFamily::given([started()])
            .when(start())
            .then_error(FamilyError::AlreadyExists);
    }

    #[test]
    fn given_a_family_when_its_live_token_is_presented_then_it_rotates() {
        RefreshFamily::given([started()])
            .when(rotate("h1", "h2", 10))
            .then([rotated("h1", "h2", 10)]);
    }

    #[test]
    fn given_a_family_when_a_token_not_its_own_is_presented_then_it_is_unknown() {
        RefreshFamily::given([started()])
            .when(rotate("other", "h2", 10))
            .then_error(FamilyError::UnknownToken);
    }

    #[test]
    fn given_a_rotated_token_when_presented_again_then_the_family_is_revoked_for_reuse() {
        RefreshFamily::given([started(), rotated("h1", "h2", 10)])
            .when(rotate("h1", "h3", 20))
            .then([revoked(RevokeReason::Reuse, Some("h1"), 20)]);
        // After that, the newest token is dead too.
        RefreshFamily::given([
            started(),
            rotated("h1", "h2", 10),
            revoked(RevokeReason::Reuse, Some("h1"), 20),
        ])
        .when(rotate("h2", "h4", 30))
        .then_error(FamilyError::Revoked);
    }

    #[test]
    fn given_a_family_when_its_token_has_expired_then_refresh_is_refused() {
        RefreshFamily::given([started()])
            .when(rotate("h1", "h2", 100))
            .then_error(FamilyError::Expired);
    }

    #[test]
    fn given_a_revoked_family_when_revoked_again_then_nothing_happens() {
        RefreshFamily::given([started()])
            .when(logout())
            .then([revoked(RevokeReason::Logout, None, 5)]);
        let history = [started(), revoked(RevokeReason::Logout, None, 5)];
        RefreshFamily::given(history.clone())
            .when(logout())
            .then([]);
        RefreshFamily::given(history)
            .when(rotate("h1", "h2", 6))
            .then_error(FamilyError::Revoked);
    }

    #[test]
    fn given_no_family_when_rotated_then_not_found() {
        RefreshFamily::given([])
            .when(rotate("h1", "h2", 1))
            .then_error(FamilyError::NotFound);
    }
}
