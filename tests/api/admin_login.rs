//! The admin hub's login: the redirect of an anonymous visitor, the login form and its error,
//! the session cookie's attributes, pages that show only what the role may do, the CSRF token a
//! cookie-authenticated change needs, logout, and the security headers.

use keyledger::config::ServeArgs;
use keyledger_api::Role;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, PASSWORD, TestApp, create_user, problem, spawn_app, spawn_app_with,
};

async fn app() -> TestApp {
    spawn_app().await
}

/// A client that does not follow redirects and keeps no cookies (the test sends them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn location(response: &reqwest::Response) -> &str {
    response.headers()["location"].to_str().unwrap()
}

async fn post_login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    browser()
        .post(app.url("/admin/login"))
        .form(&[
            ("email", email),
            ("password", password),
            ("next", "/admin/licenses"),
        ])
        .send()
        .await
        .unwrap()
}

/// Logs in through the form; the `Cookie` header value of the session.
async fn log_in(app: &TestApp, email: &str) -> String {
    let response = post_login(app, email, PASSWORD).await;
    assert_eq!(response.status(), 303);
    let cookie = set_cookies(response.headers())
        .into_iter()
        .find(|c| c.starts_with("kl_session="))
        .expect("a session cookie");
    cookie.split(';').next().unwrap().to_owned()
}

async fn page(app: &TestApp, cookie: &str, path: &str) -> reqwest::Response {
    browser()
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

async fn html(app: &TestApp, cookie: &str, path: &str) -> String {
    let response = page(app, cookie, path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.unwrap()
}

fn csrf_of(html: &str) -> String {
    let meta = r#"<meta name="csrf-token" content=""#;
    let start = html.find(meta).expect("csrf meta") + meta.len();
    html[start..start + 64].to_owned()
}

async fn issue_with_cookie(app: &TestApp, cookie: &str, csrf: Option<&str>) -> reqwest::Response {
    let mut request = browser()
        .post(app.url("/v1/licenses"))
        .header("cookie", cookie)
        .json(&json!({"owner": "cookie co", "tier": "pro"}));
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_anonymous_visitor_is_sent_to_the_login_page_and_back_after_logging_in() {
    let app = app().await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let response = page(&app, "", "/admin/licenses?status=active").await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        location(&response),
        "/admin/login?next=%2Fadmin%2Flicenses%3Fstatus%3Dactive"
    );
    let form = html(&app, "", location(&response)).await;
    assert!(form.contains(r#"name="next" value="/admin/licenses?status=active""#));

    let response = post_login(&app, "ops@example.com", PASSWORD).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/admin/licenses");
    // Somewhere else than the hub is not followed.
    let response = browser()
        .post(app.url("/admin/login"))
        .form(&[
            ("email", "ops@example.com"),
            ("password", PASSWORD),
            ("next", "//evil.example/admin"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&response), "/admin");
}

#[tokio::test]
async fn a_wrong_password_shows_the_form_again_with_an_error_and_sets_no_cookie() {
    let app = app().await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    for (email, password) in [
        ("ops@example.com", "wrong password"),
        ("nobody@example.com", PASSWORD),
    ] {
        let response = post_login(&app, email, password).await;
        assert_eq!(response.status(), 401);
        assert!(set_cookies(response.headers()).is_empty());
        let body = response.text().await.unwrap();
        assert!(
            body.contains("The email or the password is wrong."),
            "{body}"
        );
        assert!(!body.contains(password));
    }
    // The password is not in the request log.
    let client = app.pool.get().await.unwrap();
    crate::helpers::eventually(
        std::time::Duration::from_secs(10),
        "the login requests recorded",
        || async {
            let rows = client
                .query(
                    "SELECT data::text FROM events WHERE event_type = 'ApiRequestRecorded' \
                     AND data->>'path' = '/admin/login'",
                    &[],
                )
                .await
                .unwrap();
            (rows.len() == 2).then_some(rows)
        },
    )
    .await
    .iter()
    .for_each(|row| {
        let data: &str = row.get(0);
        assert!(
            !data.contains("wrong password") && !data.contains("horse"),
            "{data}"
        );
        assert!(data.contains("[REDACTED]"), "{data}");
    });
}

#[tokio::test]
async fn logging_in_sets_an_http_only_strict_session_cookie_secure_behind_https() {
    let app = app().await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let response = post_login(&app, "ops@example.com", PASSWORD).await;
    let cookies = set_cookies(response.headers());
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let cookie = &cookies[0];
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert!(!cookie.contains("horse"));
    let secure = browser()
        .post(app.url("/admin/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("email", "ops@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert!(set_cookies(secure.headers())[0].ends_with("; Secure"));

    // The hub says who is logged in.
    let session = log_in(&app, "ops@example.com").await;
    let hub = html(&app, &session, "/admin").await;
    assert!(hub.contains("ops@example.com") && hub.contains("operator"));
    assert!(hub.contains(r#"action="/admin/logout""#));
    // An Authorization header wins over the cookie.
    let me: Value = browser()
        .get(app.url("/v1/auth/me"))
        .header("cookie", &session)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["kind"], "bootstrap");
}

#[tokio::test]
async fn a_viewer_sees_no_controls_and_no_link_to_what_it_may_not_read() {
    let app = app().await;
    let issued = app.issue_license().await;
    create_user(&app.database.url, "viewer@example.com", Role::Viewer).await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let viewer = log_in(&app, "viewer@example.com").await;
    let list = html(&app, &viewer, "/admin/licenses").await;
    assert!(!list.contains("issue-form"), "no issue form");
    assert!(!list.contains(r#"href="/admin/requests""#));
    assert!(!list.contains(r#"href="/admin/events""#));
    assert!(list.contains(r#"href="/admin/sessions""#));
    let detail_path = format!(
        "/admin/licenses/{}?at={}",
        issued.license_id, issued.position
    );
    let detail = html(&app, &viewer, &detail_path).await;
    assert!(detail.contains("acme"));
    assert!(
        !detail.contains("data-action"),
        "no revoke or suspend buttons"
    );
    assert_eq!(page(&app, &viewer, "/admin/requests").await.status(), 403);

    let operator = log_in(&app, "ops@example.com").await;
    let detail = html(&app, &operator, &detail_path).await;
    assert!(detail.contains(r#"data-action="revoke""#));
    assert!(
        html(&app, &operator, "/admin/licenses")
            .await
            .contains("issue-form")
    );
}

#[tokio::test]
async fn a_change_made_with_the_cookie_needs_the_csrf_token() {
    let app = app().await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let session = log_in(&app, "ops@example.com").await;
    let csrf = csrf_of(&html(&app, &session, "/admin/licenses").await);
    let before = app.event_count().await;

    for wrong in [None, Some("0".repeat(64).as_str()), Some(&csrf[..63])] {
        let body = problem(issue_with_cookie(&app, &session, wrong).await, 403).await;
        assert_eq!(body["code"], "AUTH_CSRF_FAILED");
    }
    assert_eq!(app.event_count().await, before, "nothing was written");

    let issued = issue_with_cookie(&app, &session, Some(&csrf)).await;
    assert_eq!(issued.status(), 201);
    let issued: Value = issued.json().await.unwrap();
    // The event names the user who acted.
    let actors = app
        .actors(&format!(
            "license-{}",
            issued["license_id"].as_str().unwrap()
        ))
        .await;
    assert!(actors[0].starts_with("user:"), "{actors:?}");

    // A bearer needs no CSRF token; a read with the cookie neither.
    let bearer = browser()
        .post(app.url("/v1/licenses"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"owner": "bearer co", "tier": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 201);
    assert_eq!(page(&app, &session, "/v1/licenses").await.status(), 200);
}

#[tokio::test]
async fn after_logout_the_cookie_no_longer_works() {
    let app = app().await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let session = log_in(&app, "ops@example.com").await;
    let csrf = csrf_of(&html(&app, &session, "/admin").await);
    // Without the form's token the logout is refused.
    let refused = browser()
        .post(app.url("/admin/logout"))
        .header("cookie", &session)
        .form(&[("csrf_token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(problem(refused, 403).await["code"], "AUTH_CSRF_FAILED");
    assert_eq!(page(&app, &session, "/admin").await.status(), 200);

    let response = browser()
        .post(app.url("/admin/logout"))
        .header("cookie", &session)
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/admin/login");
    let cleared = set_cookies(response.headers());
    assert!(cleared[0].starts_with("kl_session=;") && cleared[0].contains("Max-Age=0"));
    assert_eq!(
        app.count_of("RefreshFamilyRevoked").await,
        1,
        "the session's family is revoked"
    );

    let after = page(&app, &session, "/admin/licenses").await;
    assert_eq!(after.status(), 303);
    assert!(location(&after).starts_with("/admin/login"));
    let write = issue_with_cookie(&app, &session, Some(&csrf)).await;
    assert_eq!(
        problem(write, 401).await["code"],
        "AUTH_MISSING_CREDENTIALS"
    );
}

#[tokio::test]
async fn every_admin_response_carries_the_security_headers() {
    let app = app().await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let session = log_in(&app, "ops@example.com").await;
    for (cookie, path) in [
        ("", "/admin/login"),
        (session.as_str(), "/admin"),
        (session.as_str(), "/admin/licenses"),
        ("", "/admin/static/admin.js"),
    ] {
        let response = page(&app, cookie, path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "same-origin");
        if !path.starts_with("/admin/static/") {
            assert_eq!(headers["cache-control"], "no-store", "{path}");
            // Nothing inline that the policy would block.
            let body = response.text().await.unwrap();
            assert!(!body.contains("style=") && !body.contains(" onclick="));
            assert!(!body.contains("<script>"));
        }
    }
}

#[tokio::test]
async fn the_login_form_shares_the_failed_login_throttle() {
    let app = spawn_app_with(|args: &mut ServeArgs| {
        args.rate_limit_login_failures_per_account = "2/hour".parse().unwrap();
    })
    .await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    // One failure through the JSON API, one through the form: the account is locked for both.
    let json = app
        .post(
            "/v1/auth/login",
            &json!({"email": "ops@example.com", "password": "wrong"}),
        )
        .await;
    assert_eq!(json.status(), 401);
    assert_eq!(
        post_login(&app, "ops@example.com", "wrong").await.status(),
        401
    );
    let locked = post_login(&app, "ops@example.com", PASSWORD).await;
    assert_eq!(locked.status(), 429);
    assert!(locked.headers().contains_key("retry-after"));
    assert!(set_cookies(locked.headers()).is_empty());
    assert!(
        locked
            .text()
            .await
            .unwrap()
            .contains("Too many failed logins")
    );
}

#[tokio::test]
async fn logging_in_as_someone_else_ends_the_session_the_browser_had() {
    let app = app().await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    create_user(&app.database.url, "viewer@example.com", Role::Viewer).await;
    let first = log_in(&app, "ops@example.com").await;
    // The login page, opened with a live session, carries its CSRF token.
    let form = html(&app, &first, "/admin/login").await;
    let field = r#"name="csrf_token" value=""#;
    let start = form.find(field).expect("csrf field") + field.len();
    let csrf = form[start..start + 64].to_owned();
    let response = browser()
        .post(app.url("/admin/login"))
        .header("cookie", &first)
        .form(&[
            ("email", "viewer@example.com"),
            ("password", PASSWORD),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let second = set_cookies(response.headers())[0]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        html(&app, &second, "/admin")
            .await
            .contains("viewer@example.com")
    );
    assert_eq!(page(&app, &first, "/admin").await.status(), 303);
}

#[tokio::test]
async fn revoking_a_users_tokens_or_disabling_them_ends_their_hub_session() {
    let app = app().await;
    let ops = create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let viewer = create_user(&app.database.url, "viewer@example.com", Role::Viewer).await;
    let ops_session = log_in(&app, "ops@example.com").await;
    let viewer_session = log_in(&app, "viewer@example.com").await;
    assert_eq!(page(&app, &ops_session, "/admin").await.status(), 200);
    assert_eq!(page(&app, &viewer_session, "/admin").await.status(), 200);

    let revoked = app
        .post(&format!("/v1/users/{ops}/revoke-tokens"), &json!({}))
        .await;
    assert!(revoked.status().is_success(), "{}", revoked.status());
    let disabled = app
        .post(&format!("/v1/users/{viewer}/disable"), &json!({}))
        .await;
    assert!(disabled.status().is_success(), "{}", disabled.status());

    for session in [&ops_session, &viewer_session] {
        let response = page(&app, session, "/admin").await;
        assert_eq!(response.status(), 303);
        assert!(location(&response).starts_with("/admin/login"));
    }
}

#[tokio::test]
async fn a_login_posted_from_another_site_is_refused_and_sets_no_cookie() {
    let app = app().await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let own_origin = app.address.clone();
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let response = browser()
            .post(app.url("/admin/login"))
            .header(name, value)
            .form(&[("email", "ops@example.com"), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        assert!(
            set_cookies(response.headers()).is_empty(),
            "{name}: {value}"
        );
        assert_eq!(
            problem(response, 403).await["code"],
            "AUTH_FORBIDDEN",
            "{name}: {value}"
        );
    }
    // The login page's own post (same origin) works.
    let response = browser()
        .post(app.url("/admin/login"))
        .header("origin", own_origin)
        .header("sec-fetch-site", "same-origin")
        .form(&[("email", "ops@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
}
