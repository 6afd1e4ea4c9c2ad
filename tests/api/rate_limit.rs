//! Rate limits: per client and route class, 429 `RATE_LIMITED` with `Retry-After` and the
//! `RateLimit-*` headers, nothing written by a refused request, and what is never limited.

use std::time::Duration;

use keyledger::config::ServeArgs;
use keyledger_api::rate_limit::{Per, Rate};
use serde_json::{Value, json};

use crate::helpers::{NewLicense, NewSession, TestApp, eventually, problem, spawn_app_with};

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn number(response: &reqwest::Response, name: &str) -> u64 {
    header(response, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} is a number of seconds or requests"))
}

/// A GET as the client at `ip` (the service trusts `X-Forwarded-For` in these tests).
async fn get_as(app: &TestApp, ip: &str, path: &str) -> reqwest::Response {
    app.http
        .get(app.url(path))
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap()
}

async fn post_as(app: &TestApp, ip: &str, path: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .header("x-forwarded-for", ip)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn trusting(args: &mut ServeArgs) {
    args.trust_forwarded_for = true;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_past_the_limit_is_refused_with_429_retry_after_and_the_ratelimit_headers() {
    let app = spawn_app_with(|args| {
        trusting(args);
        args.rate_limit_reads = Rate::new(3, Per::Minute);
    })
    .await;

    for remaining in [2, 1, 0] {
        let response = get_as(&app, "203.0.113.1", "/v1/licenses").await;
        assert_eq!(response.status(), 200);
        assert_eq!(number(&response, "ratelimit-limit"), 3);
        assert_eq!(number(&response, "ratelimit-remaining"), remaining);
        assert!(number(&response, "ratelimit-reset") <= 60);
        assert_eq!(
            header(&response, "ratelimit-policy").as_deref(),
            Some("3;w=60")
        );
    }

    let refused = get_as(&app, "203.0.113.1", "/v1/licenses").await;
    let retry_after = number(&refused, "retry-after");
    assert!(
        (1..=20).contains(&retry_after),
        "one request back in 20 s: {retry_after}"
    );
    assert_eq!(number(&refused, "ratelimit-limit"), 3);
    assert_eq!(number(&refused, "ratelimit-remaining"), 0);
    let reset = number(&refused, "ratelimit-reset");
    assert!((retry_after..=61).contains(&reset), "reset {reset}");
    let body = problem(refused, 429).await;
    assert_eq!(body["code"], "RATE_LIMITED");
    assert_eq!(body["limit"], "3/min");
    assert_eq!(body["limit_class"], "reads");
    assert!(body["detail"].as_str().unwrap().contains("retry in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_another_address_is_not_limited_by_the_first() {
    let app = spawn_app_with(|args| {
        trusting(args);
        args.rate_limit_reads = Rate::new(2, Per::Minute);
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            get_as(&app, "203.0.113.1", "/v1/licenses").await.status(),
            200
        );
    }
    assert_eq!(
        get_as(&app, "203.0.113.1", "/v1/licenses").await.status(),
        429
    );

    let other = get_as(&app, "198.51.100.2, 10.0.0.1", "/v1/licenses").await;
    assert_eq!(other.status(), 200);
    assert_eq!(number(&other, "ratelimit-remaining"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_ignored_unless_trusted() {
    let app = spawn_app_with(|args| args.rate_limit_reads = Rate::new(2, Per::Minute)).await;
    for ip in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(get_as(&app, ip, "/v1/licenses").await.status(), 200);
    }
    // Every test client is 127.0.0.1: a third address claimed in the header changes nothing.
    assert_eq!(
        get_as(&app, "203.0.113.3", "/v1/licenses").await.status(),
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validations_and_by_key_lookups_have_a_limit_of_their_own() {
    let app = spawn_app_with(|args| {
        trusting(args);
        args.rate_limit_validate = Rate::new(2, Per::Minute);
        args.rate_limit_reads = Rate::new(100, Per::Minute);
    })
    .await;
    let key = app.issue_license().await.key;
    let client = "203.0.113.1";
    let validate = json!({"key": key});
    for _ in 0..2 {
        let response = post_as(&app, client, "/v1/licenses/validate", &validate).await;
        assert_eq!(response.status(), 200);
        assert_eq!(number(&response, "ratelimit-limit"), 2);
    }
    let refused = post_as(&app, client, "/v1/licenses/validate", &validate).await;
    assert_eq!(problem(refused, 429).await["limit_class"], "validate");
    let lookup = app
        .http
        .get(app.url("/v1/licenses/by-key"))
        .header("x-forwarded-for", client)
        .header("x-license-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status(), 429, "a by-key lookup is a validation");

    // Reads are counted apart: the same client still reads.
    let read = get_as(&app, client, "/v1/licenses").await;
    assert_eq!(read.status(), 200);
    assert_eq!(number(&read, "ratelimit-limit"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_client_is_allowed_again_once_the_window_has_passed() {
    let app = spawn_app_with(|args| {
        trusting(args);
        args.rate_limit_reads = Rate::new(2, Per::Second);
    })
    .await;
    let client = "203.0.113.1";
    let refused = eventually(
        Duration::from_secs(5),
        "the limit to be reached",
        || async {
            let response = get_as(&app, client, "/v1/licenses").await;
            (response.status() == 429).then_some(response)
        },
    )
    .await;
    assert_eq!(number(&refused, "retry-after"), 1);

    let allowed = eventually(
        Duration::from_secs(5),
        "the client to be let in",
        || async {
            let response = get_as(&app, client, "/v1/licenses").await;
            (response.status() == 200).then_some(response)
        },
    )
    .await;
    assert_eq!(number(&allowed, "ratelimit-limit"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_the_admin_hubs_files_are_never_limited() {
    let app = spawn_app_with(|args| {
        args.rate_limit_reads = Rate::new(1, Per::Hour);
        args.rate_limit_commands = Rate::new(1, Per::Hour);
    })
    .await;
    for _ in 0..5 {
        for path in [
            "/health/live",
            "/health/ready",
            "/health",
            "/metrics",
            "/admin/static/admin.css",
            "/admin/static/admin.js",
        ] {
            let response = app.get(path).await;
            assert_ne!(response.status(), 429, "{path}");
            assert!(header(&response, "ratelimit-limit").is_none(), "{path}");
        }
    }
    // The admin pages themselves are reads like any other.
    assert_eq!(app.get("/admin").await.status(), 200);
    assert_eq!(app.get("/admin").await.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_writes_nothing_and_is_still_in_the_request_log() {
    let app = spawn_app_with(|args| {
        args.rate_limit_commands = Rate::new(1, Per::Hour);
    })
    .await;
    app.issue_license().await;
    let events = app.event_count().await;

    let refused = app
        .licenses()
        .try_issue(&NewLicense::new("acme", "pro"))
        .await;
    let body = problem(refused, 429).await;
    assert_eq!(body["code"], "RATE_LIMITED");
    assert_eq!(body["limit_class"], "commands");
    let refused_session = app.sessions().try_create(&NewSession::new("x")).await;
    assert_eq!(refused_session.status(), 429);

    let page: Value = eventually(
        Duration::from_secs(10),
        "the 429s to be recorded",
        || async {
            let page: Value = app.get("/v1/requests?status=429").await.json().await.ok()?;
            (page["items"].as_array()?.len() >= 2).then_some(page)
        },
    )
    .await;
    let paths: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["path"].as_str())
        .collect();
    assert!(paths.contains(&"/v1/licenses"), "{paths:?}");
    assert!(paths.contains(&"/v1/sessions"), "{paths:?}");
    assert_eq!(
        app.event_count().await,
        events,
        "no domain event was appended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_and_refreshes_share_the_login_limit() {
    let app = spawn_app_with(|args| {
        args.rate_limit_login = Rate::new(1, Per::Hour);
    })
    .await;
    let credentials = json!({"email": "a@example.com", "password": "correct horse"});
    let first = app.post("/v1/auth/login", &credentials).await;
    assert_ne!(first.status(), 429);
    assert_eq!(number(&first, "ratelimit-limit"), 1);
    let refresh = app
        .post("/v1/auth/refresh", &json!({"refresh_token": "t"}))
        .await;
    assert_eq!(problem(refresh, 429).await["limit_class"], "login");
    // Other commands are counted apart.
    assert_eq!(
        app.post("/v1/licenses", &json!({"owner": "acme", "tier": "pro"}))
            .await
            .status(),
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_set_off_is_not_limited_and_sends_no_ratelimit_headers() {
    let app = spawn_app_with(|args| {
        args.rate_limit_reads = Rate::Off;
    })
    .await;
    for _ in 0..20 {
        let response = app.get("/v1/licenses").await;
        assert_eq!(response.status(), 200);
        assert!(header(&response, "ratelimit-limit").is_none());
    }
}

#[test]
fn a_rate_setting_that_does_not_read_stops_start_up_saying_what_is_expected() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .arg("serve")
        .env("RATE_LIMIT_VALIDATE", "lots/min")
        .env("BIND", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("RATE_LIMIT_VALIDATE") || stderr.contains("rate-limit-validate"),
        "{stderr}"
    );
    assert!(stderr.contains("`N/sec`, `N/min`, `N/hour`"), "{stderr}");
}
