//! API keys: created once by an admin, used as bearer tokens with their scopes as permissions,
//! revoked for good; listed with their prefix and last use, stored nowhere but as a hash.

use std::process::Stdio;
use std::time::Duration;

use keyledger_api::Role;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{ADMIN_TOKEN, PASSWORD, TestApp, create_user, eventually, problem, spawn_app};

/// A request as the bearer of `token` (none: anonymous), from a client of its own.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn create_key(app: &TestApp, token: &str, name: &str, scopes: &[&str]) -> Value {
    let response = call(
        app,
        Method::POST,
        "/v1/api-keys",
        Some(token),
        Some(json!({"name": name, "scopes": scopes})),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

async fn issue_license(app: &TestApp, token: &str) -> reqwest::Response {
    call(
        app,
        Method::POST,
        "/v1/licenses",
        Some(token),
        Some(json!({"owner": "acme", "tier": "pro"})),
    )
    .await
}

async fn count(
    app: &TestApp,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    app.pool
        .get()
        .await
        .unwrap()
        .query_one(sql, params)
        .await
        .unwrap()
        .get(0)
}

async fn api_key_events(app: &TestApp) -> i64 {
    count(
        app,
        "SELECT count(*) FROM events WHERE stream_id LIKE 'api_key-%'",
        &[],
    )
    .await
}

/// Creates a user through the same command the CLI runs, and logs them in.
async fn user_access_token(app: &TestApp, email: &str, role: Role) -> String {
    create_user(&app.database.url, email, role).await;
    let response = call(
        app,
        Method::POST,
        "/v1/auth/login",
        None,
        Some(json!({"email": email, "password": PASSWORD})),
    )
    .await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    tokens["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_key_with_licenses_write_issues_a_license_recorded_as_the_key() {
    let app = spawn_app().await;
    let created = create_key(&app, ADMIN_TOKEN, "ci", &["licenses:write"]).await;
    let key = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(key.starts_with("klk_"), "{key}");
    assert!(key.len() >= 4 + 43, "{key}");
    assert_eq!(created["prefix"], key[..12]);
    assert_eq!(created["name"], "ci");
    assert_eq!(created["scopes"], json!(["licenses:write"]));

    let response = issue_license(&app, key).await;
    assert_eq!(response.status(), 201);
    let issued: Value = response.json().await.unwrap();
    let stream = format!("license-{}", issued["license_id"].as_str().unwrap());
    assert_eq!(app.actors(&stream).await, [format!("api_key:{id}")]);

    let me: Value = call(&app, Method::GET, "/v1/auth/me", Some(key), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["kind"], "api_key");
    assert_eq!(me["sub"], id);
}

#[tokio::test]
async fn a_key_without_the_scope_is_forbidden_naming_the_permission_and_writes_nothing() {
    let app = spawn_app().await;
    let created = create_key(&app, ADMIN_TOKEN, "llm-service", &["requests:write"]).await;
    let before = app.event_count().await;

    let refused = problem(
        issue_license(&app, created["key"].as_str().unwrap()).await,
        403,
    )
    .await;
    assert_eq!(refused["code"], "AUTH_FORBIDDEN");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("licenses:write"),
        "{refused}"
    );
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn a_revoked_or_unknown_key_is_refused_with_401_and_revoking_again_changes_nothing() {
    let app = spawn_app().await;
    let created = create_key(&app, ADMIN_TOKEN, "ci", &["licenses:write"]).await;
    let (key, id) = (
        created["key"].as_str().unwrap(),
        created["id"].as_str().unwrap(),
    );
    assert_eq!(issue_license(&app, key).await.status(), 201);

    let path = format!("/v1/api-keys/{id}");
    let revoked = call(&app, Method::DELETE, &path, Some(ADMIN_TOKEN), None).await;
    assert_eq!(revoked.status(), 204);
    let response = issue_license(&app, key).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="keyledger", error="invalid_token""#
    );
    assert_eq!(problem(response, 401).await["code"], "AUTH_INVALID_TOKEN");

    let again = call(&app, Method::DELETE, &path, Some(ADMIN_TOKEN), None).await;
    assert_eq!(again.status(), 204);
    let revocations = count(
        &app,
        "SELECT count(*) FROM events WHERE event_type = 'ApiKeyRevoked' AND metadata->>'actor' = 'admin_token'",
        &[],
    )
    .await;
    assert_eq!(revocations, 1);
    let shown: Value = call(&app, Method::GET, &path, Some(ADMIN_TOKEN), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(shown["revoked_at"].is_string(), "{shown}");

    let unknown = format!("/v1/api-keys/{}", uuid::Uuid::new_v4());
    for method in [Method::DELETE, Method::GET] {
        let missing = problem(
            call(&app, method, &unknown, Some(ADMIN_TOKEN), None).await,
            404,
        )
        .await;
        assert_eq!(missing["code"], "RES_API_KEY_NOT_FOUND");
    }
    let never_created = keyledger_api::api_key::ApiKeySecret::generate().unwrap();
    let response = issue_license(&app, never_created.expose()).await;
    assert_eq!(problem(response, 401).await["code"], "AUTH_INVALID_TOKEN");
    let malformed = issue_license(&app, "klk_not-a-key").await;
    assert_eq!(problem(malformed, 401).await["code"], "AUTH_INVALID_TOKEN");
}

async fn listing(app: &TestApp) -> String {
    let response = call(app, Method::GET, "/v1/api-keys", Some(ADMIN_TOKEN), None).await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn the_listing_shows_prefix_and_last_use_but_never_the_key_or_its_hash() {
    let app = spawn_app().await;
    let created = create_key(&app, ADMIN_TOKEN, "llm-service", &["requests:write"]).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let id = created["id"].as_str().unwrap().to_owned();
    let text = listing(&app).await;
    let page: Value = serde_json::from_str(&text).unwrap();
    let [shown] = page["api_keys"].as_array().unwrap().as_slice() else {
        panic!("{page}");
    };
    assert_eq!(shown["id"], id);
    assert_eq!(shown["name"], "llm-service");
    assert_eq!(shown["prefix"], key[..12]);
    assert_eq!(shown["scopes"], json!(["requests:write"]));
    assert_eq!(shown["created_by"], "admin_token");
    assert!(shown["created_at"].is_string());
    assert!(shown["revoked_at"].is_null());
    assert!(shown["last_used_at"].is_null(), "unused so far: {shown}");

    let me = call(&app, Method::GET, "/v1/auth/me", Some(&key), None).await;
    assert_eq!(me.status(), 200);
    let used = eventually(Duration::from_secs(10), "the key's last use", || async {
        let text = listing(&app).await;
        let page: Value = serde_json::from_str(&text).unwrap();
        page["api_keys"][0]["last_used_at"]
            .is_string()
            .then_some(text)
    })
    .await;
    for listing in [text, used] {
        assert!(!listing.contains(&key), "the key is listed");
        assert!(!listing.contains(&key[12..]), "the key's body is listed");
        assert!(!listing.contains(&hash), "the hash is listed");
    }
    let one = call(
        &app,
        Method::GET,
        &format!("/v1/api-keys/{id}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(one.contains("last_used_at") && !one.contains(&hash) && !one.contains(&key));
}

#[tokio::test]
async fn the_key_is_in_no_event_and_not_in_the_request_log() {
    let app = spawn_app().await;
    let created = create_key(&app, ADMIN_TOKEN, "ci", &["licenses:write"]).await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert_eq!(issue_license(&app, &key).await.status(), 201);

    // The creation's and the key's requests have reached the request log.
    eventually(
        Duration::from_secs(10),
        "the requests in the request log",
        || async {
            let recorded = count(
                &app,
                "SELECT count(*) FROM api_requests WHERE path IN ('/v1/api-keys', '/v1/licenses')",
                &[],
            )
            .await;
            (recorded == 2).then_some(())
        },
    )
    .await;
    let body = &key[4..];
    let in_events = count(
        &app,
        "SELECT count(*) FROM events WHERE data::text LIKE '%'||$1||'%' \
             OR metadata::text LIKE '%'||$1||'%'",
        &[&body],
    )
    .await;
    assert_eq!(in_events, 0, "the key is in the event log");
    let in_request_log = count(
        &app,
        "SELECT count(*) FROM api_requests WHERE concat_ws(' ', path, query, caller, \
             request_body, response_body) LIKE '%'||$1||'%'",
        &[&body],
    )
    .await;
    assert_eq!(in_request_log, 0, "the key is in the request log");
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let with_hash = count(
        &app,
        "SELECT count(*) FROM events WHERE event_type = 'ApiKeyCreated' AND data->>'key_hash' = $1",
        &[&hash],
    )
    .await;
    assert_eq!(with_hash, 1, "the log holds the key's hash");
}

#[tokio::test]
async fn bad_names_and_scopes_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"name": "", "scopes": ["licenses:read"]}), "name"),
        (json!({"name": "   ", "scopes": ["licenses:read"]}), "name"),
        (
            json!({"name": "n".repeat(101), "scopes": ["licenses:read"]}),
            "name",
        ),
        (
            json!({"name": "line\nbreak", "scopes": ["licenses:read"]}),
            "name",
        ),
        (json!({"name": "ci", "scopes": []}), "scopes"),
        (
            json!({"name": "ci", "scopes": ["licenses:read", "licenses:*"]}),
            "licenses:*",
        ),
        (json!({"name": "ci", "scopes": ["admin"]}), "admin"),
    ] {
        let response = call(
            &app,
            Method::POST,
            "/v1/api-keys",
            Some(ADMIN_TOKEN),
            Some(body.clone()),
        )
        .await;
        let refused = problem(response, 422).await;
        assert_eq!(refused["code"], "VAL_INVALID_FIELD", "{body}");
        assert!(
            refused["detail"].as_str().unwrap().contains(field),
            "{body}: {refused}"
        );
    }
    let no_scopes = call(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(ADMIN_TOKEN),
        Some(json!({"name": "ci"})),
    )
    .await;
    assert_eq!(problem(no_scopes, 422).await["code"], "VAL_INVALID_BODY");
    assert_eq!(api_key_events(&app).await, 0);

    let deduplicated = create_key(
        &app,
        ADMIN_TOKEN,
        "  ci  ",
        &["requests:write", "licenses:read", "requests:write"],
    )
    .await;
    assert_eq!(deduplicated["name"], "ci");
    assert_eq!(
        deduplicated["scopes"],
        json!(["licenses:read", "requests:write"])
    );
}

#[tokio::test]
async fn only_a_caller_with_api_keys_manage_manages_keys_and_grants_only_what_it_holds() {
    let app = spawn_app().await;
    let body = json!({"name": "ci", "scopes": ["licenses:read"]});
    for (email, role) in [
        ("viewer@example.com", Role::Viewer),
        ("operator@example.com", Role::Operator),
    ] {
        let token = user_access_token(&app, email, role).await;
        for (method, body) in [(Method::POST, Some(body.clone())), (Method::GET, None)] {
            let refused = problem(
                call(&app, method, "/v1/api-keys", Some(&token), body).await,
                403,
            )
            .await;
            assert_eq!(refused["code"], "AUTH_FORBIDDEN");
            assert!(
                refused["detail"]
                    .as_str()
                    .unwrap()
                    .contains("api_keys:manage")
            );
        }
    }
    let anonymous = call(&app, Method::POST, "/v1/api-keys", None, Some(body.clone())).await;
    assert_eq!(
        problem(anonymous, 401).await["code"],
        "AUTH_MISSING_CREDENTIALS"
    );
    assert_eq!(api_key_events(&app).await, 0);

    let admin = user_access_token(&app, "admin@example.com", Role::Admin).await;
    let created = create_key(&app, &admin, "key admin", &["api_keys:manage"]).await;
    let created_by: Value = call(
        &app,
        Method::GET,
        &format!("/v1/api-keys/{}", created["id"].as_str().unwrap()),
        Some(created["key"].as_str().unwrap()),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(
        created_by["created_by"]
            .as_str()
            .unwrap()
            .starts_with("user:")
    );
    let escalation = call(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(created["key"].as_str().unwrap()),
        Some(json!({"name": "more", "scopes": ["licenses:write"]})),
    )
    .await;
    let refused = problem(escalation, 403).await;
    assert_eq!(refused["code"], "AUTH_FORBIDDEN");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("licenses:write")
    );
    assert_eq!(api_key_events(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_on_the_command_line_works_until_revoked_there() {
    let app = spawn_app().await;
    // The CLI runs while the service goes on serving: the test waits for the child without
    // blocking the runtime.
    let run = async |args: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
            .args(args)
            .env("DATABASE_URL", &app.database.url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap()
    };
    let refused = run(&[
        "api-keys",
        "create",
        "--name",
        "ci",
        "--scope",
        "licenses:*",
    ])
    .await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("licenses:*"));
    assert_eq!(api_key_events(&app).await, 0);

    let created = run(&[
        "api-keys",
        "create",
        "--name",
        "ci",
        "--scope",
        "licenses:write",
        "--scope",
        "licenses:read",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(created.status.success(), "{stderr}");
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("klk_"), "{key}");
    assert!(
        stderr.contains(&key[..12]) && !stderr.contains(&key),
        "{stderr}"
    );
    let response = issue_license(&app, &key).await;
    assert_eq!(response.status(), 201);

    let page: Value = serde_json::from_str(&listing(&app).await).unwrap();
    let shown = &page["api_keys"][0];
    assert_eq!(shown["scopes"], json!(["licenses:read", "licenses:write"]));
    assert_eq!(shown["created_by"], "system");
    let id = shown["id"].as_str().unwrap();
    let revoked = run(&["api-keys", "revoke", "--id", id]).await;
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let refused = issue_license(&app, &key).await;
    assert_eq!(problem(refused, 401).await["code"], "AUTH_INVALID_TOKEN");
}
