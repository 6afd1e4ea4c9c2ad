//! Who is calling: the `Principal` a request acts as, read from `Authorization: Bearer …` (an
//! access token this service signed, an API key `klk_…`, or the bootstrap token
//! `KEYLEDGER_ADMIN_TOKEN`) or, when there is no `Authorization` header, from the admin hub's
//! session cookie (see `session`), by the `authenticate` middleware, which puts it in the
//! request's extensions and in a task-local the command handlers read to stamp their events'
//! `actor`.
//!
//! Credentials that are presented must be valid (401 `AUTH_INVALID_TOKEN` /
//! `AUTH_TOKEN_EXPIRED` otherwise); whether the principal may call the route is
//! `permission::authorize`'s decision.
//!
//! An access token is checked against the `users` table on every request, so what happens to
//! its user takes effect on the very next request, not when the token expires:
//! - disabling the user: every access token of theirs is refused at once (401);
//! - a password change or `POST /v1/users/{id}/revoke-tokens`: every access token issued before
//!   it is refused at once (the user's `token_generation` moves past the one the token
//!   carries); tokens issued afterwards work;
//! - a role change: the next request acts with the new role (the role is read from the table,
//!   never from the token), with the same token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::api_key::{self, ApiKeySecret};
use crate::jwt::{JwtKeys, TokenError};
use crate::permission::Permission;
use crate::session::CookieSession;
use crate::{ApiError, Code};

pub use keyledger_events::user::Role;

/// Shortest bootstrap token accepted.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    Anonymous,
    User {
        id: Uuid,
        role: Role,
    },
    ApiKey {
        id: Uuid,
        scopes: Vec<crate::permission::Permission>,
    },
    License {
        license_id: Uuid,
    },
    /// The bootstrap token `KEYLEDGER_ADMIN_TOKEN`: an admin without a user.
    Bootstrap,
}

impl Principal {
    /// The `actor` recorded on the events the principal causes.
    pub fn actor(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".to_owned(),
            Principal::User { id, .. } => format!("user:{id}"),
            Principal::ApiKey { id, .. } => format!("api_key:{id}"),
            Principal::License { license_id } => format!("license:{license_id}"),
            // Told apart from the service's own jobs (`system`).
            Principal::Bootstrap => "admin_token".to_owned(),
        }
    }

    /// The budget the rate limiter counts the principal's requests on; `None` counts them on
    /// the client's address (anonymous callers, and the bootstrap token).
    pub fn rate_key(&self) -> Option<crate::rate_limit::RateKey> {
        use crate::rate_limit::RateKey;
        match self {
            Principal::User { id, .. } => Some(RateKey::user(id)),
            Principal::ApiKey { id, .. } => Some(RateKey::api_key(id)),
            Principal::License { license_id } => Some(RateKey::license(license_id)),
            Principal::Anonymous | Principal::Bootstrap => None,
        }
    }

    /// The role the principal acts with: a user's own; the bootstrap token is an admin.
    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::User { role, .. } => Some(*role),
            Principal::Bootstrap => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The bootstrap token, checked at start-up: at least 32 characters.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8; 32]>);

impl AdminToken {
    pub fn parse(text: &str) -> Result<AdminToken, String> {
        if text.chars().count() < MIN_ADMIN_TOKEN_CHARS {
            return Err(format!(
                "KEYLEDGER_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters"
            ));
        }
        Ok(AdminToken(Arc::new(Sha256::digest(text.as_bytes()).into())))
    }

    /// Constant-time comparison (of SHA-256 digests, so the length leaks nothing either).
    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(self.0.as_ref()).into()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([REDACTED])")
    }
}

/// What the middleware needs.
#[derive(Clone)]
pub struct Authenticator {
    pub keys: Arc<JwtKeys>,
    pub admin_token: Option<AdminToken>,
    /// The primary: a token's user is looked up in the inline `users` table.
    pub pool: Pool,
    pub clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    /// When each API key's use was last written to `api_keys.last_used_at`.
    pub key_usage: KeyUsage,
    /// The license of a key's SHA-256 as this process's validation view knows it (a license's
    /// key never changes); a miss is looked up in `license_validation`.
    pub license_keys: Option<LicenseKeys>,
}

/// Finds the license of a key's SHA-256 in memory.
pub type LicenseKeys = Arc<dyn Fn(&[u8; 32]) -> Option<uuid::Uuid> + Send + Sync>;

/// How often, at most, one API key's `last_used_at` is written.
pub const KEY_USAGE_INTERVAL: Duration = Duration::from_secs(60);

/// The in-memory throttle of `api_keys.last_used_at` writes: at most one per key per
/// `KEY_USAGE_INTERVAL` from this process.
///
/// `last_used_at` is a column of the read table, not an event: usage is not history, and an
/// event per request would grow the log with every call a service makes.
#[derive(Clone, Default)]
pub struct KeyUsage(Arc<Mutex<HashMap<Uuid, Instant>>>);

impl KeyUsage {
    /// Keys remembered before the stale ones are dropped.
    const PRUNE_ABOVE: usize = 10_000;

    /// Whether a use of `key` at `now` is to be written; if so, it counts as written.
    pub fn due(&self, key: Uuid, now: Instant) -> bool {
        let mut written = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if written
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < KEY_USAGE_INTERVAL)
        {
            return false;
        }
        written.insert(key, now);
        if written.len() > Self::PRUNE_ABOVE {
            written.retain(|_, at| now.saturating_duration_since(*at) < KEY_USAGE_INTERVAL);
        }
        true
    }
}

/// Middleware: settles the request's principal, or answers 401 for a bad bearer token.
pub async fn authenticate(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    // An `Authorization` header wins over the session cookie.
    let (principal, session) = if authorization.is_some() {
        match principal_of(&auth, authorization).await {
            Ok(principal) => (principal, None),
            Err(error) => return error.into_response(),
        }
    } else {
        match session_principal(&auth, request.headers()).await {
            Ok(Some((principal, session))) => (principal, Some(session)),
            // No cookie, or one of a session that has ended: anonymous.
            Ok(None) => (Principal::Anonymous, None),
            Err(error) => return error.into_response(),
        }
    };
    if let Some(session) = session {
        request = match crate::session::check_csrf(&session, request).await {
            Ok(request) => request,
            Err(refused) => return refused,
        };
        request.extensions_mut().insert(session);
    }
    // The rate limiter (inside this layer) counts an authenticated caller on its own budget,
    // wherever it calls from; anonymous callers stay keyed by their address.
    if let Some(key) = principal.rate_key() {
        request.extensions_mut().insert(key);
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

async fn principal_of(
    auth: &Authenticator,
    authorization: Option<HeaderValue>,
) -> Result<Principal, AuthFailure> {
    let Some(value) = authorization else {
        return Ok(Principal::Anonymous);
    };
    if let Some(key) = license_key(&value) {
        return license_holder(auth, key).await;
    }
    let Some(token) = bearer_token(&value) else {
        return Err(AuthFailure(
            ApiError::unauthorized(
                Code::AuthInvalidToken,
                "the Authorization scheme must be `Bearer` or `License`",
            ),
            Some(BEARER_CHALLENGE),
        ));
    };
    if let Some(admin) = &auth.admin_token
        && admin.matches(token)
    {
        return Ok(Principal::Bootstrap);
    }
    if token.starts_with(api_key::PREFIX) {
        return api_key_principal(auth, token).await;
    }
    let claims = auth
        .keys
        .verify(token, (auth.clock)())
        .map_err(|e| match e {
            TokenError::Invalid => AuthFailure::token(
                Code::AuthInvalidToken,
                "the bearer token is not a valid access token of this service",
            ),
            TokenError::Expired => AuthFailure::token(
                Code::AuthTokenExpired,
                "the access token has expired; refresh it",
            ),
        })?;
    let invalid = || {
        AuthFailure::token(
            Code::AuthInvalidToken,
            "the access token's user does not exist or is disabled",
        )
    };
    let id = Uuid::parse_str(&claims.sub).map_err(|_| invalid())?;
    let client = auth.pool.get().await.map_err(AuthFailure::other)?;
    match user_status(&client, id).await.map_err(AuthFailure::other)? {
        Some(user) if !user.disabled && claims.generation >= user.token_generation => {
            Ok(Principal::User {
                id,
                role: user.role,
            })
        }
        Some(user) if !user.disabled => Err(AuthFailure::token(
            Code::AuthInvalidToken,
            "the access token was revoked (a password change or a revocation of the user's \
             tokens); log in again",
        )),
        _ => Err(invalid()),
    }
}

/// The user of a live session cookie, and the session.
async fn session_principal(
    auth: &Authenticator,
    headers: &axum::http::HeaderMap,
) -> Result<Option<(Principal, CookieSession)>, AuthFailure> {
    let Some(token) = crate::session::cookie(headers, crate::session::SESSION_COOKIE) else {
        return Ok(None);
    };
    if token.is_empty() {
        return Ok(None);
    }
    let client = auth.pool.get().await.map_err(AuthFailure::other)?;
    let found = crate::session::session_of(&client, token, (auth.clock)())
        .await
        .map_err(AuthFailure::other)?;
    Ok(found.map(|(family_id, user_id, role)| {
        (
            Principal::User { id: user_id, role },
            CookieSession {
                family_id,
                user_id,
                csrf_token: crate::session::csrf_token(&auth.keys, family_id),
            },
        )
    }))
}

/// The principal of an API key: one lookup by the key's hash. An unknown or revoked key is
/// 401 `AUTH_INVALID_TOKEN`.
async fn api_key_principal(auth: &Authenticator, token: &str) -> Result<Principal, AuthFailure> {
    let invalid = || {
        AuthFailure::token(
            Code::AuthInvalidToken,
            "the API key is not valid, or it has been revoked",
        )
    };
    let key = ApiKeySecret::parse(token).ok_or_else(invalid)?;
    let client = auth.pool.get().await.map_err(AuthFailure::other)?;
    let (id, scopes) = api_key_status(&client, &key.hash())
        .await
        .map_err(AuthFailure::other)?
        .filter(|status| !status.revoked)
        .map(|status| (status.id, status.scopes))
        .ok_or_else(invalid)?;
    drop(client);
    record_key_use(auth, id);
    Ok(Principal::ApiKey { id, scopes })
}

/// What authentication needs of an API key.
pub struct ApiKeyStatus {
    pub id: Uuid,
    /// The key's scopes this code knows (a name it does not know grants nothing).
    pub scopes: Vec<Permission>,
    pub revoked: bool,
}

/// The key with this hash (one lookup on the unique `key_hash`).
pub async fn api_key_status(
    client: &impl GenericClient,
    key_hash: &str,
) -> Result<Option<ApiKeyStatus>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "SELECT api_key_id, scopes, revoked_at IS NOT NULL FROM api_keys WHERE key_hash = $1",
        )
        .await?;
    let Some(row) = client.query_opt(&statement, &[&key_hash]).await? else {
        return Ok(None);
    };
    let scopes: Vec<String> = row.try_get(1)?;
    Ok(Some(ApiKeyStatus {
        id: row.try_get(0)?,
        scopes: scopes.iter().filter_map(|s| Permission::parse(s)).collect(),
        revoked: row.try_get(2)?,
    }))
}

/// Stamps the key's `last_used_at`, at most once a minute per key, off the request path: a
/// failure is logged and the request goes on.
fn record_key_use(auth: &Authenticator, id: Uuid) {
    if !auth.key_usage.due(id, Instant::now()) {
        return;
    }
    let (pool, at) = (auth.pool.clone(), (auth.clock)());
    tokio::spawn(async move {
        let written = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            client
                .execute(
                    "UPDATE api_keys SET last_used_at = $2 \
                     WHERE api_key_id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                    &[&id, &at],
                )
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(error) = written.await {
            tracing::warn!(api_key.id = %id, error = %error, "cannot record an API key's use");
        }
    });
}

/// The holder of a license key: the license whose key hashes to the presented one.
async fn license_holder(auth: &Authenticator, key: &str) -> Result<Principal, AuthFailure> {
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    if let Some(license_id) = auth.license_keys.as_ref().and_then(|find| find(&digest)) {
        return Ok(Principal::License { license_id });
    }
    let hash = hex::encode(digest);
    let client = auth.pool.get().await.map_err(AuthFailure::other)?;
    let statement = client
        .prepare_cached("SELECT license_id FROM license_validation WHERE key_hash = $1")
        .await
        .map_err(AuthFailure::other)?;
    match client
        .query_opt(&statement, &[&hash])
        .await
        .map_err(AuthFailure::other)?
    {
        Some(row) => Ok(Principal::License {
            license_id: row.try_get(0).map_err(AuthFailure::other)?,
        }),
        None => Err(AuthFailure(
            ApiError::unauthorized(
                Code::AuthInvalidToken,
                "the license key is not a key of this service",
            ),
            Some(LICENSE_CHALLENGE),
        )),
    }
}

/// `License <key>` (scheme case-insensitive): the key a license holder authenticates with.
pub fn license_key(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("license")
        .then(|| rest.trim())
        .filter(|key| !key.is_empty())
}

/// `Bearer <token>` (scheme case-insensitive); `None` for another scheme.
fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// What a request needs to know of a token's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserStatus {
    pub role: Role,
    pub disabled: bool,
    /// Access tokens of an earlier generation are refused.
    pub token_generation: i64,
}

/// A user's role, whether they are disabled, and their token generation (one primary-key
/// lookup).
pub async fn user_status(
    client: &impl GenericClient,
    user_id: Uuid,
) -> Result<Option<UserStatus>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached("SELECT role, disabled, token_generation FROM users WHERE user_id = $1")
        .await?;
    let Some(row) = client.query_opt(&statement, &[&user_id]).await? else {
        return Ok(None);
    };
    let role: String = row.try_get(0)?;
    let disabled: bool = row.try_get(1)?;
    let token_generation: i64 = row.try_get(2)?;
    // A role the code does not know is not a role anyone has.
    Ok(Role::parse(&role).map(|role| UserStatus {
        role,
        disabled,
        token_generation,
    }))
}

/// The challenge sent with a refused bearer token, and with a refused license key.
const BEARER_CHALLENGE: &str = r#"Bearer realm="keyledger", error="invalid_token""#;
const LICENSE_CHALLENGE: &str = r#"License realm="keyledger", error="invalid_token""#;

/// A refusal, with the `WWW-Authenticate` challenge it carries (none for a failure of ours).
struct AuthFailure(ApiError, Option<&'static str>);

impl AuthFailure {
    fn token(code: Code, detail: &str) -> Self {
        AuthFailure(ApiError::unauthorized(code, detail), Some(BEARER_CHALLENGE))
    }

    fn other(error: impl Into<ApiError>) -> Self {
        AuthFailure(error.into(), None)
    }
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        let AuthFailure(error, challenge) = self;
        let mut response = error.into_response();
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or(Principal::Anonymous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_principal_names_its_actor() {
        let id = Uuid::nil();
        assert_eq!(Principal::Anonymous.actor(), "anonymous");
        assert_eq!(
            Principal::User {
                id,
                role: Role::Viewer
            }
            .actor(),
            format!("user:{id}")
        );
        assert_eq!(
            Principal::ApiKey { id, scopes: vec![] }.actor(),
            format!("api_key:{id}")
        );
        assert_eq!(
            Principal::License { license_id: id }.actor(),
            format!("license:{id}")
        );
        assert_eq!(Principal::Bootstrap.actor(), "admin_token");
    }

    #[test]
    fn roles_read_and_write_in_snake_case() {
        for role in Role::ALL {
            let json = serde_json::to_value(role).unwrap();
            assert_eq!(json, role.as_str());
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn a_short_bootstrap_token_is_refused_and_a_long_one_matches_only_itself() {
        assert!(AdminToken::parse(&"x".repeat(31)).is_err());
        let token = AdminToken::parse(&"s".repeat(40)).unwrap();
        assert!(token.matches(&"s".repeat(40)));
        assert!(!token.matches(&"s".repeat(41)));
        assert!(!format!("{token:?}").contains('s'));
    }

    #[test]
    fn an_api_key_use_is_written_at_most_once_a_minute_per_key() {
        let usage = KeyUsage::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let start = Instant::now();
        assert!(usage.due(a, start));
        assert!(!usage.due(a, start + Duration::from_secs(59)));
        assert!(usage.due(b, start + Duration::from_secs(59)));
        assert!(usage.due(a, start + KEY_USAGE_INTERVAL));
    }

    #[test]
    fn only_the_bearer_scheme_carries_a_token() {
        let value = |text: &str| HeaderValue::from_str(text).unwrap();
        assert_eq!(bearer_token(&value("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&value("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&value("Bearer")), Some(""));
        assert_eq!(bearer_token(&value("License lic_x")), None);
        assert_eq!(license_key(&value("License lic_x ")), Some("lic_x"));
        assert_eq!(license_key(&value("license lic_x")), Some("lic_x"));
        assert_eq!(license_key(&value("License ")), None);
        assert_eq!(license_key(&value("Bearer lic_x")), None);
    }

    proptest! {
        #[test]
        fn a_bootstrap_token_matches_nothing_but_itself(a in "[ -~]{32,64}", b in "[ -~]{0,64}") {
            let token = AdminToken::parse(&a).unwrap();
            prop_assert_eq!(token.matches(&b), a == b);
        }
    }
}
