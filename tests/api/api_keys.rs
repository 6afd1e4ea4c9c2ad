//! API keys: created once by an admin, used as bearer tokens with their scopes as permissions,
//! revoked for good; listed with their prefix and last use, stored nowhere but as a hash.

use std::process::Stdio;
use std::time::Duration;

use keyledger_api::Role;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{
    ADMIN_TOKEN, ApiKey, ApiKeyList, Issued, NewApiKey, NewLicense, TestApp, create_user,
    eventually, expect, problem, spawn_app,
};

/// Creates a key as the bearer of `token`; the answer, which no cache may keep.
async fn create_key(app: &TestApp, token: &str, name: &str, scopes: &[&str]) -> NewApiKey {
    let response = app
        .as_bearer(token)
        .api_keys()
        .try_create(name, scopes)
        .await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    expect(response, 201, "creating an API key").await
}

/// Issues a license as the bearer of `token`.
async fn issue_license(app: &TestApp, token: &str) -> reqwest::Response {
    app.as_bearer(token)
        .licenses()
        .try_issue(&NewLicense::new("acme", "pro"))
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
    app.anonymous().auth().login(email).await.access_token
}

#[tokio::test]
async fn a_key_with_licenses_write_issues_a_license_recorded_as_the_key() {
    let app = spawn_app().await;
    let created = create_key(&app, ADMIN_TOKEN, "ci", &["licenses:write"]).await;
    let (key, id) = (created.key.as_str(), created.id);
    assert!(key.starts_with("klk_"), "{key}");
    assert!(key.len() >= 4 + 43, "{key}");
    assert_eq!(created.prefix, key[..12]);
    assert_eq!(created.name, "ci");
    assert_eq!(created.scopes, ["licenses:write"]);

    let issued: Issued = expect(issue_license(&app, key).await, 201, "issuing").await;
    let stream = format!("license-{}", issued.license_id);
    assert_eq!(app.actors(&stream).await, [format!("api_key:{id}")]);

    let me = app.as_bearer(key).auth().me().await;
    assert_eq!(me.kind, "api_key");
    assert_eq!(me.sub, Some(id.to_string()));
}

#[tokio::test]
async fn a_key_without_the_scope_is_forbidden_naming_the_permission_and_writes_nothing() {
    let app = spawn_app().await;
    let created = create_key(&app, ADMIN_TOKEN, "llm-service", &["requests:write"]).await;
    let before = app.event_count().await;

    let refused = problem(issue_license(&app, &created.key).await, 403).await;
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
    let keys = app.as_bearer(ADMIN_TOKEN).api_keys();
    let created = create_key(&app, ADMIN_TOKEN, "ci", &["licenses:write"]).await;
    let (key, id) = (created.key.as_str(), created.id);
    assert_eq!(issue_license(&app, key).await.status(), 201);

    let revoked = keys.try_revoke(id).await;
    assert_eq!(revoked.status(), 204);
    let response = issue_license(&app, key).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="keyledger", error="invalid_token""#
    );
    assert_eq!(problem(response, 401).await["code"], "AUTH_INVALID_TOKEN");

    let again = keys.try_revoke(id).await;
    assert_eq!(again.status(), 204);
    let revocations = count(
        &app,
        "SELECT count(*) FROM events WHERE event_type = 'ApiKeyRevoked' AND metadata->>'actor' = 'admin_token'",
        &[],
    )
    .await;
    assert_eq!(revocations, 1);
    let shown = keys.get(id).await;
    assert!(shown.revoked_at.is_some(), "{shown:?}");

    let unknown = uuid::Uuid::new_v4();
    for missing in [keys.try_revoke(unknown).await, keys.try_get(unknown).await] {
        let missing = problem(missing, 404).await;
        assert_eq!(missing["code"], "RES_API_KEY_NOT_FOUND");
    }
    let never_created = keyledger_api::api_key::ApiKeySecret::generate().unwrap();
    let response = issue_license(&app, never_created.expose()).await;
    assert_eq!(problem(response, 401).await["code"], "AUTH_INVALID_TOKEN");
    let malformed = issue_license(&app, "klk_not-a-key").await;
    assert_eq!(problem(malformed, 401).await["code"], "AUTH_INVALID_TOKEN");
}

/// The listing's text, as the bootstrap admin reads it.
async fn listing(app: &TestApp) -> String {
    let response = app.as_bearer(ADMIN_TOKEN).api_keys().try_list().await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn the_listing_shows_prefix_and_last_use_but_never_the_key_or_its_hash() {
    let app = spawn_app().await;
    let created = create_key(&app, ADMIN_TOKEN, "llm-service", &["requests:write"]).await;
    let key = created.key.clone();
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let text = listing(&app).await;
    let page: ApiKeyList = serde_json::from_str(&text).unwrap();
    let [shown] = page.api_keys.as_slice() else {
        panic!("{page:?}");
    };
    assert_eq!(
        shown,
        &ApiKey {
            id: created.id,
            name: "llm-service".into(),
            prefix: key[..12].into(),
            scopes: vec!["requests:write".into()],
            created_by: "admin_token".into(),
            created_at: shown.created_at,
            revoked_at: None,
            last_used_at: None,
        },
        "unused so far"
    );

    app.as_bearer(&key).auth().me().await;
    let used = eventually(Duration::from_secs(10), "the key's last use", || async {
        let text = listing(&app).await;
        let page: ApiKeyList = serde_json::from_str(&text).unwrap();
        page.api_keys[0].last_used_at.is_some().then_some(text)
    })
    .await;
    for listing in [text, used] {
        assert!(!listing.contains(&key), "the key is listed");
        assert!(!listing.contains(&key[12..]), "the key's body is listed");
        assert!(!listing.contains(&hash), "the hash is listed");
    }
    let one = app
        .as_bearer(ADMIN_TOKEN)
        .api_keys()
        .try_get(created.id)
        .await
        .text()
        .await
        .unwrap();
    assert!(one.contains("last_used_at") && !one.contains(&hash) && !one.contains(&key));
}

#[tokio::test]
async fn the_key_is_in_no_event_and_not_in_the_request_log() {
    let app = spawn_app().await;
    let key = create_key(&app, ADMIN_TOKEN, "ci", &["licenses:write"])
        .await
        .key;
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
    let keys = app.api_keys();
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
        let refused = problem(keys.try_create_with(&body).await, 422).await;
        assert_eq!(refused["code"], "VAL_INVALID_FIELD", "{body}");
        assert!(
            refused["detail"].as_str().unwrap().contains(field),
            "{body}: {refused}"
        );
    }
    let no_scopes = keys.try_create_with(&json!({"name": "ci"})).await;
    assert_eq!(problem(no_scopes, 422).await["code"], "VAL_INVALID_BODY");
    assert_eq!(api_key_events(&app).await, 0);

    let deduplicated = create_key(
        &app,
        ADMIN_TOKEN,
        "  ci  ",
        &["requests:write", "licenses:read", "requests:write"],
    )
    .await;
    assert_eq!(deduplicated.name, "ci");
    assert_eq!(deduplicated.scopes, ["licenses:read", "requests:write"]);
}

#[tokio::test]
async fn only_a_caller_with_api_keys_manage_manages_keys_and_grants_only_what_it_holds() {
    let app = spawn_app().await;
    for (email, role) in [
        ("viewer@example.com", Role::Viewer),
        ("operator@example.com", Role::Operator),
    ] {
        let token = user_access_token(&app, email, role).await;
        let keys = app.as_bearer(&token).api_keys();
        for response in [
            keys.try_create("ci", &["licenses:read"]).await,
            keys.try_list().await,
        ] {
            let refused = problem(response, 403).await;
            assert_eq!(refused["code"], "AUTH_FORBIDDEN");
            assert!(
                refused["detail"]
                    .as_str()
                    .unwrap()
                    .contains("api_keys:manage")
            );
        }
    }
    let anonymous = app
        .anonymous()
        .api_keys()
        .try_create("ci", &["licenses:read"])
        .await;
    assert_eq!(
        problem(anonymous, 401).await["code"],
        "AUTH_MISSING_CREDENTIALS"
    );
    assert_eq!(api_key_events(&app).await, 0);

    let admin = user_access_token(&app, "admin@example.com", Role::Admin).await;
    let created = create_key(&app, &admin, "key admin", &["api_keys:manage"]).await;
    let by_itself = app.as_bearer(&created.key).api_keys();
    let shown = by_itself.get(created.id).await;
    assert!(shown.created_by.starts_with("user:"));
    let escalation = by_itself.try_create("more", &["licenses:write"]).await;
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

    let page: ApiKeyList = serde_json::from_str(&listing(&app).await).unwrap();
    let shown = &page.api_keys[0];
    assert_eq!(shown.scopes, ["licenses:read", "licenses:write"]);
    assert_eq!(shown.created_by, "system");
    let id = shown.id.to_string();
    let revoked = run(&["api-keys", "revoke", "--id", &id]).await;
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let refused = issue_license(&app, &key).await;
    assert_eq!(problem(refused, 401).await["code"], "AUTH_INVALID_TOKEN");
}
