//! The license aggregate: pure decide/apply over the license's own stream. Installations
//! live here (their limit must hold under concurrency); heartbeats and usage do not.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use keyledger_events::license::{
    CertificateIssued, DeactivationReason, InstallationActivated, InstallationDeactivated,
    LicenseEvent, LicenseImported, LicenseIssued, LicensePolicyChanged, LicenseReinstated,
    LicenseRenewed, LicenseRevoked, LicenseStatus, LicenseSuspended, Tier,
};
use serde_json::Value;
use uuid::Uuid;

use super::policy::Policy;
use crate::execute::Aggregate;

#[derive(Debug, Clone, PartialEq)]
pub struct LicenseState {
    pub license_id: Uuid,
    pub status: LicenseStatus,
    pub tier: Tier,
    /// `None`: perpetual, never expires.
    pub expires_at: Option<DateTime<Utc>>,
    pub extra_entitlements: Vec<String>,
    pub max_installations: Option<u32>,
    /// Active installations and when each was activated.
    pub installations: BTreeMap<String, DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub enum License {
    #[default]
    Absent,
    Existing(LicenseState),
}

#[derive(Debug, Clone, PartialEq)]
pub enum LicenseCommand {
    Issue(IssueLicense),
    /// A legacy license with its history, all at once.
    Import {
        imported: LicenseImported,
        installations: Vec<InstallationActivated>,
        revoked: Option<LicenseRevoked>,
    },
    Revoke {
        reason: String,
        at: DateTime<Utc>,
    },
    Suspend {
        reason: String,
        at: DateTime<Utc>,
    },
    Reinstate {
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    Renew {
        valid_days: u32,
        at: DateTime<Utc>,
    },
    ChangePolicy {
        entitlements: Vec<String>,
        max_installations: Option<u32>,
        at: DateTime<Utc>,
    },
    Activate {
        installation_id: String,
        hostname: Option<String>,
        metadata: Value,
        at: DateTime<Utc>,
        policy: Arc<Policy>,
    },
    Deactivate {
        installation_id: String,
        reason: DeactivationReason,
        at: DateTime<Utc>,
    },
    /// Hand out a signed certificate valid for `valid_days` (never past the license's end).
    Certify {
        certificate_id: Uuid,
        installation_id: Option<String>,
        valid_days: u32,
        kid: String,
        at: DateTime<Utc>,
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
    /// `None`: perpetual; the tier's policy must allow it.
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: Value,
    pub entitlements: Vec<String>,
    pub max_installations: Option<u32>,
    pub policy: Arc<Policy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenseError {
    NotFound,
    AlreadyIssued,
    /// Revoked is final: every later command is refused.
    Revoked,
    AlreadySuspended,
    NotSuspended,
    /// A suspended license cannot take new installations.
    Suspended,
    TooManyInstallations {
        limit: u32,
    },
    InstallationNotFound,
    /// A perpetual license has no end to extend.
    Perpetual,
    /// The tier's policy forbids licenses without an end.
    PerpetualNotAllowed {
        tier: Tier,
    },
    /// Past its end: nothing more to certify.
    Expired,
}

impl LicenseState {
    /// The installation limit: the license's own, or its tier's.
    pub fn installation_limit(&self, policy: &Policy) -> u32 {
        self.max_installations
            .unwrap_or(policy.tier(self.tier).max_installations)
    }
}

impl Aggregate for License {
    type Event = LicenseEvent;
    type Command = LicenseCommand;
    type Error = LicenseError;

    fn apply(self, event: &LicenseEvent) -> License {
        let new = |license_id, tier, expires_at, extra: &[String], max| {
            License::Existing(LicenseState {
                license_id,
                status: LicenseStatus::Active,
                tier,
                expires_at,
                extra_entitlements: extra.to_vec(),
                max_installations: max,
                installations: BTreeMap::new(),
            })
        };
        match (self, event) {
            (_, LicenseEvent::LicenseIssued(e)) => new(
                e.license_id,
                e.tier,
                e.expires_at,
                &e.entitlements,
                e.max_installations,
            ),
            (_, LicenseEvent::LicenseImported(e)) => {
                new(e.license_id, e.tier, e.expires_at, &[], None)
            }
            (License::Absent, _) => License::Absent,
            (License::Existing(mut state), event) => {
                match event {
                    LicenseEvent::LicenseRevoked(_) => state.status = LicenseStatus::Revoked,
                    LicenseEvent::LicenseSuspended(_) => state.status = LicenseStatus::Suspended,
                    LicenseEvent::LicenseReinstated(_) => state.status = LicenseStatus::Active,
                    LicenseEvent::LicenseRenewed(e) => state.expires_at = Some(e.expires_at),
                    LicenseEvent::LicensePolicyChanged(e) => {
                        state.extra_entitlements = e.entitlements.clone();
                        state.max_installations = e.max_installations;
                    }
                    LicenseEvent::InstallationActivated(e) => {
                        state.installations.insert(e.installation_id.clone(), e.at);
                    }
                    LicenseEvent::InstallationDeactivated(e) => {
                        state.installations.remove(&e.installation_id);
                    }
                    LicenseEvent::LicenseIssued(_)
                    | LicenseEvent::LicenseImported(_)
                    | LicenseEvent::CertificateIssued(_) => {}
                }
                License::Existing(state)
            }
        }
    }

    /// One function per command; every command but issuing and importing acts on an existing
    /// license that is not revoked.
    fn decide(&self, command: &LicenseCommand) -> Result<Vec<LicenseEvent>, LicenseError> {
        match command {
            LicenseCommand::Issue(issue) => self.issue(issue),
            LicenseCommand::Import {
                imported,
                installations,
                revoked,
            } => self.import(imported, installations, revoked.as_ref()),
            LicenseCommand::Revoke { reason, at } => self.current()?.revoke(reason, *at),
            LicenseCommand::Suspend { reason, at } => self.current()?.suspend(reason, *at),
            LicenseCommand::Reinstate { reason, at } => {
                self.current()?.reinstate(reason.as_deref(), *at)
            }
            LicenseCommand::Renew { valid_days, at } => self.current()?.renew(*valid_days, *at),
            LicenseCommand::ChangePolicy {
                entitlements,
                max_installations,
                at,
            } => self
                .current()?
                .change_policy(entitlements, *max_installations, *at),
            LicenseCommand::Activate {
                installation_id,
                hostname,
                metadata,
                at,
                policy,
            } => self.current()?.activate(
                installation_id,
                hostname.as_deref(),
                metadata,
                *at,
                policy,
            ),
            LicenseCommand::Deactivate {
                installation_id,
                reason,
                at,
            } => self.current()?.deactivate(installation_id, *reason, *at),
            LicenseCommand::Certify {
                certificate_id,
                installation_id,
                valid_days,
                kid,
                at,
            } => self.current()?.certify(
                *certificate_id,
                installation_id.as_deref(),
                *valid_days,
                kid,
                *at,
            ),
        }
    }
}

impl License {
    fn issue(&self, issue: &IssueLicense) -> Result<Vec<LicenseEvent>, LicenseError> {
        if let License::Existing(_) = self {
            return Err(LicenseError::AlreadyIssued);
        }
        if issue.expires_at.is_none() && !issue.policy.tier(issue.tier).allow_perpetual {
            return Err(LicenseError::PerpetualNotAllowed { tier: issue.tier });
        }
        Ok(vec![LicenseEvent::LicenseIssued(LicenseIssued {
            license_id: issue.license_id,
            key_hash: issue.key_hash.clone(),
            key_prefix: issue.key_prefix.clone(),
            owner: issue.owner.clone(),
            tier: issue.tier,
            issued_at: issue.issued_at,
            expires_at: issue.expires_at,
            metadata: issue.metadata.clone(),
            entitlements: issue.entitlements.clone(),
            max_installations: issue.max_installations,
        })])
    }

    /// The legacy license, then its installations, then its revocation: its history at once.
    fn import(
        &self,
        imported: &LicenseImported,
        installations: &[InstallationActivated],
        revoked: Option<&LicenseRevoked>,
    ) -> Result<Vec<LicenseEvent>, LicenseError> {
        if let License::Existing(_) = self {
            return Err(LicenseError::AlreadyIssued);
        }
        let mut events = vec![LicenseEvent::LicenseImported(imported.clone())];
        events.extend(
            installations
                .iter()
                .cloned()
                .map(LicenseEvent::InstallationActivated),
        );
        events.extend(revoked.cloned().map(LicenseEvent::LicenseRevoked));
        Ok(events)
    }

    /// The license a command acts on: it must exist, and revoked is final.
    fn current(&self) -> Result<&LicenseState, LicenseError> {
        match self {
            License::Absent => Err(LicenseError::NotFound),
            License::Existing(state) if state.status == LicenseStatus::Revoked => {
                Err(LicenseError::Revoked)
            }
            License::Existing(state) => Ok(state),
        }
    }
}

impl LicenseState {
    fn revoke(&self, reason: &str, at: DateTime<Utc>) -> Result<Vec<LicenseEvent>, LicenseError> {
        Ok(vec![LicenseEvent::LicenseRevoked(LicenseRevoked {
            license_id: self.license_id,
            reason: reason.to_owned(),
            revoked_at: at,
        })])
    }

    fn suspend(&self, reason: &str, at: DateTime<Utc>) -> Result<Vec<LicenseEvent>, LicenseError> {
        if self.status == LicenseStatus::Suspended {
            return Err(LicenseError::AlreadySuspended);
        }
        Ok(vec![LicenseEvent::LicenseSuspended(LicenseSuspended {
            license_id: self.license_id,
            reason: reason.to_owned(),
            at,
        })])
    }

    fn reinstate(
        &self,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Vec<LicenseEvent>, LicenseError> {
        if self.status != LicenseStatus::Suspended {
            return Err(LicenseError::NotSuspended);
        }
        Ok(vec![LicenseEvent::LicenseReinstated(LicenseReinstated {
            license_id: self.license_id,
            reason: reason.map(str::to_owned),
            at,
        })])
    }

    /// Extends from the later of now and the current end; a perpetual license has no end.
    fn renew(&self, valid_days: u32, at: DateTime<Utc>) -> Result<Vec<LicenseEvent>, LicenseError> {
        let Some(expires_at) = self.expires_at else {
            return Err(LicenseError::Perpetual);
        };
        let from = expires_at.max(at);
        Ok(vec![LicenseEvent::LicenseRenewed(LicenseRenewed {
            license_id: self.license_id,
            valid_days,
            previous_expires_at: expires_at,
            expires_at: from + Duration::days(i64::from(valid_days)),
            at,
        })])
    }

    fn change_policy(
        &self,
        entitlements: &[String],
        max_installations: Option<u32>,
        at: DateTime<Utc>,
    ) -> Result<Vec<LicenseEvent>, LicenseError> {
        Ok(vec![LicenseEvent::LicensePolicyChanged(
            LicensePolicyChanged {
                license_id: self.license_id,
                entitlements: entitlements.to_vec(),
                max_installations,
                at,
            },
        )])
    }

    /// Activating an active installation again changes nothing; a new one needs a free seat
    /// on a license that is not suspended.
    fn activate(
        &self,
        installation_id: &str,
        hostname: Option<&str>,
        metadata: &Value,
        at: DateTime<Utc>,
        policy: &Policy,
    ) -> Result<Vec<LicenseEvent>, LicenseError> {
        if self.installations.contains_key(installation_id) {
            return Ok(vec![]);
        }
        if self.status == LicenseStatus::Suspended {
            return Err(LicenseError::Suspended);
        }
        let limit = self.installation_limit(policy);
        if self.installations.len() as u64 >= u64::from(limit) {
            return Err(LicenseError::TooManyInstallations { limit });
        }
        Ok(vec![LicenseEvent::InstallationActivated(
            InstallationActivated {
                license_id: self.license_id,
                installation_id: installation_id.to_owned(),
                hostname: hostname.map(str::to_owned),
                metadata: metadata.clone(),
                at,
            },
        )])
    }

    fn deactivate(
        &self,
        installation_id: &str,
        reason: DeactivationReason,
        at: DateTime<Utc>,
    ) -> Result<Vec<LicenseEvent>, LicenseError> {
        if !self.installations.contains_key(installation_id) {
            return Err(LicenseError::InstallationNotFound);
        }
        Ok(vec![LicenseEvent::InstallationDeactivated(
            InstallationDeactivated {
                license_id: self.license_id,
                installation_id: installation_id.to_owned(),
                reason,
                at,
            },
        )])
    }

    /// A certificate valid for `valid_days`, never past the license's end.
    fn certify(
        &self,
        certificate_id: Uuid,
        installation_id: Option<&str>,
        valid_days: u32,
        kid: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<LicenseEvent>, LicenseError> {
        if self.status == LicenseStatus::Suspended {
            return Err(LicenseError::Suspended);
        }
        if self.expires_at.is_some_and(|end| end <= at) {
            return Err(LicenseError::Expired);
        }
        if let Some(installation) = installation_id
            && !self.installations.contains_key(installation)
        {
            return Err(LicenseError::InstallationNotFound);
        }
        let wanted = at + Duration::days(i64::from(valid_days));
        Ok(vec![LicenseEvent::CertificateIssued(CertificateIssued {
            license_id: self.license_id,
            certificate_id,
            installation_id: installation_id.map(str::to_owned),
            issued_at: at,
            valid_until: self.expires_at.map_or(wanted, |end| end.min(wanted)),
            kid: kid.to_owned(),
        })])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + Duration::days(days)
    }

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn policy() -> Arc<Policy> {
        Arc::new(Policy::built_in())
    }

    fn given(events: &[LicenseEvent]) -> License {
        events.iter().fold(License::default(), License::apply)
    }

    fn issue_with(tier: Tier, max_installations: Option<u32>) -> LicenseCommand {
        LicenseCommand::Issue(IssueLicense {
            license_id: id(),
            key_hash: "ab".repeat(32),
            key_prefix: "lic_abcdefgh".into(),
            owner: "acme".into(),
            tier,
            issued_at: at(0),
            expires_at: Some(at(365)),
            metadata: json!({}),
            entitlements: vec!["sso".into()],
            max_installations,
            policy: policy(),
        })
    }

    fn issue_perpetual(tier: Tier) -> LicenseCommand {
        let LicenseCommand::Issue(issue) = issue_with(tier, None) else {
            unreachable!("issue_with gives an Issue command")
        };
        LicenseCommand::Issue(IssueLicense {
            expires_at: None,
            ..issue
        })
    }

    fn renew(valid_days: u32, on: i64) -> LicenseCommand {
        LicenseCommand::Renew {
            valid_days,
            at: at(on),
        }
    }

    fn issued() -> LicenseEvent {
        License::Absent
            .decide(&issue_with(Tier::Basic, None))
            .unwrap()
            .remove(0)
    }

    fn then(
        history: &[LicenseEvent],
        command: LicenseCommand,
    ) -> Result<Vec<LicenseEvent>, LicenseError> {
        given(history).decide(&command)
    }

    fn event(history: &[LicenseEvent], command: LicenseCommand) -> LicenseEvent {
        then(history, command).unwrap().remove(0)
    }

    fn revoke() -> LicenseCommand {
        LicenseCommand::Revoke {
            reason: "refund".into(),
            at: at(1),
        }
    }

    fn suspend() -> LicenseCommand {
        LicenseCommand::Suspend {
            reason: "unpaid".into(),
            at: at(1),
        }
    }

    fn reinstate() -> LicenseCommand {
        LicenseCommand::Reinstate {
            reason: None,
            at: at(2),
        }
    }

    fn activate(installation: &str) -> LicenseCommand {
        LicenseCommand::Activate {
            installation_id: installation.into(),
            hostname: None,
            metadata: json!({}),
            at: at(1),
            policy: policy(),
        }
    }

    fn deactivate(installation: &str) -> LicenseCommand {
        LicenseCommand::Deactivate {
            installation_id: installation.into(),
            reason: DeactivationReason::Released,
            at: at(2),
        }
    }

    #[test]
    fn issuing_a_new_license_records_its_overrides() {
        let events = then(&[], issue_with(Tier::Pro, Some(5))).unwrap();
        assert!(
            matches!(&events[..], [LicenseEvent::LicenseIssued(e)] if e.entitlements == ["sso"] && e.max_installations == Some(5))
        );
    }

    #[test]
    fn issuing_an_existing_license_id_is_rejected() {
        assert_eq!(
            then(&[issued()], issue_with(Tier::Pro, None)),
            Err(LicenseError::AlreadyIssued)
        );
    }

    #[test]
    fn revoking_an_active_license_records_the_reason() {
        assert!(
            matches!(event(&[issued()], revoke()), LicenseEvent::LicenseRevoked(e) if e.reason == "refund")
        );
    }

    #[test]
    fn revoking_an_unknown_license_is_not_found() {
        assert_eq!(then(&[], revoke()), Err(LicenseError::NotFound));
    }

    #[test]
    fn every_command_on_a_revoked_license_is_rejected() {
        let history = [issued(), event(&[issued()], revoke())];
        for command in [
            revoke(),
            suspend(),
            reinstate(),
            LicenseCommand::Renew {
                valid_days: 30,
                at: at(3),
            },
            LicenseCommand::ChangePolicy {
                entitlements: vec![],
                max_installations: None,
                at: at(3),
            },
            activate("m1"),
            deactivate("m1"),
        ] {
            assert_eq!(
                then(&history, command.clone()),
                Err(LicenseError::Revoked),
                "{command:?}"
            );
        }
        assert_eq!(
            then(&history, issue_with(Tier::Pro, None)),
            Err(LicenseError::AlreadyIssued)
        );
    }

    #[test]
    fn suspending_and_reinstating_toggle_the_license() {
        let suspended = event(&[issued()], suspend());
        assert!(matches!(&suspended, LicenseEvent::LicenseSuspended(e) if e.reason == "unpaid"));
        let history = [issued(), suspended];
        assert_eq!(
            then(&history, suspend()),
            Err(LicenseError::AlreadySuspended)
        );
        assert!(matches!(
            event(&history, reinstate()),
            LicenseEvent::LicenseReinstated(_)
        ));
        assert_eq!(
            then(&[issued()], reinstate()),
            Err(LicenseError::NotSuspended)
        );
    }

    #[test]
    fn renewing_extends_from_the_later_of_now_and_the_expiry() {
        let early = event(
            &[issued()],
            LicenseCommand::Renew {
                valid_days: 30,
                at: at(10),
            },
        );
        assert!(
            matches!(early, LicenseEvent::LicenseRenewed(e) if e.expires_at == at(395) && e.previous_expires_at == at(365))
        );
        // After expiry the new period starts now.
        let late = event(
            &[issued()],
            LicenseCommand::Renew {
                valid_days: 30,
                at: at(400),
            },
        );
        assert!(matches!(late, LicenseEvent::LicenseRenewed(e) if e.expires_at == at(430)));
    }

    #[test]
    fn a_suspended_license_may_be_renewed_but_takes_no_installation() {
        let history = [issued(), event(&[issued()], suspend())];
        assert!(
            then(
                &history,
                LicenseCommand::Renew {
                    valid_days: 1,
                    at: at(3)
                }
            )
            .is_ok()
        );
        assert_eq!(then(&history, activate("m1")), Err(LicenseError::Suspended));
    }

    #[test]
    fn activations_stop_at_the_tiers_limit() {
        // Basic allows 3 installations.
        let mut history = vec![issued()];
        for machine in ["m1", "m2", "m3"] {
            let activated = event(&history, activate(machine));
            history.push(activated);
        }
        assert_eq!(
            then(&history, activate("m4")),
            Err(LicenseError::TooManyInstallations { limit: 3 })
        );
        // Activating an active installation again changes nothing.
        assert_eq!(then(&history, activate("m2")), Ok(vec![]));
        // Releasing a seat makes room.
        let released = event(&history, deactivate("m1"));
        history.push(released);
        assert!(then(&history, activate("m4")).is_ok());
    }

    #[test]
    fn a_license_override_replaces_the_tiers_limit() {
        let history = [event(&[], issue_with(Tier::Basic, Some(1)))];
        let first = event(&history, activate("m1"));
        assert_eq!(
            then(&[history[0].clone(), first], activate("m2")),
            Err(LicenseError::TooManyInstallations { limit: 1 })
        );
        let changed = event(
            &history,
            LicenseCommand::ChangePolicy {
                entitlements: vec![],
                max_installations: Some(2),
                at: at(1),
            },
        );
        let history = [history[0].clone(), changed];
        let first = event(&history, activate("m1"));
        assert!(
            then(
                &[history[0].clone(), history[1].clone(), first],
                activate("m2")
            )
            .is_ok()
        );
    }

    #[test]
    fn deactivating_an_unknown_installation_is_not_found() {
        assert_eq!(
            then(&[issued()], deactivate("nope")),
            Err(LicenseError::InstallationNotFound)
        );
    }

    #[test]
    fn importing_records_the_license_its_installations_and_its_revocation() {
        let imported = LicenseImported {
            license_id: id(),
            key_hash: "cd".repeat(32),
            key_prefix: "K3DEG-".into(),
            owner: "user0@example.org".into(),
            tier: Tier::Basic,
            issued_at: at(0),
            expires_at: Some(at(365)),
            legacy_id: 1,
        };
        let installation = InstallationActivated {
            license_id: id(),
            installation_id: "m1".into(),
            hostname: None,
            metadata: json!({}),
            at: at(1),
        };
        let revoked = LicenseRevoked {
            license_id: id(),
            reason: "legacy status revoked".into(),
            revoked_at: at(2),
        };
        let command = LicenseCommand::Import {
            imported,
            installations: vec![installation],
            revoked: Some(revoked),
        };
        let events = then(&[], command.clone()).unwrap();
        assert_eq!(events.len(), 3);
        let state = given(&events);
        assert!(
            matches!(state, License::Existing(s) if s.status == LicenseStatus::Revoked && s.installations.contains_key("m1"))
        );
        assert_eq!(
            given(&events).decide(&command),
            Err(LicenseError::AlreadyIssued)
        );
    }

    #[test]
    fn a_perpetual_license_is_issued_without_an_end() {
        let events = then(&[], issue_perpetual(Tier::Pro)).unwrap();
        assert!(matches!(&events[..], [LicenseEvent::LicenseIssued(e)] if e.expires_at.is_none()));
        assert!(matches!(given(&events), License::Existing(s) if s.expires_at.is_none()));
    }

    #[test]
    fn a_tier_whose_policy_forbids_perpetual_licenses_refuses_one() {
        // The built-in policy forbids them on the free tier.
        assert_eq!(
            then(&[], issue_perpetual(Tier::Free)),
            Err(LicenseError::PerpetualNotAllowed { tier: Tier::Free })
        );
        // A free license with an end is fine.
        assert!(then(&[], issue_with(Tier::Free, None)).is_ok());
    }

    #[test]
    fn renewing_a_perpetual_license_is_refused() {
        let history = then(&[], issue_perpetual(Tier::Basic)).unwrap();
        assert_eq!(then(&history, renew(30, 10)), Err(LicenseError::Perpetual));
    }

    #[test]
    fn a_revoked_perpetual_license_answers_revoked_before_perpetual() {
        let mut history = then(&[], issue_perpetual(Tier::Basic)).unwrap();
        let revoked = event(&history, revoke());
        history.push(revoked);
        assert_eq!(then(&history, renew(30, 10)), Err(LicenseError::Revoked));
    }

    #[test]
    fn a_perpetual_license_takes_installations_and_suspensions_like_any_other() {
        let history = then(&[], issue_perpetual(Tier::Basic)).unwrap();
        assert!(then(&history, activate("m1")).is_ok());
        assert!(matches!(
            event(&history, suspend()),
            LicenseEvent::LicenseSuspended(_)
        ));
    }

    #[test]
    fn an_imported_license_without_an_expiry_is_perpetual_and_refuses_renewal() {
        let imported = LicenseImported {
            license_id: id(),
            key_hash: "ef".repeat(32),
            key_prefix: "GEDP9-".into(),
            owner: "User1@Example.org".into(),
            tier: Tier::Free,
            issued_at: at(0),
            expires_at: None,
            legacy_id: 2,
        };
        // Imported history is kept as it was, whatever the tier's policy says today.
        let events = then(
            &[],
            LicenseCommand::Import {
                imported,
                installations: vec![],
                revoked: None,
            },
        )
        .unwrap();
        assert!(matches!(given(&events), License::Existing(s) if s.expires_at.is_none()));
        assert_eq!(then(&events, renew(30, 10)), Err(LicenseError::Perpetual));
    }
}
