//! The admin hub's cookie session. Logging in at `/admin/login` starts a refresh-token family
//! (the same login as `POST /v1/auth/login`) and puts its refresh token in the `kl_session`
//! cookie (HttpOnly, SameSite=Strict, Path=/, `Secure` over https). Each request the cookie
//! authenticates looks the token up in the inline `refresh_tokens` table, joined with its user:
//! a logout, a revocation of the family or a disabled user ends the session at once, and no
//! token is rotated on the request path (pages load several resources at once, which would
//! race a rotation into reuse detection).
//!
//! A state-changing request (POST, PUT, PATCH, DELETE) the cookie authenticates must carry the
//! session's CSRF token: `X-CSRF-Token` (the hub's pages hold it in
//! `<meta name="csrf-token">`, which admin.js sends on every fetch) or, for an HTML form, the
//! hidden field `csrf_token`. The token is HMAC-SHA256 of the family id under a secret derived
//! from the JWT signing key. Requests with an `Authorization` header need no CSRF token.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::jwt::JwtKeys;
use crate::principal::Role;
use crate::{ApiError, Code};

/// The cookie holding the session's refresh token.
pub const SESSION_COOKIE: &str = "kl_session";

/// How long an admin session lasts (its refresh family expires then; the cookie too).
pub const SESSION_HOURS: i64 = 12;

/// The header a script sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The hidden field an HTML form sends the CSRF token in.
pub const CSRF_FIELD: &str = "csrf_token";

/// The largest form body read for its CSRF field.
const FORM_LIMIT: usize = 64 * 1024;

/// A request authenticated by the session cookie (in the request's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSession {
    pub family_id: Uuid,
    pub user_id: Uuid,
    /// The token the session's pages send with every state change.
    pub csrf_token: String,
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The CSRF token of a session (hex).
pub fn csrf_token(keys: &JwtKeys, family_id: Uuid) -> String {
    let secret = keys.derive_secret("keyledger admin csrf v1");
    hex_of(&hmac_sha256(&secret, family_id.as_bytes()))
}

/// Whether `presented` is the session's CSRF token (compared in constant time).
pub fn csrf_matches(session: &CookieSession, presented: &str) -> bool {
    let presented = presented.trim();
    presented.len() == session.csrf_token.len()
        && bool::from(presented.as_bytes().ct_eq(session.csrf_token.as_bytes()))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) of a refresh token: the form `refresh_tokens` keeps it in.
fn token_hash(token: &str) -> String {
    hex_of(&Sha256::digest(token.as_bytes()))
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
}

/// Whether cookies get the `Secure` attribute: always when the service is configured so
/// (`ADMIN_COOKIE_SECURE`), and when a proxy says the request came over https
/// (`X-Forwarded-Proto: https`).
pub fn wants_secure(headers: &HeaderMap, configured: bool) -> bool {
    configured
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

fn cookie_header(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    // The token is URL-safe base64 and the rest is ours: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Set-Cookie` of a new session.
pub fn session_cookie(refresh_token: &str, secure: bool) -> HeaderValue {
    cookie_header(refresh_token, SESSION_HOURS * 3600, secure)
}

/// `Set-Cookie` that removes the session cookie.
pub fn cleared_cookie(secure: bool) -> HeaderValue {
    cookie_header("", 0, secure)
}

/// The live session of a refresh token: its family and user, and the user's role. `None` when
/// the token is unknown, rotated, revoked or expired, or its user is disabled.
pub async fn session_of(
    client: &impl GenericClient,
    refresh_token: &str,
    now: DateTime<Utc>,
) -> Result<Option<(Uuid, Uuid, Role)>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "SELECT t.family_id, t.user_id, u.role FROM refresh_tokens t \
             JOIN users u ON u.user_id = t.user_id \
             WHERE t.token_hash = $1 AND t.state = 'current' AND t.expires_at > $2 \
               AND NOT u.disabled",
        )
        .await?;
    let Some(row) = client
        .query_opt(&statement, &[&token_hash(refresh_token), &now])
        .await?
    else {
        return Ok(None);
    };
    let role: String = row.try_get(2)?;
    Ok(Role::parse(&role).map(|role| (row.get(0), row.get(1), role)))
}

/// POST, PUT, PATCH and DELETE (and any method not known to be safe).
pub fn is_state_changing(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

fn csrf_failed() -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        Code::AuthCsrfFailed,
        "a change made with the session cookie needs the session's CSRF token \
         (`X-CSRF-Token`, or the form field `csrf_token`)",
    )
    .into_response()
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        })
}

/// The `csrf_token` field of a form body.
pub fn form_csrf_token(body: &[u8]) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(name, _)| name == CSRF_FIELD)
        .map(|(_, value)| value)
}

/// Passes a cookie-authenticated state change on only with the session's CSRF token; answers
/// 403 `AUTH_CSRF_FAILED` otherwise. A form's body is read for its field and handed on.
pub async fn check_csrf(session: &CookieSession, request: Request) -> Result<Request, Response> {
    if !is_state_changing(request.method()) {
        return Ok(request);
    }
    if let Some(value) = request.headers().get(CSRF_HEADER) {
        let matches = value.to_str().is_ok_and(|v| csrf_matches(session, v));
        return if matches {
            Ok(request)
        } else {
            Err(csrf_failed())
        };
    }
    if !is_form(request.headers()) {
        return Err(csrf_failed());
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| csrf_failed())?;
    match form_csrf_token(&bytes) {
        Some(token) if csrf_matches(session, &token) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => Err(csrf_failed()),
    }
}

/// Where to go after logging in: `next` when it is a local `/admin…` path, else `/admin`.
/// Anything that could leave the site (`//host`, `/\host`, a scheme) or climb out of `/admin`
/// is refused.
pub fn local_admin_path(next: Option<&str>) -> String {
    const HOME: &str = "/admin";
    let Some(next) = next else {
        return HOME.to_owned();
    };
    let path = next.split(['?', '#']).next().unwrap_or("");
    let under_admin = path == HOME || path.starts_with("/admin/");
    let plain = next.len() <= 2048
        && next
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '\\' && c != '"' && c != '<' && c != '>')
        && !next.contains("//")
        && !path
            .split('/')
            .any(|segment| segment == ".." || segment == ".")
        && !path.to_ascii_lowercase().contains("%2e")
        && !path.to_ascii_lowercase().contains("%2f")
        && !path.to_ascii_lowercase().contains("%5c");
    if under_admin && plain && !path.starts_with("/admin/login") && path != "/admin/logout" {
        next.to_owned()
    } else {
        HOME.to_owned()
    }
}

/// The Content-Security-Policy of the admin hub: everything from the service itself, no inline
/// script or style, no framing.
pub const ADMIN_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Middleware of the admin hub's routes: security headers on every response, and
/// `Cache-Control: no-store` unless the response set its own (the static assets do).
pub async fn admin_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(ADMIN_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex_of(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex_of(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_csrf_token_belongs_to_one_session_and_one_key() {
        let keys = JwtKeys::from_seed([5; 32]);
        let family = Uuid::from_u128(1);
        let token = csrf_token(&keys, family);
        assert_eq!(token.len(), 64);
        assert_eq!(token, csrf_token(&keys, family));
        assert_ne!(token, csrf_token(&keys, Uuid::from_u128(2)));
        assert_ne!(token, csrf_token(&JwtKeys::from_seed([6; 32]), family));
        let session = CookieSession {
            family_id: family,
            user_id: Uuid::nil(),
            csrf_token: token.clone(),
        };
        assert!(csrf_matches(&session, &token));
        assert!(!csrf_matches(&session, &token[1..]));
        assert!(!csrf_matches(&session, ""));
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_over_https() {
        let plain = session_cookie("klr_abc", false);
        let text = plain.to_str().unwrap();
        assert!(text.starts_with("kl_session=klr_abc; Path=/;"));
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Strict"));
        assert!(!text.contains("Secure"));
        assert!(
            session_cookie("klr_abc", true)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        let mut headers = HeaderMap::new();
        assert!(!wants_secure(&headers, false));
        assert!(wants_secure(&headers, true));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert!(wants_secure(&headers, false));
        assert!(
            cleared_cookie(false)
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
    }

    #[test]
    fn cookies_are_read_by_name_from_every_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; kl_sessionx=2"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("b=3;kl_session=klr_x"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("klr_x"));
        assert_eq!(cookie(&headers, "a"), Some("1"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn the_csrf_field_is_read_from_a_form() {
        assert_eq!(
            form_csrf_token(b"a=1&csrf_token=abc%20d&b=2").as_deref(),
            Some("abc d")
        );
        assert_eq!(form_csrf_token(b"a=1"), None);
    }

    #[test]
    fn only_local_admin_paths_are_followed_after_login() {
        for good in [
            "/admin",
            "/admin/licenses",
            "/admin/licenses?status=active",
            "/admin/events?stream_id=license-1",
        ] {
            assert_eq!(local_admin_path(Some(good)), good);
        }
        for bad in [
            "https://evil.example/admin",
            "//evil.example/admin",
            "/\\evil.example",
            "/admin//evil.example",
            "/admin/../v1/licenses",
            "/admin/%2e%2e/v1",
            "/administrator",
            "/v1/licenses",
            "/admin/login?next=/admin",
            "javascript:alert(1)",
            "/admin/\u{0}",
            "",
        ] {
            assert_eq!(local_admin_path(Some(bad)), "/admin", "{bad}");
        }
        assert_eq!(local_admin_path(None), "/admin");
    }

    proptest! {
        #[test]
        fn no_next_leads_off_the_admin_hub(next in ".{0,80}") {
            let target = local_admin_path(Some(&next));
            prop_assert!(target == "/admin" || target.starts_with("/admin/") || target.starts_with("/admin?"));
            prop_assert!(!target.contains("//") && !target.contains('\\'));
            prop_assert!(target.chars().all(|c| c.is_ascii_graphic()));
        }

        #[test]
        fn no_other_token_passes_for_the_csrf_token(other in "[0-9a-f]{0,70}") {
            let keys = JwtKeys::from_seed([9; 32]);
            let token = csrf_token(&keys, Uuid::from_u128(7));
            let session = CookieSession { family_id: Uuid::from_u128(7), user_id: Uuid::nil(), csrf_token: token.clone() };
            prop_assert_eq!(csrf_matches(&session, &other), other == token);
        }
    }
}
