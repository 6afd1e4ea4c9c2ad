//! Throttling of failed logins, per account and per client address, with `governor` keyed
//! limiters.
//!
//! Each failed login spends one unit of the account's budget and one of the address's
//! (`RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT`, `RATE_LIMIT_LOGIN_FAILURES_PER_IP`, `N/unit`
//! refilled evenly over the window). The failure that spends the last unit locks that account
//! or address until the budget has a unit again: [`LoginThrottle::check`] answers
//! [`RetryAfter`] until then, before the password is even looked at. A success refunds nothing
//! (governor cannot give units back); budgets refill with time only.
//!
//! The login handler calls, in this order: `check(account, ip)` (refuse with 429 when it
//! fails), verify the password, then `record_failure(account, ip)` or
//! `record_success(account, ip)`. `account` is a hash of the normalised email, never the email
//! or anything secret, so the throttle's memory holds nothing worth stealing.
//!
//! Logins checked before a concurrent failure locks the key still run; the `login` route
//! class limits how many one client can start at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use axum::http::StatusCode;

use crate::error::{ApiError, Code};
use crate::rate_limit::Rate;

/// How long until a throttled login may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, rounded up, at least 1 (for the `Retry-After` header).
    pub fn seconds(self) -> u64 {
        let whole = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        whole.max(1)
    }

    /// The answer to a throttled login: 429 `RATE_LIMITED` with `Retry-After`, the same for an
    /// unknown account and a known one.
    pub fn problem(self) -> ApiError {
        let seconds = self.seconds();
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited,
            format!("too many failed logins; retry in {seconds} s"),
        )
        .with_member("limit_class", "login_failures");
        error.retry_after = Some(seconds);
        error
    }
}

type Limiter<C> = RateLimiter<String, DashMapStateStore<String>, C, StateInformationMiddleware>;

struct Budget<C: Clock> {
    limiter: Limiter<C>,
    /// Keys whose budget was found empty, and until when.
    locked: Mutex<HashMap<String, C::Instant>>,
}

impl<C: Clock + Clone> Budget<C> {
    fn new(quota: Quota, clock: &C) -> Budget<C> {
        Budget {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            locked: Mutex::new(HashMap::new()),
        }
    }

    fn locked_for(&self, key: &str, now: C::Instant) -> Option<Duration> {
        let locked = self.locked.lock().ok()?;
        let until = *locked.get(key)?;
        (until > now).then(|| until.duration_since(now).into())
    }

    /// Spends a unit; when that empties the budget (or it was empty), locks the key until
    /// the next unit. A refused check changes no state, so asking again after the last unit
    /// was spent tells when the next one comes.
    fn spend(&self, key: &str) {
        let key = key.to_owned();
        let refused = match self.limiter.check_key(&key) {
            Ok(snapshot) if snapshot.remaining_burst_capacity() == 0 => {
                self.limiter.check_key(&key).err()
            }
            Ok(_) => None,
            Err(not_until) => Some(not_until),
        };
        if let (Some(not_until), Ok(mut locked)) = (refused, self.locked.lock()) {
            locked.insert(key, not_until.earliest_possible());
        }
    }

    fn prune(&self, now: C::Instant) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        if let Ok(mut locked) = self.locked.lock() {
            locked.retain(|_, until| *until > now);
            locked.shrink_to_fit();
        }
    }
}

/// Failed logins per account and per client address; `off` budgets never throttle.
pub struct LoginThrottle<C: Clock + Clone = DefaultClock> {
    clock: C,
    account: Option<Budget<C>>,
    ip: Option<Budget<C>>,
}

impl LoginThrottle {
    pub fn new(per_account: Rate, per_ip: Rate) -> LoginThrottle {
        LoginThrottle::with_clock(per_account, per_ip, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LoginThrottle<C> {
    pub fn with_clock(per_account: Rate, per_ip: Rate, clock: C) -> LoginThrottle<C> {
        LoginThrottle {
            account: per_account.quota().map(|q| Budget::new(q, &clock)),
            ip: per_ip.quota().map(|q| Budget::new(q, &clock)),
            clock,
        }
    }

    fn ip_key(ip: IpAddr) -> String {
        ip.to_string()
    }

    /// `Err` while the account or the address is locked out by earlier failures.
    pub fn check(&self, account: &str, ip: IpAddr) -> Result<(), RetryAfter> {
        let now = self.clock.now();
        let waits = [
            self.account
                .as_ref()
                .and_then(|b| b.locked_for(account, now)),
            self.ip
                .as_ref()
                .and_then(|b| b.locked_for(&Self::ip_key(ip), now)),
        ];
        match waits.into_iter().flatten().max() {
            Some(wait) => {
                metrics::counter!("keyledger_login_throttled_total").increment(1);
                Err(RetryAfter(wait))
            }
            None => Ok(()),
        }
    }

    /// A wrong password (or an unknown account): spends a unit of both budgets.
    pub fn record_failure(&self, account: &str, ip: IpAddr) {
        if let Some(budget) = &self.account {
            budget.spend(account);
        }
        if let Some(budget) = &self.ip {
            budget.spend(&Self::ip_key(ip));
        }
    }

    /// A successful login. Failures already spent stay spent until their budget refills, so
    /// that guessing between one's own logins gains nothing.
    pub fn record_success(&self, account: &str, ip: IpAddr) {
        let _ = (account, ip);
        metrics::counter!("keyledger_login_successes_total").increment(1);
    }

    /// Forgets accounts and addresses whose budget is full again.
    pub fn prune(&self) {
        let now = self.clock.now();
        for budget in [&self.account, &self.ip].into_iter().flatten() {
            budget.prune(now);
        }
    }

    /// Accounts and addresses remembered (for tests and metrics).
    pub fn keys(&self) -> usize {
        [&self.account, &self.ip]
            .into_iter()
            .flatten()
            .map(|b| b.limiter.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::Per;
    use governor::clock::FakeRelativeClock;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const ELSEWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 9));

    fn throttle(
        per_account: u32,
        per_ip: u32,
    ) -> (LoginThrottle<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let throttle = LoginThrottle::with_clock(
            Rate::new(per_account, Per::Minute),
            Rate::new(per_ip, Per::Minute),
            clock.clone(),
        );
        (throttle, clock)
    }

    #[test]
    fn an_account_is_refused_after_its_failures_are_spent_and_allowed_again_once_one_refills() {
        let (throttle, clock) = throttle(3, 100);
        for _ in 0..3 {
            assert_eq!(throttle.check("alice", HOME), Ok(()));
            throttle.record_failure("alice", HOME);
        }
        // Three failures are the budget: the third locks the account, from any address.
        let wait = throttle
            .check("alice", ELSEWHERE)
            .expect_err("alice is locked");
        assert!(wait.0 <= Duration::from_secs(20), "{wait:?}");
        assert_eq!(wait.seconds(), 20);

        clock.advance(Duration::from_secs(19));
        assert!(throttle.check("alice", HOME).is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(throttle.check("alice", HOME), Ok(()));
    }

    #[test]
    fn another_account_is_not_locked_by_failures_on_the_first() {
        let (throttle, _clock) = throttle(1, 100);
        throttle.record_failure("alice", HOME);
        assert!(throttle.check("alice", HOME).is_err());
        assert_eq!(throttle.check("bob", HOME), Ok(()));
    }

    #[test]
    fn an_address_guessing_across_accounts_is_refused_for_every_account() {
        let (throttle, _clock) = throttle(100, 5);
        for n in 0..5 {
            throttle.record_failure(&format!("account-{n}"), HOME);
        }
        let wait = throttle
            .check("a-new-account", HOME)
            .expect_err("the address is locked");
        assert_eq!(wait.seconds(), 12);
        assert_eq!(throttle.check("a-new-account", ELSEWHERE), Ok(()));
    }

    #[test]
    fn successes_spend_nothing() {
        let (throttle, _clock) = throttle(1, 1);
        for _ in 0..10 {
            assert_eq!(throttle.check("alice", HOME), Ok(()));
            throttle.record_success("alice", HOME);
        }
        assert_eq!(throttle.keys(), 0);
    }

    #[test]
    fn a_throttled_login_is_answered_429_rate_limited_with_retry_after_in_whole_seconds() {
        let error = RetryAfter(Duration::from_millis(1500)).problem();
        assert_eq!(error.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error.code.as_str(), "RATE_LIMITED");
        assert_eq!(error.retry_after, Some(2));
        assert_eq!(RetryAfter(Duration::ZERO).seconds(), 1);
    }

    #[test]
    fn off_budgets_never_throttle() {
        let throttle = LoginThrottle::new(Rate::Off, Rate::Off);
        for _ in 0..100 {
            throttle.record_failure("alice", HOME);
        }
        assert_eq!(throttle.check("alice", HOME), Ok(()));
    }

    #[test]
    fn pruning_forgets_refilled_budgets_and_expired_locks() {
        let (throttle, clock) = throttle(1, 100);
        throttle.record_failure("alice", HOME);
        throttle.record_failure("alice", HOME);
        assert_eq!(throttle.keys(), 2);
        clock.advance(Duration::from_secs(3600));
        throttle.prune();
        assert_eq!(throttle.keys(), 0);
        assert_eq!(throttle.check("alice", HOME), Ok(()));
        let locks = throttle
            .account
            .as_ref()
            .map(|b| b.locked.lock().map(|l| l.len()));
        assert!(matches!(locks, Some(Ok(0))));
    }
}
