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
use crate::values::{InstallationId, Owner, Reason};

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
        reason: Reason,
        at: DateTime<Utc>,
    },
    Suspend {
        reason: Reason,
        at: DateTime<Utc>,
    },
    Reinstate {
        reason: Option<Reason>,
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
        installation_id: InstallationId,
        hostname: Option<String>,
        metadata: Value,
        at: DateTime<Utc>,
        policy: Arc<Policy>,
    },
    Deactivate {
        installation_id: InstallationId,
        reason: DeactivationReason,
        at: DateTime<Utc>,
    },
    /// Hand out a signed certificate valid for `valid_days` (never past the license's end).
    Certify {
        certificate_id: Uuid,
        installation_id: Option<InstallationId>,
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
    pub owner: Owner,
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
    /// A renewal would end the license more than [`MAX_TERM_DAYS`] from now.
    EndTooFar,
}

/// The furthest a license's end may lie ahead: 100 years, as when it is issued.
pub const MAX_TERM_DAYS: u32 = 36_500;

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
            owner: issue.owner.to_string(),
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
        let until = from + Duration::days(i64::from(valid_days));
        if until > at + Duration::days(i64::from(MAX_TERM_DAYS)) {
            return Err(LicenseError::EndTooFar);
        }
        Ok(vec![LicenseEvent::LicenseRenewed(LicenseRenewed {
            license_id: self.license_id,
            valid_days,
            previous_expires_at: expires_at,
            expires_at: until,
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
    use crate::spec::Spec;
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

    // Commands.

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

    fn change_policy(max_installations: Option<u32>) -> LicenseCommand {
        LicenseCommand::ChangePolicy {
            entitlements: vec![],
            max_installations,
            at: at(1),
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

    fn certify(installation: Option<&str>, valid_days: u32, on: i64) -> LicenseCommand {
        LicenseCommand::Certify {
            certificate_id: Uuid::from_u128(99),
            installation_id: installation.map(Into::into),
            valid_days,
            kid: "k1".into(),
            at: at(on),
        }
    }

    // Events.

    /// What `issue_with(tier, max_installations)` records.
    fn issued_as(tier: Tier, max_installations: Option<u32>) -> LicenseEvent {
        LicenseEvent::LicenseIssued(LicenseIssued {
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
        })
    }

    fn issued() -> LicenseEvent {
        issued_as(Tier::Basic, None)
    }

    /// What `issue_perpetual(tier)` records.
    fn issued_perpetual(tier: Tier) -> LicenseEvent {
        let LicenseEvent::LicenseIssued(issued) = issued_as(tier, None) else {
            unreachable!("issued_as gives a LicenseIssued event")
        };
        LicenseEvent::LicenseIssued(LicenseIssued {
            expires_at: None,
            ..issued
        })
    }

    fn revoked() -> LicenseEvent {
        LicenseEvent::LicenseRevoked(LicenseRevoked {
            license_id: id(),
            reason: "refund".into(),
            revoked_at: at(1),
        })
    }

    fn suspended() -> LicenseEvent {
        LicenseEvent::LicenseSuspended(LicenseSuspended {
            license_id: id(),
            reason: "unpaid".into(),
            at: at(1),
        })
    }

    fn reinstated() -> LicenseEvent {
        LicenseEvent::LicenseReinstated(LicenseReinstated {
            license_id: id(),
            reason: None,
            at: at(2),
        })
    }

    fn renewed(valid_days: u32, previous: i64, until: i64, on: i64) -> LicenseEvent {
        LicenseEvent::LicenseRenewed(LicenseRenewed {
            license_id: id(),
            valid_days,
            previous_expires_at: at(previous),
            expires_at: at(until),
            at: at(on),
        })
    }

    fn policy_changed(max_installations: Option<u32>) -> LicenseEvent {
        LicenseEvent::LicensePolicyChanged(LicensePolicyChanged {
            license_id: id(),
            entitlements: vec![],
            max_installations,
            at: at(1),
        })
    }

    fn activated(installation: &str) -> LicenseEvent {
        LicenseEvent::InstallationActivated(InstallationActivated {
            license_id: id(),
            installation_id: installation.into(),
            hostname: None,
            metadata: json!({}),
            at: at(1),
        })
    }

    fn deactivated(installation: &str) -> LicenseEvent {
        LicenseEvent::InstallationDeactivated(InstallationDeactivated {
            license_id: id(),
            installation_id: installation.into(),
            reason: DeactivationReason::Released,
            at: at(2),
        })
    }

    fn certified(installation: Option<&str>, on: i64, until: i64) -> LicenseEvent {
        LicenseEvent::CertificateIssued(CertificateIssued {
            license_id: id(),
            certificate_id: Uuid::from_u128(99),
            installation_id: installation.map(Into::into),
            issued_at: at(on),
            valid_until: at(until),
            kid: "k1".into(),
        })
    }

    /// A license as `issued_as(tier, None)` leaves it, but for what the test says.
    fn standing(tier: Tier, expires_at: Option<DateTime<Utc>>) -> LicenseState {
        LicenseState {
            license_id: id(),
            status: LicenseStatus::Active,
            tier,
            expires_at,
            extra_entitlements: vec!["sso".into()],
            max_installations: None,
            installations: BTreeMap::new(),
        }
    }

    fn import(imported: LicenseImported, revoked: Option<LicenseRevoked>) -> LicenseCommand {
        LicenseCommand::Import {
            imported,
            installations: vec![],
            revoked,
        }
    }

    #[test]
    fn issuing_a_new_license_records_its_overrides() {
        License::given([])
            .when(issue_with(Tier::Pro, Some(5)))
            .then([issued_as(Tier::Pro, Some(5))]);
    }

    #[test]
    fn issuing_an_existing_license_id_is_rejected() {
        License::given([issued()])
            .when(issue_with(Tier::Pro, None))
            .then_error(LicenseError::AlreadyIssued);
    }

    #[test]
    fn revoking_an_active_license_records_the_reason() {
        License::given([issued()]).when(revoke()).then([revoked()]);
    }

    #[test]
    fn revoking_an_unknown_license_is_not_found() {
        License::given([])
            .when(revoke())
            .then_error(LicenseError::NotFound);
    }

    #[test]
    fn every_command_on_a_revoked_license_is_rejected() {
        for command in [
            revoke(),
            suspend(),
            reinstate(),
            renew(30, 3),
            change_policy(None),
            activate("m1"),
            deactivate("m1"),
            certify(None, 30, 3),
        ] {
            License::given([issued(), revoked()])
                .when(command)
                .then_error(LicenseError::Revoked);
        }
        License::given([issued(), revoked()])
            .when(issue_with(Tier::Pro, None))
            .then_error(LicenseError::AlreadyIssued);
    }

    #[test]
    fn suspending_and_reinstating_toggle_the_license() {
        License::given([issued()])
            .when(suspend())
            .then([suspended()]);
        License::given([issued(), suspended()])
            .when(suspend())
            .then_error(LicenseError::AlreadySuspended);
        License::given([issued(), suspended()])
            .when(reinstate())
            .then([reinstated()]);
        License::given([issued()])
            .when(reinstate())
            .then_error(LicenseError::NotSuspended);
    }

    #[test]
    fn renewing_extends_from_the_later_of_now_and_the_expiry() {
        License::given([issued()])
            .when(renew(30, 10))
            .then([renewed(30, 365, 395, 10)]);
        // After expiry the new period starts now.
        License::given([issued()])
            .when(renew(30, 400))
            .then([renewed(30, 365, 430, 400)]);
    }

    #[test]
    fn a_suspended_license_may_be_renewed_but_takes_no_installation() {
        License::given([issued(), suspended()])
            .when(renew(1, 3))
            .then([renewed(1, 365, 366, 3)]);
        License::given([issued(), suspended()])
            .when(activate("m1"))
            .then_error(LicenseError::Suspended);
    }

    #[test]
    fn activations_stop_at_the_tiers_limit() {
        // Basic allows 3 installations.
        let mut history = vec![issued()];
        for machine in ["m1", "m2", "m3"] {
            License::given(history.clone())
                .when(activate(machine))
                .then([activated(machine)]);
            history.push(activated(machine));
        }
        License::given(history.clone())
            .when(activate("m4"))
            .then_error(LicenseError::TooManyInstallations { limit: 3 });
        // Activating an active installation again changes nothing.
        License::given(history.clone())
            .when(activate("m2"))
            .then([]);
        // Releasing a seat makes room.
        License::given(history.clone())
            .when(deactivate("m1"))
            .then([deactivated("m1")]);
        history.push(deactivated("m1"));
        License::given(history)
            .when(activate("m4"))
            .then([activated("m4")]);
    }

    #[test]
    fn a_license_override_replaces_the_tiers_limit() {
        let issued = issued_as(Tier::Basic, Some(1));
        License::given([issued.clone()])
            .when(activate("m1"))
            .then([activated("m1")]);
        License::given([issued.clone(), activated("m1")])
            .when(activate("m2"))
            .then_error(LicenseError::TooManyInstallations { limit: 1 });
        License::given([issued.clone()])
            .when(change_policy(Some(2)))
            .then([policy_changed(Some(2))]);
        License::given([issued, policy_changed(Some(2)), activated("m1")])
            .when(activate("m2"))
            .then([activated("m2")]);
    }

    #[test]
    fn deactivating_an_unknown_installation_is_not_found() {
        License::given([issued()])
            .when(deactivate("nope"))
            .then_error(LicenseError::InstallationNotFound);
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
            imported: imported.clone(),
            installations: vec![installation.clone()],
            revoked: Some(revoked.clone()),
        };
        let events = [
            LicenseEvent::LicenseImported(imported),
            LicenseEvent::InstallationActivated(installation),
            LicenseEvent::LicenseRevoked(revoked),
        ];
        let state = License::given([])
            .when(command.clone())
            .then(events.clone());
        assert_eq!(
            state,
            License::Existing(LicenseState {
                status: LicenseStatus::Revoked,
                extra_entitlements: vec![],
                installations: BTreeMap::from([("m1".to_owned(), at(1))]),
                ..standing(Tier::Basic, Some(at(365)))
            })
        );
        License::given(events)
            .when(command)
            .then_error(LicenseError::AlreadyIssued);
    }

    #[test]
    fn a_perpetual_license_is_issued_without_an_end() {
        let state = License::given([])
            .when(issue_perpetual(Tier::Pro))
            .then([issued_perpetual(Tier::Pro)]);
        assert_eq!(state, License::Existing(standing(Tier::Pro, None)));
    }

    #[test]
    fn a_tier_whose_policy_forbids_perpetual_licenses_refuses_one() {
        // The built-in policy forbids them on the free tier.
        License::given([])
            .when(issue_perpetual(Tier::Free))
            .then_error(LicenseError::PerpetualNotAllowed { tier: Tier::Free });
        // A free license with an end is fine.
        License::given([])
            .when(issue_with(Tier::Free, None))
            .then([issued_as(Tier::Free, None)]);
    }

    #[test]
    fn a_renewal_never_ends_a_license_more_than_100_years_ahead() {
        // Issued at 0 for 365 days: renewed at 10, it may reach day 10 + 36500, no further.
        License::given([issued()])
            .when(renew(36_500 - 355, 10))
            .then([renewed(36_500 - 355, 365, 36_510, 10)]);
        License::given([issued()])
            .when(renew(36_500 - 354, 10))
            .then_error(LicenseError::EndTooFar);
    }

    #[test]
    fn renewing_a_perpetual_license_is_refused() {
        License::given([issued_perpetual(Tier::Basic)])
            .when(renew(30, 10))
            .then_error(LicenseError::Perpetual);
    }

    #[test]
    fn a_revoked_perpetual_license_answers_revoked_before_perpetual() {
        License::given([issued_perpetual(Tier::Basic)])
            .when(revoke())
            .then([revoked()]);
        License::given([issued_perpetual(Tier::Basic), revoked()])
            .when(renew(30, 10))
            .then_error(LicenseError::Revoked);
    }

    #[test]
    fn a_perpetual_license_takes_installations_and_suspensions_like_any_other() {
        License::given([issued_perpetual(Tier::Basic)])
            .when(activate("m1"))
            .then([activated("m1")]);
        License::given([issued_perpetual(Tier::Basic)])
            .when(suspend())
            .then([suspended()]);
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
        let event = LicenseEvent::LicenseImported(imported.clone());
        let state = License::given([])
            .when(import(imported, None))
            .then([event.clone()]);
        assert_eq!(
            state,
            License::Existing(LicenseState {
                extra_entitlements: vec![],
                ..standing(Tier::Free, None)
            })
        );
        License::given([event])
            .when(renew(30, 10))
            .then_error(LicenseError::Perpetual);
    }

    #[test]
    fn a_certificate_lasts_its_days_but_never_past_the_licenses_end() {
        License::given([issued(), activated("m1")])
            .when(certify(Some("m1"), 30, 10))
            .then([certified(Some("m1"), 10, 40)]);
        License::given([issued()])
            .when(certify(None, 30, 350))
            .then([certified(None, 350, 365)]);
        License::given([issued_perpetual(Tier::Basic)])
            .when(certify(None, 30, 350))
            .then([certified(None, 350, 380)]);
    }

    #[test]
    fn a_certificate_is_refused_when_suspended_expired_or_for_an_unknown_installation() {
        License::given([issued(), suspended()])
            .when(certify(None, 30, 10))
            .then_error(LicenseError::Suspended);
        License::given([issued()])
            .when(certify(None, 30, 365))
            .then_error(LicenseError::Expired);
        License::given([issued()])
            .when(certify(Some("m1"), 30, 10))
            .then_error(LicenseError::InstallationNotFound);
        License::given([])
            .when(certify(None, 30, 10))
            .then_error(LicenseError::NotFound);
    }
}
