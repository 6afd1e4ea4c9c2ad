//! Logging in and out of the admin hub: `GET /admin/login` (the form), `POST /admin/login`
//! (the login of `POST /v1/auth/login`, answered with the session cookie and a redirect) and
//! `POST /admin/logout` (revokes the session's refresh family and clears the cookie). The
//! cookie session itself is read by `keyledger_api::session`.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyledger_api::session::{
    CookieSession, SESSION_HOURS, cleared_cookie, local_admin_path, session_cookie, wants_secure,
};
use keyledger_api::{ApiError, AppQuery, Code, RequestId, Routes};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{AuthState, client_ip, end_family, log_in};

/// The routes, with the admin hub's security headers.
pub fn routes() -> Routes<AuthState> {
    Routes::new()
        .get("/admin/login", page)
        .post("/admin/login", submit)
        .post("/admin/logout", logout)
        .map(|router| {
            router.layer(axum::middleware::from_fn(
                keyledger_api::session::admin_headers,
            ))
        })
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Where to go after logging in: a local `/admin…` path (anything else goes to `/admin`).
    #[param(example = "/admin/licenses")]
    pub next: Option<String>,
}

/// The login form's fields (`POST /admin/login`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AdminLoginForm {
    /// The user's email, in any case (missing: empty).
    #[schema(required = false)]
    email: String,
    /// The password (missing: empty).
    #[schema(required = false)]
    password: String,
    /// Where to go after logging in: a local `/admin…` path (anything else goes to `/admin`).
    #[schema(required = false)]
    next: String,
    /// The CSRF token of the session the browser already has, if any: a post with a live
    /// session cookie needs it.
    #[schema(required = false)]
    csrf_token: String,
}

/// The logout form's fields (`POST /admin/logout`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AdminLogoutForm {
    /// The session's CSRF token: a post with a live session cookie needs it (here or in
    /// `X-CSRF-Token`).
    #[schema(required = false)]
    csrf_token: String,
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// The login form; `error` is shown above it (it never says which field was wrong).
fn login_page(next: &str, email: &str, error: Option<&str>, csrf: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · keyledger admin" }
                link rel="stylesheet" href="/admin/static/admin.css";
            }
            body.login {
                header { span.brand { "keyledger" } }
                main #main {
                    h1 { "Log in" }
                    @if let Some(error) = error {
                        div #login-error.notice.error role="alert" { (error) }
                    }
                    form #login-form.login method="post" action="/admin/login" {
                        input type="hidden" name="next" value=(next);
                        @if let Some(csrf) = csrf {
                            input type="hidden" name="csrf_token" value=(csrf);
                        }
                        label { "Email"
                            input name="email" type="email" required autocomplete="username" value=(email) autofocus;
                        }
                        label { "Password"
                            input name="password" type="password" required autocomplete="current-password";
                        }
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

/// Whether a form post comes from another site: the browser says so in `Sec-Fetch-Site`, or
/// its `Origin` names another host than the one it is posting to. Refusing those stops a hostile
/// page from logging a browser into an account of the attacker's (login CSRF); a post without
/// either header (curl, old browsers) is let through. Behind a proxy that rewrites `Host`, the
/// `X-Forwarded-Host` it sets counts as the host (every current browser sends
/// `Sec-Fetch-Site`, which is read first).
fn from_another_site(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = text("origin") else {
        return false;
    };
    let authority = origin
        .split_once("://")
        .map_or(origin, |(_, authority)| authority);
    ![text("host"), text("x-forwarded-host")]
        .into_iter()
        .flatten()
        .any(|host| authority.eq_ignore_ascii_case(host))
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let value = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/admin"));
    response.headers_mut().insert(header::LOCATION, value);
    response
}

/// The admin hub's login form.
///
/// Shown to a browser with a live session too (to log in as someone else): the form then
/// carries that session's CSRF token, which the cookie's POST needs.
#[utoipa::path(
    get,
    path = "/admin/login",
    tag = "admin hub",
    params(PageParams),
    responses(
        (status = 200, description = "The login form.", content_type = "text/html", body = String),
    ),
)]
pub async fn page(
    session: Option<axum::Extension<CookieSession>>,
    AppQuery(params): AppQuery<PageParams>,
) -> Response {
    let next = local_admin_path(params.next.as_deref());
    let csrf = session.map(|axum::Extension(session)| session.csrf_token);
    login_page(&next, "", None, csrf.as_deref()).into_response()
}

/// Logs a browser in to the admin hub: the session cookie, and on to `next`.
///
/// A session the browser already had ends. On failure the form comes back with an error;
/// failures are throttled like `POST /v1/auth/login`'s.
#[utoipa::path(
    post,
    path = "/admin/login",
    tag = "admin hub",
    request_body(content = AdminLoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Logged in: the session cookie, and on to `next` (a local `/admin…` path, else `/admin`).", headers(
            ("Location" = String, description = "Where to go: `next`, or `/admin`."),
            ("Set-Cookie" = String, description = "`kl_session`: the session (HttpOnly, SameSite=Strict, 12 hours)."),
        )),
        (status = 400, description = "A form that cannot be read (a field given twice): the form again, with an error.", content_type = "text/html", body = String),
        (status = 401, description = "The email or the password is wrong (or the user is disabled): the form again, with an error.", content_type = "text/html", body = String),
        (status = 403, description = "`AUTH_FORBIDDEN`: the post comes from another site (`Sec-Fetch-Site` or `Origin`); `AUTH_CSRF_FAILED`: a live session cookie without its CSRF token."),
        (status = 429, description = "Too many failed logins for the account or the address: the form again, with an error.", content_type = "text/html", body = String, headers(("Retry-After" = i64, description = "Seconds to wait before trying again."))),
    ),
)]
#[tracing::instrument(skip_all, fields(user.id))]
pub async fn submit(
    State(state): State<AuthState>,
    session: Option<axum::Extension<CookieSession>>,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    request_id: RequestId,
    body: Bytes,
) -> Result<Response, ApiError> {
    if from_another_site(&headers) {
        return Err(ApiError::forbidden(
            "the login form accepts posts from its own pages only",
        ));
    }
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        let page = login_page("/admin", "", Some("Enter an email and a password."), None);
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    let next = local_admin_path(form.next.as_deref());
    // A browser with a live session logs in as someone else: the form again keeps its token.
    let previous = session.map(|axum::Extension(session)| session);
    let csrf = previous.as_ref().map(|session| session.csrf_token.as_str());
    let ip = client_ip(&state, &headers, peer);
    let lifetime = chrono::Duration::hours(SESSION_HOURS);
    let logged_in = match log_in(
        &state,
        &form.email,
        form.password,
        ip,
        &request_id,
        lifetime,
    )
    .await
    {
        Ok(logged_in) => logged_in,
        Err(error) if error.code == Code::AuthInvalidCredentials => {
            let page = login_page(
                &next,
                &form.email,
                Some("The email or the password is wrong."),
                csrf,
            );
            return Ok((StatusCode::UNAUTHORIZED, page).into_response());
        }
        Err(error) if error.code == Code::RateLimited => {
            let page = login_page(
                &next,
                &form.email,
                Some("Too many failed logins. Wait a while, then try again."),
                csrf,
            );
            let mut response = (StatusCode::TOO_MANY_REQUESTS, page).into_response();
            if let Some(seconds) = error.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            return Ok(response);
        }
        Err(error) => return Err(error),
    };
    // The session the new one replaces ends.
    if let Some(previous) = &previous {
        end_family(&state, previous.family_id, previous.user_id, &request_id).await?;
    }
    let mut response = redirect(&next);
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(
            &logged_in.refresh_token,
            wants_secure(&headers, state.secure_cookies),
        ),
    );
    Ok(response)
}

/// Logs a browser out of the admin hub: ends the cookie's session and clears the cookie.
#[utoipa::path(
    post,
    path = "/admin/logout",
    tag = "admin hub",
    request_body(content = Option<AdminLogoutForm>, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Logged out (also without a live session): on to the login page.", headers(
            ("Location" = String, description = "`/admin/login`."),
            ("Set-Cookie" = String, description = "Clears `kl_session`."),
        )),
        (status = 403, description = "`AUTH_CSRF_FAILED`: a live session cookie without its CSRF token."),
        (status = 409, description = "`BIZ_CONCURRENCY_CONFLICT`: a concurrent change of the session's login won."),
    ),
)]
pub async fn logout(
    State(state): State<AuthState>,
    session: Option<axum::Extension<CookieSession>>,
    headers: HeaderMap,
    request_id: RequestId,
) -> Result<Response, ApiError> {
    if let Some(axum::Extension(session)) = session {
        end_family(&state, session.family_id, session.user_id, &request_id).await?;
    }
    let mut response = redirect("/admin/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        cleared_cookie(wants_secure(&headers, state.secure_cookies)),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_post_from_another_site_is_told_apart_from_one_from_the_login_page() {
        let own = [("host", "keys.example.com:8080")];
        assert!(!from_another_site(&headers(&own)));
        assert!(!from_another_site(&headers(&[
            own[0],
            ("origin", "https://keys.example.com:8080")
        ])));
        assert!(!from_another_site(&headers(&[
            own[0],
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(from_another_site(&headers(&[
            own[0],
            ("origin", "https://evil.example")
        ])));
        assert!(from_another_site(&headers(&[own[0], ("origin", "null")])));
        assert!(!from_another_site(&headers(&[
            ("host", "backend:8080"),
            ("x-forwarded-host", "keys.example.com"),
            ("origin", "https://keys.example.com")
        ])));
        for site in ["cross-site", "same-site"] {
            assert!(from_another_site(&headers(&[
                own[0],
                ("origin", "https://keys.example.com:8080"),
                ("sec-fetch-site", site)
            ])));
        }
    }
}
