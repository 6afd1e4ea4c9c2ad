//! Rate limits per route class and per caller, with `governor` keyed limiters.
//!
//! Every request is put in a class by method and path ([`RouteClass`]): `validate`
//! (`POST /v1/licenses/validate` and the by-key lookups), `login` (`POST /v1/auth/login`,
//! `/v1/auth/refresh` and the admin hub's `/admin/login`), `commands` (any other `POST`, `PATCH`, `PUT`, `DELETE`) and `reads`
//! (everything else). `/health*`, `/metrics` and the admin hub's static files are in no class
//! and never limited. Each class has its own [`Rate`] (`N/sec|min|hour`, or `off`) and its own
//! keyed limiter; the key is the request's [`RateKey`]: the principal an authentication layer
//! put in the request's extensions, otherwise the client's IP address (the peer address, or
//! the first `X-Forwarded-For` hop when that header is trusted).
//!
//! Over the limit the answer is 429 `RATE_LIMITED` problem+json with `Retry-After` and the
//! IETF draft's `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and
//! `RateLimit-Policy` headers; allowed requests of a limited class carry the same `RateLimit-*`
//! headers. The middleware runs before the handlers, so a refused request writes nothing.
//!
//! Limiters keep one small entry per key they have seen; [`RateLimits::prune`], a job every
//! `RATE_LIMIT_PRUNE_INTERVAL`, drops the entries of keys whose budget is full again
//! (governor's `retain_recent`) and gives the memory back (`shrink_to_fit`), so memory is
//! bounded by the keys active within one window.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::error::{ApiError, Code};
use crate::login_throttle::LoginThrottle;

/// The unit of a [`Rate`]'s window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    fn as_str(self) -> &'static str {
        match self {
            Per::Second => "sec",
            Per::Minute => "min",
            Per::Hour => "hour",
        }
    }

    /// The window's length.
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
        })
    }
}

/// A limit setting: `N/sec`, `N/min` or `N/hour` (N requests per window, all of them allowed
/// at once, refilled evenly over the window), or `off` (also `0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Off,
    Limit { count: NonZeroU32, per: Per },
}

impl Rate {
    pub fn new(count: u32, per: Per) -> Rate {
        match NonZeroU32::new(count) {
            Some(count) => Rate::Limit { count, per },
            None => Rate::Off,
        }
    }

    /// governor's quota: a burst of `count`, one more every `window / count`.
    pub fn quota(self) -> Option<Quota> {
        match self {
            Rate::Off => None,
            Rate::Limit { count, per } => Some(match per {
                Per::Second => Quota::per_second(count),
                Per::Minute => Quota::per_minute(count),
                Per::Hour => Quota::per_hour(count),
            }),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Off => f.write_str("off"),
            Rate::Limit { count, per } => write!(f, "{count}/{}", per.as_str()),
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        let trimmed = text.trim();
        let expected = "expected `N/sec`, `N/min`, `N/hour` (e.g. `600/min`), or `off`/`0`";
        if trimmed.eq_ignore_ascii_case("off") || trimmed == "0" {
            return Ok(Rate::Off);
        }
        let Some((count, unit)) = trimmed.split_once('/') else {
            return Err(format!("`{text}` is not a rate: {expected}"));
        };
        let count = count.trim();
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "`{text}`: `{count}` is not a whole number of requests: {expected}"
            ));
        }
        let count: u32 = count
            .parse()
            .map_err(|_| format!("`{text}`: {count} requests is more than {}", u32::MAX))?;
        let per = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => Per::Second,
            "m" | "min" | "minute" => Per::Minute,
            "h" | "hour" => Per::Hour,
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (use sec, min or hour)"
                ));
            }
        };
        Ok(Rate::new(count, per))
    }
}

/// What a request is limited as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Validate,
    Login,
    Commands,
    Reads,
}

impl RouteClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Validate => "validate",
            RouteClass::Login => "login",
            RouteClass::Commands => "commands",
            RouteClass::Reads => "reads",
        }
    }

    /// The class of a request; `None` for what is never limited (`/health*`, `/metrics`, the
    /// admin hub's static files).
    pub fn of(method: &Method, path: &str) -> Option<RouteClass> {
        let unlimited = path == "/health"
            || path.starts_with("/health/")
            || path == "/metrics"
            || path.starts_with("/admin/static/");
        if unlimited {
            return None;
        }
        let path = match path.strip_suffix('/') {
            Some(stripped) if !stripped.is_empty() => stripped,
            _ => path,
        };
        Some(match (method, path) {
            (&Method::POST, "/v1/licenses/validate") => RouteClass::Validate,
            (&Method::GET | &Method::HEAD | &Method::POST, "/v1/licenses/by-key") => {
                RouteClass::Validate
            }
            (&Method::POST, "/v1/auth/login" | "/v1/auth/refresh" | "/admin/login") => {
                RouteClass::Login
            }
            (&Method::POST | &Method::PUT | &Method::PATCH | &Method::DELETE, _) => {
                RouteClass::Commands
            }
            _ => RouteClass::Reads,
        })
    }
}

/// Who a request is counted against: `ip:<address>` until an authentication layer (which runs
/// before the limiter) inserts the principal's key in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateKey(String);

impl RateKey {
    pub fn ip(address: IpAddr) -> RateKey {
        RateKey(format!("ip:{address}"))
    }

    pub fn user(id: impl fmt::Display) -> RateKey {
        RateKey(format!("user:{id}"))
    }

    pub fn api_key(id: impl fmt::Display) -> RateKey {
        RateKey(format!("api_key:{id}"))
    }

    pub fn license(id: impl fmt::Display) -> RateKey {
        RateKey(format!("license:{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The client's address: the first `X-Forwarded-For` hop when `trust_forwarded_for` and it
/// parses, otherwise the peer address; `None` when neither is known (a router called without
/// a connection, as in unit tests).
pub fn client_ip(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trust_forwarded_for: bool,
) -> Option<IpAddr> {
    let forwarded = trust_forwarded_for
        .then(|| headers.get("x-forwarded-for")?.to_str().ok())
        .flatten()
        .and_then(|value| value.split(',').next())
        .map(str::trim)
        .and_then(|hop| {
            hop.parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        });
    forwarded.or(peer.map(|p| p.ip()))
}

/// The settings of every class.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub validate: Rate,
    pub login: Rate,
    pub commands: Rate,
    pub reads: Rate,
    /// Take the client's address from the first `X-Forwarded-For` hop (only behind a proxy
    /// that sets it).
    pub trust_forwarded_for: bool,
    /// Failed logins allowed per account.
    pub login_failures_per_account: Rate,
    /// Failed logins allowed per client address.
    pub login_failures_per_ip: Rate,
}

impl RateLimitConfig {
    /// Limits no test or benchmark reaches.
    pub fn generous() -> RateLimitConfig {
        let lots = Rate::new(1_000_000, Per::Minute);
        RateLimitConfig {
            validate: lots,
            login: lots,
            commands: lots,
            reads: lots,
            trust_forwarded_for: false,
            login_failures_per_account: Rate::new(1000, Per::Minute),
            login_failures_per_ip: Rate::new(10_000, Per::Minute),
        }
    }
}

type KeyedLimiter =
    RateLimiter<RateKey, DashMapStateStore<RateKey>, DefaultClock, StateInformationMiddleware>;

struct ClassLimiter {
    rate: Rate,
    quota: Quota,
    limiter: KeyedLimiter,
}

impl ClassLimiter {
    fn new(rate: Rate) -> Option<ClassLimiter> {
        let quota = rate.quota()?;
        Some(ClassLimiter {
            rate,
            quota,
            limiter: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
        })
    }
}

/// The limiters of a process, shared by every request; cheap to clone.
#[derive(Clone)]
pub struct RateLimits {
    inner: Arc<Inner>,
}

struct Inner {
    validate: Option<ClassLimiter>,
    login: Option<ClassLimiter>,
    commands: Option<ClassLimiter>,
    reads: Option<ClassLimiter>,
    trust_forwarded_for: bool,
    login_throttle: LoginThrottle,
}

/// Header names of the IETF draft "RateLimit header fields for HTTP".
pub const RATELIMIT_LIMIT: &str = "ratelimit-limit";
pub const RATELIMIT_REMAINING: &str = "ratelimit-remaining";
pub const RATELIMIT_RESET: &str = "ratelimit-reset";
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> RateLimits {
        RateLimits {
            inner: Arc::new(Inner {
                validate: ClassLimiter::new(config.validate),
                login: ClassLimiter::new(config.login),
                commands: ClassLimiter::new(config.commands),
                reads: ClassLimiter::new(config.reads),
                trust_forwarded_for: config.trust_forwarded_for,
                login_throttle: LoginThrottle::new(
                    config.login_failures_per_account,
                    config.login_failures_per_ip,
                ),
            }),
        }
    }

    /// The failed-login throttle the login handler consults.
    pub fn login_throttle(&self) -> &LoginThrottle {
        &self.inner.login_throttle
    }

    pub fn trusts_forwarded_for(&self) -> bool {
        self.inner.trust_forwarded_for
    }

    /// The client's address as the limiter sees it (for the login throttle): the first
    /// `X-Forwarded-For` hop when trusted, otherwise the peer address.
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        client_ip(headers, peer, self.inner.trust_forwarded_for)
    }

    fn class(&self, class: RouteClass) -> Option<&ClassLimiter> {
        match class {
            RouteClass::Validate => self.inner.validate.as_ref(),
            RouteClass::Login => self.inner.login.as_ref(),
            RouteClass::Commands => self.inner.commands.as_ref(),
            RouteClass::Reads => self.inner.reads.as_ref(),
        }
    }

    fn limiters(&self) -> impl Iterator<Item = &ClassLimiter> {
        [
            &self.inner.validate,
            &self.inner.login,
            &self.inner.commands,
            &self.inner.reads,
        ]
        .into_iter()
        .flatten()
    }

    /// Keys held by the class limiters (an estimate under concurrent use).
    pub fn keys(&self) -> usize {
        self.limiters().map(|c| c.limiter.len()).sum()
    }

    /// Forgets keys whose budget is full again and returns the memory.
    pub fn prune(&self) {
        for class in self.limiters() {
            class.limiter.retain_recent();
            class.limiter.shrink_to_fit();
        }
        self.inner.login_throttle.prune();
    }
}

fn seconds_up(duration: Duration) -> u64 {
    let whole = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    }
}

fn set_headers(headers: &mut HeaderMap, class: &ClassLimiter, remaining: u32, reset: Duration) {
    let limit = class.quota.burst_size().get();
    let window = seconds_up(class.quota.burst_size_replenished_in());
    let pairs = [
        (RATELIMIT_LIMIT, HeaderValue::from(limit)),
        (RATELIMIT_REMAINING, HeaderValue::from(remaining)),
        (RATELIMIT_RESET, HeaderValue::from(seconds_up(reset))),
    ];
    for (name, value) in pairs {
        headers.insert(HeaderName::from_static(name), value);
    }
    if let Ok(policy) = HeaderValue::from_str(&format!("{limit};w={window}")) {
        headers.insert(HeaderName::from_static(RATELIMIT_POLICY), policy);
    }
}

/// The middleware: refuses a request over its class's limit before any handler runs.
pub async fn layer(State(limits): State<RateLimits>, request: Request, next: Next) -> Response {
    let Some(route_class) = RouteClass::of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let Some(class) = limits.class(route_class) else {
        return next.run(request).await;
    };
    let key = match request.extensions().get::<RateKey>() {
        Some(key) => key.clone(),
        None => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0);
            match limits.client_ip(request.headers(), peer) {
                Some(ip) => RateKey::ip(ip),
                None => RateKey("ip:unknown".into()),
            }
        }
    };
    let interval = class.quota.replenish_interval();
    match class.limiter.check_key(&key) {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            let used = class.quota.burst_size().get().saturating_sub(remaining);
            let mut response = next.run(request).await;
            set_headers(
                response.headers_mut(),
                class,
                remaining,
                interval.saturating_mul(used),
            );
            response
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(class.limiter.clock().now());
            let retry_after = seconds_up(wait).max(1);
            metrics::counter!("keyledger_rate_limited_total", "class" => route_class.as_str())
                .increment(1);
            let full =
                wait + interval.saturating_mul(class.quota.burst_size().get().saturating_sub(1));
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Code::RateLimited,
                format!(
                    "too many {} requests: the limit is {} per client; retry in {retry_after} s",
                    route_class.as_str(),
                    class.rate
                ),
            )
            .with_member("limit_class", route_class.as_str())
            .with_member("limit", class.rate.to_string());
            error.retry_after = Some(retry_after);
            let mut response = error.into_response();
            set_headers(response.headers_mut(), class, 0, full);
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rates_read_as_a_count_per_window() {
        assert_eq!("600/min".parse(), Ok(Rate::new(600, Per::Minute)));
        assert_eq!("2/sec".parse(), Ok(Rate::new(2, Per::Second)));
        assert_eq!(" 100000/hour ".parse(), Ok(Rate::new(100_000, Per::Hour)));
        assert_eq!("5/s".parse(), Ok(Rate::new(5, Per::Second)));
        assert_eq!("5/Minute".parse(), Ok(Rate::new(5, Per::Minute)));
    }

    #[test]
    fn zero_and_off_disable_a_class() {
        for text in ["0", "off", "OFF", "0/min"] {
            assert_eq!(text.parse::<Rate>(), Ok(Rate::Off), "{text}");
            assert_eq!(Rate::Off.quota(), None);
        }
        assert_eq!(Rate::Off.to_string(), "off");
    }

    #[test]
    fn garbage_is_refused_with_a_message_saying_what_is_expected() {
        for text in [
            "", "600", "min", "/min", "-1/min", "1.5/sec", "x/min", "10/week", "10/",
        ] {
            let error = text.parse::<Rate>().expect_err(text);
            assert!(error.contains(&format!("`{text}`")), "{error}");
        }
        let error = "10/week".parse::<Rate>().expect_err("a week is no unit");
        assert!(error.contains("use sec, min or hour"), "{error}");
        let error = "99999999999/min".parse::<Rate>().expect_err("too many");
        assert!(error.contains("more than"), "{error}");
    }

    #[test]
    fn a_rate_is_a_burst_of_its_count_refilled_over_its_window() {
        let quota = Rate::new(600, Per::Minute).quota().expect("a limit");
        assert_eq!(quota.burst_size().get(), 600);
        assert_eq!(quota.replenish_interval(), Duration::from_millis(100));
    }

    #[test]
    fn requests_are_classed_by_method_and_path() {
        let class = |m: Method, p: &str| RouteClass::of(&m, p);
        assert_eq!(
            class(Method::POST, "/v1/licenses/validate"),
            Some(RouteClass::Validate)
        );
        assert_eq!(
            class(Method::GET, "/v1/licenses/by-key"),
            Some(RouteClass::Validate)
        );
        assert_eq!(
            class(Method::POST, "/v1/licenses/by-key"),
            Some(RouteClass::Validate)
        );
        assert_eq!(
            class(Method::POST, "/v1/auth/login"),
            Some(RouteClass::Login)
        );
        assert_eq!(
            class(Method::POST, "/v1/auth/refresh"),
            Some(RouteClass::Login)
        );
        assert_eq!(class(Method::POST, "/admin/login"), Some(RouteClass::Login));
        assert_eq!(
            class(Method::POST, "/v1/licenses"),
            Some(RouteClass::Commands)
        );
        assert_eq!(
            class(Method::PATCH, "/v1/sessions/x"),
            Some(RouteClass::Commands)
        );
        assert_eq!(
            class(Method::DELETE, "/v1/licenses/x/installations/y"),
            Some(RouteClass::Commands)
        );
        assert_eq!(class(Method::GET, "/v1/licenses"), Some(RouteClass::Reads));
        assert_eq!(class(Method::GET, "/admin"), Some(RouteClass::Reads));
        for path in [
            "/health",
            "/health/ready",
            "/metrics",
            "/admin/static/admin.js",
        ] {
            assert_eq!(class(Method::GET, path), None, "{path}");
        }
    }

    #[test]
    fn the_forwarded_for_header_is_read_only_when_trusted() {
        let peer = Some(SocketAddr::from(([127, 0, 0, 1], 5000)));
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.7, 10.0.0.1"),
        );
        let ip = |h: &HeaderMap, trust| client_ip(h, peer, trust).map(|a| a.to_string());
        assert_eq!(ip(&headers, false).as_deref(), Some("127.0.0.1"));
        assert_eq!(ip(&headers, true).as_deref(), Some("203.0.113.7"));
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("not an address"),
        );
        assert_eq!(ip(&headers, true).as_deref(), Some("127.0.0.1"));
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        assert_eq!(ip(&headers, true).as_deref(), Some("2001:db8::1"));
    }

    #[test]
    fn principals_are_keyed_apart_from_addresses() {
        assert_eq!(RateKey::user("7").as_str(), "user:7");
        assert_eq!(RateKey::api_key("7").as_str(), "api_key:7");
        assert_eq!(RateKey::license("7").as_str(), "license:7");
        assert_eq!(
            RateKey::ip(IpAddr::from([192, 0, 2, 1])).as_str(),
            "ip:192.0.2.1"
        );
    }

    #[test]
    fn pruning_forgets_keys_whose_budget_is_full_again() {
        let limits = RateLimits::new(&RateLimitConfig {
            reads: Rate::new(1000, Per::Second),
            ..RateLimitConfig::generous()
        });
        let reads = limits.class(RouteClass::Reads).expect("reads are limited");
        for n in 0..100u8 {
            let _ = reads
                .limiter
                .check_key(&RateKey::ip(IpAddr::from([10, 0, 0, n])));
        }
        assert_eq!(limits.keys(), 100);
        // Each budget is full again 1 ms after its request: prune until they are gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while limits.keys() > 0 && std::time::Instant::now() < deadline {
            limits.prune();
            std::thread::yield_now();
        }
        assert_eq!(limits.keys(), 0);
    }

    /// A router whose callers are keyed by the `x-user` header, as an authentication layer
    /// outside the limiter would key them.
    fn keyed_by_user(limits: RateLimits) -> axum::Router {
        axum::Router::new()
            .route("/v1/licenses", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(limits, layer))
            .layer(axum::middleware::from_fn(
                |mut request: Request, next: Next| async move {
                    let user = request
                        .headers()
                        .get("x-user")
                        .and_then(|v| v.to_str().ok())
                        .map(RateKey::user);
                    if let Some(key) = user {
                        request.extensions_mut().insert(key);
                    }
                    next.run(request).await
                },
            ))
    }

    async fn status_as(router: &axum::Router, user: &str) -> StatusCode {
        use tower::ServiceExt;
        let request = axum::http::Request::get("/v1/licenses")
            .header("x-user", user)
            .body(axum::body::Body::empty());
        match request {
            Ok(request) => match router.clone().oneshot(request).await {
                Ok(response) => response.status(),
                Err(never) => match never {},
            },
            Err(_) => StatusCode::BAD_REQUEST,
        }
    }

    #[tokio::test]
    async fn a_principal_put_in_the_extensions_is_limited_on_its_own_whatever_its_address() {
        let limits = RateLimits::new(&RateLimitConfig {
            reads: Rate::new(2, Per::Minute),
            ..RateLimitConfig::generous()
        });
        let router = keyed_by_user(limits);
        assert_eq!(status_as(&router, "ann").await, StatusCode::OK);
        assert_eq!(status_as(&router, "ann").await, StatusCode::OK);
        assert_eq!(
            status_as(&router, "ann").await,
            StatusCode::TOO_MANY_REQUESTS
        );
        // Same (unknown) address, another principal: its own budget.
        assert_eq!(status_as(&router, "bob").await, StatusCode::OK);
    }

    fn unit() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("sec"), Just("min"), Just("hour")]
    }

    proptest! {
        #[test]
        fn any_count_per_unit_reads_back_as_written(count in 1u32.., unit in unit()) {
            let text = format!("{count}/{unit}");
            let rate: Rate = text.parse().map_err(TestCaseError::fail)?;
            prop_assert_eq!(rate.to_string(), text);
            prop_assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate));
        }

        #[test]
        fn anything_else_is_an_error_or_a_rate_that_reads_back(text in "\\PC{0,16}") {
            if let Ok(rate) = text.parse::<Rate>() {
                prop_assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate));
            }
        }

        #[test]
        fn an_unknown_unit_is_refused_naming_it(count in 1u32.., unit in "[a-z]{1,8}") {
            prop_assume!(!["s", "sec", "second", "m", "min", "minute", "h", "hour"]
                .contains(&unit.as_str()));
            let error = format!("{count}/{unit}").parse::<Rate>().err().unwrap_or_default();
            prop_assert!(error.contains(&format!("unknown unit `{unit}`")), "{}", error);
        }

        #[test]
        fn health_metrics_and_admin_files_are_never_classed_whatever_follows(
            tail in "[ -~]{0,24}",
        ) {
            for method in [Method::GET, Method::POST, Method::DELETE] {
                for prefix in ["/health/", "/admin/static/"] {
                    prop_assert_eq!(RouteClass::of(&method, &format!("{prefix}{tail}")), None);
                }
            }
        }

        #[test]
        fn any_other_path_is_a_read_by_get_and_a_command_by_delete(path in "/v1/[ -~]{0,24}") {
            prop_assume!(!path.starts_with("/v1/licenses/by-key"));
            prop_assert_eq!(RouteClass::of(&Method::GET, &path), Some(RouteClass::Reads));
            prop_assert_eq!(RouteClass::of(&Method::DELETE, &path), Some(RouteClass::Commands));
        }

        #[test]
        fn a_forwarded_for_header_gives_its_first_hop_or_the_peer(value in "[ -~]{0,40}") {
            let peer = SocketAddr::from(([127, 0, 0, 1], 1));
            let mut headers = HeaderMap::new();
            if let Ok(header) = HeaderValue::from_str(&value) {
                headers.insert("x-forwarded-for", header);
            }
            let ip = client_ip(&headers, Some(peer), true);
            let first = headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .and_then(|hop| hop.parse::<IpAddr>().ok()
                    .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip())));
            prop_assert_eq!(ip, Some(first.unwrap_or(peer.ip())));
            prop_assert_eq!(client_ip(&headers, Some(peer), false), Some(peer.ip()));
        }

        #[test]
        fn text_without_a_slash_is_refused_unless_it_means_off(text in "[^/]{0,16}") {
            let result = text.parse::<Rate>();
            let off = text.trim().eq_ignore_ascii_case("off") || text.trim() == "0";
            prop_assert_eq!(result.is_ok(), off, "{:?}", result);
        }
    }
}
