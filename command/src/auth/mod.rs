//! Login and tokens: `POST /v1/auth/login`, `/v1/auth/refresh`, `/v1/auth/logout`,
//! `GET /v1/auth/me` and `GET /.well-known/jwks.json`.
//!
//! Access tokens are EdDSA JWTs (15 minutes). Refresh tokens are opaque (`klr_` + 256 bits from
//! the OS RNG), 30 days, stored only as SHA-256 hashes, in event-sourced families
//! (`refresh_family-<id>`). These routes sit outside the Idempotency-Key layer: their answers
//! hold tokens, which must not be stored anywhere.

pub mod admin;
pub mod family;

use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use keyledger_api::jwt::{ACCESS_TOKEN_SECONDS, JwtKeys};
use keyledger_api::rate_limit::RateLimits;
use keyledger_api::{ApiError, AppJson, Code, Principal, RequestId, Role, Routes};
use keyledger_events::user::{RefreshFamilyEvent, RevokeReason, refresh_family_stream};
use keyledger_events::{EventStore, Metadata};
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Clock;
use crate::execute::{CommandError, execute, execute_on_new_stream};
use crate::user::password;
use family::{FamilyCommand, FamilyError, RefreshFamily};

/// How long a refresh token is good for.
pub const REFRESH_TOKEN_DAYS: i64 = 30;

pub const REFRESH_TOKEN_PREFIX: &str = "klr_";

#[derive(Clone)]
pub struct AuthState {
    pub store: Arc<dyn EventStore>,
    /// The primary (the inline `users` and `refresh_tokens` tables).
    pub pool: Pool,
    pub clock: Clock,
    pub keys: Arc<JwtKeys>,
    /// Failed logins are throttled per account and per client address.
    pub limits: RateLimits,
    /// The admin hub's session cookie is always `Secure` (`ADMIN_COOKIE_SECURE`); otherwise
    /// only on requests a proxy marks `X-Forwarded-Proto: https`.
    pub secure_cookies: bool,
}

impl AuthState {
    /// Now, to the microsecond the log keeps.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        keyledger_events::chain::to_micros((self.clock)())
    }
}

/// The sign-in routes' part of the OpenAPI description (the admin hub's login and logout
/// included).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        login,
        refresh,
        logout,
        me,
        jwks,
        admin::page,
        admin::submit,
        admin::logout
    ),
    components(schemas(
        LoginRequest,
        RefreshRequest,
        TokenResponse,
        MeResponse,
        PrincipalKind,
        crate::user::routes::UserRole,
        Jwks,
        Jwk,
        admin::AdminLoginForm,
        admin::AdminLogoutForm,
    ))
)]
pub struct AuthApi;

pub fn router(state: AuthState) -> Routes {
    // The first login with an unknown email should not pay for the dummy hash.
    tokio::spawn(async {
        if let Err(error) = password::dummy_hash().await {
            tracing::warn!(error = %error, "cannot prepare the dummy password hash");
        }
    });
    Routes::new()
        .post("/v1/auth/login", login)
        .post("/v1/auth/refresh", refresh)
        .post("/v1/auth/logout", logout)
        .get("/v1/auth/me", me)
        .get("/.well-known/jwks.json", jwks)
        .merge(admin::routes())
        .map(|router| router.layer(DefaultBodyLimit::max(crate::BODY_LIMIT)))
        .with_state(state)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user's email, in any case (surrounding whitespace is ignored).
    #[schema(example = "ops@example.com")]
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// A refresh token (`klr_…`) from a login or the last refresh.
    pub refresh_token: String,
}

/// Tokens (RFC 6749 §5.1): an access token for `Authorization: Bearer`, and the refresh token
/// that gets the next one.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// An EdDSA JWT.
    pub access_token: String,
    #[schema(value_type = String, example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds the access token is good for.
    #[schema(example = 900)]
    pub expires_in: i64,
    /// `klr_…`: good once, for 30 days (or until a logout or a password change).
    pub refresh_token: String,
}

/// What kind of caller a request acts as.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum PrincipalKind {
    Anonymous,
    User,
    ApiKey,
    License,
    Bootstrap,
}

/// Who a request acts as (`GET /v1/auth/me`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MeResponse {
    kind: PrincipalKind,
    /// The user's, API key's or license's id; `null` for the bootstrap token.
    #[schema(required = true)]
    sub: Option<String>,
    /// The role a user (or the bootstrap token: `admin`) acts with; `null` for API keys and
    /// licenses.
    #[schema(required = true)]
    role: Option<crate::user::routes::UserRole>,
    /// How the events it causes name it (`user:<id>`, `api_key:<id>`, `license:<id>`,
    /// `admin_token`).
    #[schema(example = "user:8a0d1c2e-0000-4000-8000-000000000000")]
    actor: String,
}

/// The JWK set access tokens are verified with (`GET /.well-known/jwks.json`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

/// An Ed25519 public key as a JWK (RFC 7517, RFC 8037).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Jwk {
    #[schema(example = "OKP")]
    kty: String,
    #[schema(example = "Ed25519")]
    crv: String,
    /// The public key, base64url without padding.
    x: String,
    /// The key's id, which access tokens name in their header.
    kid: String,
    #[schema(example = "EdDSA")]
    alg: String,
    #[schema(rename = "use", example = "sig")]
    use_: String,
}

/// A new refresh token and its hash.
fn new_refresh_token() -> Result<(String, String), ApiError> {
    let mut bytes = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|_| ApiError::internal("the operating system's random number generator failed"))?;
    let token = format!("{REFRESH_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// SHA-256 of a refresh token, hex: the only form in which it is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn metadata(request_id: &RequestId, user_id: Uuid) -> Metadata {
    Metadata {
        correlation_id: Some(request_id.0.clone()),
        causation_id: Some(request_id.0.clone()),
        actor: Some(format!("user:{user_id}")),
        idempotency_key: None,
    }
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized(
        Code::AuthInvalidCredentials,
        "the email or the password is wrong",
    )
}

fn invalid_refresh_token() -> ApiError {
    ApiError::unauthorized(
        Code::AuthInvalidToken,
        "the refresh token is not valid; log in again",
    )
}

pub(crate) fn family_error(error: CommandError<FamilyError>) -> ApiError {
    match error {
        CommandError::Domain(FamilyError::Expired) => ApiError::unauthorized(
            Code::AuthTokenExpired,
            "the refresh token has expired; log in again",
        ),
        CommandError::Domain(
            FamilyError::Revoked | FamilyError::NotFound | FamilyError::UnknownToken,
        ) => invalid_refresh_token(),
        CommandError::Domain(FamilyError::AlreadyExists) => {
            ApiError::internal("a new refresh family id was already taken")
        }
        CommandError::Conflict(cause) | CommandError::Store(cause) => ApiError::store(cause),
    }
}

/// Answers with tokens; never cached (RFC 6749 §5.1).
fn token_reply(body: &TokenResponse) -> Response {
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn access_token(
    keys: &JwtKeys,
    user_id: Uuid,
    role: Role,
    generation: i64,
    now: DateTime<Utc>,
) -> Result<String, ApiError> {
    keys.issue(&user_id.to_string(), role, generation, now)
        .map_err(|e| ApiError::internal(format!("signing an access token: {e}")))
}

/// The failed-password budget of an account: known or not, an account is throttled alike (by
/// a hash of the lower-cased email: no email is kept in memory).
pub(crate) fn throttle_account(email: &str) -> String {
    hex::encode(Sha256::digest(email.as_bytes()))
}

/// The failed-password budget of the client's address.
pub(crate) fn throttle_ip(
    limits: &RateLimits,
    headers: &HeaderMap,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
) -> std::net::IpAddr {
    limits
        .client_ip(
            headers,
            peer.map(|axum::Extension(ConnectInfo(address))| address),
        )
        .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

/// A successful login: a new refresh family and the tokens of it.
pub struct LoggedIn {
    pub user_id: Uuid,
    pub role: Role,
    pub family_id: Uuid,
    pub access_token: String,
    pub refresh_token: String,
}

/// Checks an email and password and starts a refresh family that lives `lifetime`: the login
/// of `POST /v1/auth/login` and of the admin hub. An unknown email, a wrong password and a
/// disabled user fail alike (401 `AUTH_INVALID_CREDENTIALS`), after the same work (a password
/// hash is verified every time); failures count against the account and the client's address
/// (429 `RATE_LIMITED` past the throttle).
pub async fn log_in(
    state: &AuthState,
    email: &str,
    password: String,
    ip: std::net::IpAddr,
    request_id: &RequestId,
    lifetime: chrono::Duration,
) -> Result<LoggedIn, ApiError> {
    let email = email.trim().to_lowercase();
    let account = throttle_account(&email);
    let throttle = state.limits.login_throttle();
    throttle
        .check(&account, ip)
        .map_err(|wait| wait.problem())?;
    let user = {
        let client = state.pool.get().await?;
        keyledger_projections::user::user_by_email(&client, &email).await?
    };
    let phc = match &user {
        Some(user) => user.password_hash.clone(),
        None => password::dummy_hash()
            .await
            .map_err(ApiError::internal)?
            .to_owned(),
    };
    let matches = password::verify(password, phc)
        .await
        .map_err(ApiError::internal)?;
    let Some(user) = user.filter(|u| matches && !u.disabled) else {
        throttle.record_failure(&account, ip);
        return Err(invalid_credentials());
    };
    throttle.record_success(&account, ip);
    tracing::Span::current().record("user.id", tracing::field::display(user.user_id));
    let role = Role::parse(&user.role)
        .ok_or_else(|| ApiError::internal(format!("user with unknown role {}", user.role)))?;
    let now = state.now();
    let (refresh_token, hash) = new_refresh_token()?;
    let family_id = Uuid::new_v4();
    let command = FamilyCommand::Start {
        family_id,
        user_id: user.user_id,
        token_hash: hash,
        expires_at: now + lifetime,
        at: now,
    };
    execute_on_new_stream::<RefreshFamily>(
        state.store.as_ref(),
        &refresh_family_stream(family_id),
        &command,
        &metadata(request_id, user.user_id),
        &|_, _| None,
    )
    .await
    .map_err(family_error)?;
    // A password change (or a revocation of the user's tokens) that committed while this
    // login ran may have listed the user's families before this one began: then it ends here.
    let generation = {
        let client = state.pool.get().await?;
        keyledger_api::principal::user_status(&client, user.user_id).await?
    };
    if generation.is_none_or(|now| now.disabled || now.token_generation != user.token_generation) {
        execute::<RefreshFamily>(
            state.store.as_ref(),
            &refresh_family_stream(family_id),
            &FamilyCommand::Revoke {
                reason: RevokeReason::PasswordChanged,
                at: now,
            },
            &metadata(request_id, user.user_id),
            &|_, _| None,
        )
        .await
        .map_err(family_error)?;
        return Err(invalid_credentials());
    }
    Ok(LoggedIn {
        user_id: user.user_id,
        role,
        family_id,
        access_token: access_token(&state.keys, user.user_id, role, user.token_generation, now)?,
        refresh_token,
    })
}

/// The client's address as the failed-login throttle counts it.
pub fn client_ip(
    state: &AuthState,
    headers: &HeaderMap,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
) -> std::net::IpAddr {
    throttle_ip(&state.limits, headers, peer)
}

/// Logs in with an email and a password: an access token and a refresh token.
///
/// An unknown email, a wrong password and a disabled user fail alike; failures are throttled
/// per account and per client address.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in (never cached).", body = TokenResponse, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 401, description = "`AUTH_INVALID_CREDENTIALS`: the email or the password is wrong (or the user is disabled)."),
    ),
)]
#[tracing::instrument(skip_all, fields(user.id))]
pub async fn login(
    State(state): State<AuthState>,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    request_id: RequestId,
    AppJson(request): AppJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let ip = client_ip(&state, &headers, peer);
    let logged_in = log_in(
        &state,
        &request.email,
        request.password,
        ip,
        &request_id,
        chrono::Duration::days(REFRESH_TOKEN_DAYS),
    )
    .await?;
    Ok(token_reply(&TokenResponse {
        access_token: logged_in.access_token,
        token_type: "Bearer",
        expires_in: ACCESS_TOKEN_SECONDS,
        refresh_token: logged_in.refresh_token,
    }))
}

/// The family of a presented refresh token, and its user.
async fn family_of(state: &AuthState, token: &str) -> Result<(Uuid, Uuid), ApiError> {
    if !token.starts_with(REFRESH_TOKEN_PREFIX) {
        return Err(invalid_refresh_token());
    }
    let client = state.pool.get().await?;
    keyledger_projections::user::refresh_token(&client, &token_hash(token))
        .await?
        .map(|row| (row.family_id, row.user_id))
        .ok_or_else(invalid_refresh_token)
}

/// Trades a refresh token for new tokens; the presented one is used up.
///
/// A token already rotated revokes its whole family (recorded as `RefreshFamilyRevoked`,
/// reason `reuse`) and is 401 `AUTH_REFRESH_REUSED`.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens (never cached).", body = TokenResponse, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 401, description = "`AUTH_INVALID_TOKEN`: not a live refresh token; `AUTH_TOKEN_EXPIRED`: it has expired; `AUTH_REFRESH_REUSED`: it was used already, and every token of its login is now revoked; `AUTH_USER_DISABLED`: its user is disabled."),
        (status = 409, description = "`BIZ_CONCURRENCY_CONFLICT`: a concurrent refresh or logout of the same login won."),
    ),
)]
#[tracing::instrument(skip_all, fields(user.id, family.id))]
pub async fn refresh(
    State(state): State<AuthState>,
    request_id: RequestId,
    AppJson(request): AppJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let (family_id, user_id) = family_of(&state, &request.refresh_token).await?;
    let span = tracing::Span::current();
    span.record("user.id", tracing::field::display(user_id));
    span.record("family.id", tracing::field::display(family_id));
    let stream = refresh_family_stream(family_id);
    let meta = metadata(&request_id, user_id);
    let now = state.now();
    let status = {
        let client = state.pool.get().await?;
        keyledger_api::principal::user_status(&client, user_id).await?
    };
    let user = match status {
        Some(user) if !user.disabled => user,
        _ => {
            execute::<RefreshFamily>(
                state.store.as_ref(),
                &stream,
                &FamilyCommand::Revoke {
                    reason: RevokeReason::UserDisabled,
                    at: now,
                },
                &meta,
                &|_, _| None,
            )
            .await
            .map_err(family_error)?;
            return Err(ApiError::unauthorized(
                Code::AuthUserDisabled,
                "the user is disabled; their tokens no longer work",
            ));
        }
    };
    let (refresh_token, new_hash) = new_refresh_token()?;
    let command = FamilyCommand::Rotate {
        presented_hash: token_hash(&request.refresh_token),
        new_hash,
        expires_at: now + chrono::Duration::days(REFRESH_TOKEN_DAYS),
        at: now,
    };
    let executed =
        execute::<RefreshFamily>(state.store.as_ref(), &stream, &command, &meta, &|_, _| None)
            .await
            .map_err(family_error)?;
    match executed.events.as_slice() {
        [RefreshFamilyEvent::RefreshTokenRotated(_)] => Ok(token_reply(&TokenResponse {
            access_token: access_token(
                &state.keys,
                user_id,
                user.role,
                user.token_generation,
                now,
            )?,
            token_type: "Bearer",
            expires_in: ACCESS_TOKEN_SECONDS,
            refresh_token,
        })),
        _ => {
            tracing::warn!(
                family.id = %family_id,
                user.id = %user_id,
                "a rotated refresh token was presented again: the family is revoked"
            );
            Err(ApiError::unauthorized(
                Code::AuthRefreshReused,
                "this refresh token was already used; every token of its login is revoked, \
                 log in again",
            ))
        }
    }
}

/// Revokes a refresh family (a logout): none of its tokens works any more. Revoking a family
/// already revoked records nothing.
pub async fn end_family(
    state: &AuthState,
    family_id: Uuid,
    user_id: Uuid,
    request_id: &RequestId,
) -> Result<(), ApiError> {
    let now = state.now();
    execute::<RefreshFamily>(
        state.store.as_ref(),
        &refresh_family_stream(family_id),
        &FamilyCommand::Revoke {
            reason: RevokeReason::Logout,
            at: now,
        },
        &metadata(request_id, user_id),
        &|_, _| None,
    )
    .await
    .map_err(family_error)?;
    Ok(())
}

/// Logs out: revokes the refresh token's login, every token of it.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "Logged out (also when the login had ended already, or the token was rotated or expired)."),
        (status = 401, description = "`AUTH_INVALID_TOKEN`: no login ever issued this refresh token."),
        (status = 409, description = "`BIZ_CONCURRENCY_CONFLICT`: a concurrent refresh or logout of the same login won."),
    ),
)]
pub async fn logout(
    State(state): State<AuthState>,
    request_id: RequestId,
    AppJson(request): AppJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let (family_id, user_id) = family_of(&state, &request.refresh_token).await?;
    end_family(&state, family_id, user_id, &request_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Tells who the request acts as.
#[utoipa::path(
    get,
    path = "/v1/auth/me",
    tag = "auth",
    responses(
        (status = 200, description = "The caller.", body = MeResponse),
    ),
)]
pub async fn me(principal: Principal) -> Response {
    let sub = match &principal {
        Principal::User { id, .. } | Principal::ApiKey { id, .. } => Some(id.to_string()),
        Principal::License { license_id } => Some(license_id.to_string()),
        Principal::Anonymous | Principal::Bootstrap => None,
    };
    axum::Json(json!({
        "kind": principal_kind(&principal),
        "sub": sub,
        "role": principal.role(),
        "actor": principal.actor(),
    }))
    .into_response()
}

fn principal_kind(principal: &Principal) -> &'static str {
    match principal {
        Principal::Anonymous => "anonymous",
        Principal::User { .. } => "user",
        Principal::ApiKey { .. } => "api_key",
        Principal::License { .. } => "license",
        Principal::Bootstrap => "bootstrap",
    }
}

/// The public key access tokens are verified with, as a JWK set.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "auth",
    responses(
        (status = 200, description = "The JWK set (cacheable for 5 minutes).", body = Jwks),
    ),
)]
pub async fn jwks(State(state): State<AuthState>) -> Response {
    let mut response = axum::Json(state.keys.jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_token_is_klr_and_256_bits_and_stored_only_as_its_hash() {
        let (token, hash) = new_refresh_token().unwrap();
        assert!(token.starts_with("klr_"));
        let bytes = URL_SAFE_NO_PAD
            .decode(&token[REFRESH_TOKEN_PREFIX.len()..])
            .unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(hash, token_hash(&token));
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&token[4..]));
        let (other, _) = new_refresh_token().unwrap();
        assert_ne!(token, other);
    }
}
