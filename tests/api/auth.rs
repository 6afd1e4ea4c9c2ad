//! Users, login, access and refresh tokens: rotation, reuse detection, logout, disabled users,
//! refused tokens, the published key, the `users` CLI, the actor on events, and no secret in
//! the log, the events or the request log.

use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use keyledger_api::Role;
use keyledger_events::{Notifier, PgEventStore, WriterConfig};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::helpers::{
    Me, NewLicense, PASSWORD, ServiceProcess, TestApp, TestDatabase, Tokens, create_user,
    eventually, problem, spawn_app, spawn_app_with, system,
};

async fn disable_user(database_url: &str, user_id: Uuid) {
    let pool = keyledger_events::db::pool(database_url, 2).unwrap();
    let (store, writer) = PgEventStore::start(
        pool.clone(),
        WriterConfig::default(),
        keyledger_projections::inline(),
        None,
        Notifier::default(),
    );
    keyledger_command::user::disable_user(&store, &pool, user_id, &system(), Utc::now())
        .await
        .unwrap();
    writer.abort();
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.auth().try_login(email, password).await
}

async fn logged_in(app: &TestApp, email: &str) -> Tokens {
    app.auth().login(email).await
}

/// Issues a license as the bearer of `token`; the actor its event records.
async fn actor_of_a_license_issued_with(app: &TestApp, token: &str) -> String {
    let issued = app
        .as_bearer(token)
        .licenses()
        .issue(&NewLicense::new("acme", "pro"))
        .await;
    let stream = format!("license-{}", issued.license_id);
    app.actors(&stream).await.remove(0)
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.auth().try_refresh(token).await
}

async fn me(app: &TestApp, bearer: &str) -> reqwest::Response {
    app.as_bearer(bearer).auth().try_me().await
}

/// The problem without what differs between any two requests.
fn sans_correlation(mut problem: Value) -> Value {
    problem.as_object_mut().unwrap().remove("correlation_id");
    problem
}

async fn family_events(app: &TestApp, event_type: &str) -> Vec<Value> {
    let client = app.pool.get().await.unwrap();
    client
        .query(
            "SELECT data::text FROM events WHERE event_type = $1 ORDER BY position",
            &[&event_type],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| serde_json::from_str(row.get::<_, &str>(0)).unwrap())
        .collect()
}

#[tokio::test]
async fn a_user_who_logs_in_gets_tokens_and_auth_me_names_them() {
    let app = spawn_app().await;
    let user_id = create_user(&app.database.url, "Ops@Example.com", Role::Operator).await;

    let response = login(&app, "ops@example.COM", PASSWORD).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: Tokens = response.json().await.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 900);
    assert!(tokens.refresh_token.starts_with("klr_"));

    let who = app.as_bearer(&tokens.access_token).auth().me().await;
    assert_eq!(
        who,
        Me {
            kind: "user".into(),
            sub: Some(user_id.to_string()),
            role: Some("operator".into()),
            actor: format!("user:{user_id}"),
        }
    );

    let anonymous = app.anonymous().auth().try_me().await;
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        r#"Bearer realm="keyledger""#
    );
    assert_eq!(
        problem(anonymous, 401).await["code"],
        "AUTH_MISSING_CREDENTIALS"
    );
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_identical_problem_and_write_nothing() {
    let app = spawn_app().await;
    create_user(&app.database.url, "ops@example.com", Role::Viewer).await;
    let before = app.event_count().await;

    let wrong_password = problem(
        login(&app, "ops@example.com", "not the password").await,
        401,
    )
    .await;
    let unknown_email = problem(login(&app, "nobody@example.com", PASSWORD).await, 401).await;
    assert_eq!(wrong_password["code"], "AUTH_INVALID_CREDENTIALS");
    assert_eq!(
        sans_correlation(wrong_password),
        sans_correlation(unknown_email)
    );
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn a_refresh_rotates_the_refresh_token_and_gives_a_working_access_token() {
    let app = spawn_app().await;
    create_user(&app.database.url, "ops@example.com", Role::Auditor).await;
    let first = logged_in(&app, "ops@example.com").await;

    let second = app.auth().refresh(&first.refresh_token).await;
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(me(&app, &second.access_token).await.status(), 200);
    // The new token rotates in turn.
    app.auth().refresh(&second.refresh_token).await;

    let rotations = family_events(&app, "RefreshTokenRotated").await;
    assert_eq!(rotations.len(), 2);
    assert_eq!(rotations[0]["new_hash"], rotations[1]["old_hash"]);
}

#[tokio::test]
async fn presenting_a_rotated_refresh_token_revokes_its_family_and_records_the_reuse() {
    let app = spawn_app().await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let first = logged_in(&app, "ops@example.com").await;
    let old = first.refresh_token.as_str();
    let newest = app.auth().refresh(old).await;

    let reused = problem(refresh(&app, old).await, 401).await;
    assert_eq!(reused["code"], "AUTH_REFRESH_REUSED");
    // The newest token of the family is dead too.
    let newest_refused = problem(refresh(&app, &newest.refresh_token).await, 401).await;
    assert_eq!(newest_refused["code"], "AUTH_INVALID_TOKEN");

    let revoked = family_events(&app, "RefreshFamilyRevoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["reason"], "reuse");
    assert_eq!(
        revoked[0]["presented_hash"],
        keyledger_command::auth::token_hash(old)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_refreshes_racing_with_one_token_give_one_new_token_and_one_reuse() {
    let app = spawn_app().await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let first = logged_in(&app, "ops@example.com").await;
    let token = first.refresh_token.as_str();

    let (a, b) = tokio::join!(refresh(&app, token), refresh(&app, token));
    let mut statuses = vec![a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, vec![200, 401]);
    let refused = if a.status() == 401 { a } else { b };
    assert_eq!(problem(refused, 401).await["code"], "AUTH_REFRESH_REUSED");
    assert_eq!(family_events(&app, "RefreshFamilyRevoked").await.len(), 1);
}

#[tokio::test]
async fn after_logout_the_refresh_token_no_longer_works() {
    let app = spawn_app().await;
    create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let tokens = logged_in(&app, "ops@example.com").await;
    let token = tokens.refresh_token.as_str();

    let response = app.auth().try_logout(token).await;
    assert_eq!(response.status(), 204);
    let refused = problem(refresh(&app, token).await, 401).await;
    assert_eq!(refused["code"], "AUTH_INVALID_TOKEN");
    let revoked = family_events(&app, "RefreshFamilyRevoked").await;
    assert_eq!(revoked[0]["reason"], "logout");
}

#[tokio::test]
async fn a_disabled_user_can_neither_log_in_nor_refresh_nor_use_an_access_token() {
    let app = spawn_app().await;
    let user_id = create_user(&app.database.url, "ops@example.com", Role::Admin).await;
    let tokens = logged_in(&app, "ops@example.com").await;
    disable_user(&app.database.url, user_id).await;

    let login_refused = problem(login(&app, "ops@example.com", PASSWORD).await, 401).await;
    assert_eq!(login_refused["code"], "AUTH_INVALID_CREDENTIALS");
    let refresh_refused = problem(refresh(&app, &tokens.refresh_token).await, 401).await;
    assert_eq!(refresh_refused["code"], "AUTH_USER_DISABLED");
    let response = me(&app, &tokens.access_token).await;
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );
    assert_eq!(problem(response, 401).await["code"], "AUTH_INVALID_TOKEN");
    let revoked = family_events(&app, "RefreshFamilyRevoked").await;
    assert_eq!(revoked[0]["reason"], "user_disabled");
}

#[tokio::test]
async fn a_tampered_or_expired_access_token_is_refused_with_a_bearer_challenge() {
    let app = spawn_app().await;
    create_user(&app.database.url, "ops@example.com", Role::Viewer).await;
    let tokens = logged_in(&app, "ops@example.com").await;
    let access = tokens.access_token.as_str();

    // The payload says admin; the signature does not agree.
    let parts: Vec<&str> = access.split('.').collect();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    claims["role"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        engine.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    for bad in [forged.as_str(), "not-a-jwt", ""] {
        let response = me(&app, bad).await;
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer realm="keyledger", error="invalid_token""#
        );
        assert_eq!(problem(response, 401).await["code"], "AUTH_INVALID_TOKEN");
    }

    app.clock.advance(chrono::Duration::minutes(16));
    let response = me(&app, access).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="keyledger", error="invalid_token""#
    );
    assert_eq!(problem(response, 401).await["code"], "AUTH_TOKEN_EXPIRED");
}

#[tokio::test]
async fn the_published_jwks_verifies_an_access_token() {
    let app = spawn_app().await;
    let user_id = create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let tokens = logged_in(&app, "ops@example.com").await;
    let access = tokens.access_token.as_str();

    let set: jsonwebtoken::jwk::JwkSet = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&["keyledger"]);
    let data = jsonwebtoken::decode::<Value>(access, &key, &validation).unwrap();
    assert_eq!(data.claims["sub"], user_id.to_string());
    assert_eq!(data.claims["role"], "operator");
    assert_eq!(
        data.claims["exp"].as_i64().unwrap() - data.claims["iat"].as_i64().unwrap(),
        900
    );
    assert!(data.claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_created_on_the_command_line_can_log_in_until_disabled_there() {
    let app = spawn_app().await;
    // The CLI runs while the service goes on serving (its writer may hold the append lock
    // at any moment): the test waits for the child without blocking the runtime.
    let run = async |args: &[&str], stdin: &str| {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
            .args(args)
            .env("DATABASE_URL", &app.database.url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        child.wait_with_output().await.unwrap()
    };
    let output = run(
        &[
            "users",
            "create",
            "--email",
            "Boss@Example.com",
            "--role",
            "admin",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    let user_id = Uuid::parse_str(printed.trim()).unwrap();

    let tokens = logged_in(&app, "boss@example.com").await;
    let who = app.as_bearer(&tokens.access_token).auth().me().await;
    assert_eq!(who.sub, Some(user_id.to_string()));
    assert_eq!(who.role.as_deref(), Some("admin"));

    let again = run(
        &[
            "users",
            "create",
            "--email",
            "boss@example.com",
            "--role",
            "viewer",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    let short = run(
        &[
            "users",
            "create",
            "--email",
            "x@example.com",
            "--role",
            "viewer",
        ],
        "short\n",
    )
    .await;
    assert!(!short.status.success());

    // The last enabled admin stays, on the command line as over the API.
    let before = app.event_count().await;
    let last = run(&["users", "disable", "--email", "boss@example.com"], "").await;
    assert!(!last.status.success());
    let said = String::from_utf8_lossy(&last.stderr);
    assert!(said.contains("last enabled admin"), "{said}");
    assert_eq!(app.event_count().await, before, "nothing written");
    let second = run(
        &[
            "users",
            "create",
            "--email",
            "second@example.com",
            "--role",
            "admin",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert!(second.status.success());

    let disabled = run(&["users", "disable", "--email", "boss@example.com"], "").await;
    assert!(
        disabled.status.success(),
        "{}",
        String::from_utf8_lossy(&disabled.stderr)
    );
    let refused = problem(login(&app, "boss@example.com", PASSWORD).await, 401).await;
    assert_eq!(refused["code"], "AUTH_INVALID_CREDENTIALS");
}

#[tokio::test]
async fn the_events_of_a_logged_in_users_command_carry_their_actor() {
    let app = spawn_app().await;
    let user_id = create_user(&app.database.url, "ops@example.com", Role::Operator).await;
    let tokens = logged_in(&app, "ops@example.com").await;

    let actor = actor_of_a_license_issued_with(&app, &tokens.access_token).await;
    assert_eq!(actor, format!("user:{user_id}"));
    let client = app.pool.get().await.unwrap();
    // Login itself is recorded as the user's.
    let login_actor: String = client
        .query_one(
            "SELECT metadata->>'actor' FROM events WHERE event_type = 'RefreshFamilyStarted'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(login_actor, format!("user:{user_id}"));
}

#[tokio::test]
async fn the_bootstrap_token_acts_as_an_admin_recorded_as_admin_token() {
    let token = "bootstrap-token-of-at-least-32-characters";
    let app = spawn_app_with(|args| {
        args.admin_token = Some(keyledger_api::principal::AdminToken::parse(token).unwrap());
    })
    .await;
    let who = app.as_bearer(token).auth().me().await;
    assert_eq!(
        who,
        Me {
            kind: "bootstrap".into(),
            sub: None,
            role: Some("admin".into()),
            actor: "admin_token".into(),
        }
    );
    let actor = actor_of_a_license_issued_with(&app, token).await;
    assert_eq!(actor, "admin_token");
    // One character off is just an invalid token.
    let wrong = me(&app, &format!("{token}x")).await;
    assert_eq!(problem(wrong, 401).await["code"], "AUTH_INVALID_TOKEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_appears_in_the_events_the_request_log_or_the_service_log() {
    let database = TestDatabase::create().await;
    let key_file = std::env::temp_dir().join(format!("kl-test-jwt-{}.key", Uuid::new_v4()));
    let service = ServiceProcess::start(
        &database.url,
        &[
            ("RUST_LOG", "debug"),
            ("LOG_FORMAT", "json"),
            ("JWT_KEY_FILE", key_file.to_str().unwrap()),
        ],
    )
    .await;
    create_user(&database.url, "ops@example.com", Role::Operator).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", service.address);

    let tokens: Value = http
        .post(url("/v1/auth/login"))
        .json(&json!({"email": "ops@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let rotated: Value = http
        .post(url("/v1/auth/refresh"))
        .json(&json!({"refresh_token": first_refresh}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    let access = rotated["access_token"].as_str().unwrap().to_owned();
    let response = http
        .post(url("/v1/auth/logout"))
        .json(&json!({"refresh_token": second_refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    // The three requests are in the request log.
    let pool = database.pool();
    let everything = eventually(Duration::from_secs(10), "the request records", || {
        let pool = pool.clone();
        async move {
            let client = pool.get().await.ok()?;
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE event_type = 'ApiRequestRecorded' \
                                              AND data::text LIKE '%/v1/auth/%'), \
                            string_agg(data::text || metadata::text, ' ') \
                     FROM events",
                    &[],
                )
                .await
                .ok()?;
            (row.get::<_, i64>(0) >= 3).then(|| row.get::<_, String>(1))
        }
    })
    .await;
    let client = pool.get().await.unwrap();
    let tables: String = client
        .query_one(
            "SELECT (SELECT string_agg(t::text, ' ') FROM api_requests t) || \
                    (SELECT string_agg(t::text, ' ') FROM users t) || \
                    (SELECT string_agg(t::text, ' ') FROM refresh_tokens t)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let log = service.log_text();
    assert!(
        log.contains("JWT signing key"),
        "the key file is named in the log"
    );
    for secret in [PASSWORD, &first_refresh, &second_refresh, &access] {
        assert!(!everything.contains(secret), "a secret is in the events");
        assert!(!tables.contains(secret), "a secret is in a read table");
        assert!(!log.contains(secret), "a secret is in the service log");
    }
    // The events do hold what they must: the hashes.
    assert!(everything.contains(&keyledger_command::auth::token_hash(&first_refresh)));
    let _ = std::fs::remove_file(key_file);
}

#[tokio::test]
async fn a_login_or_refresh_body_of_the_wrong_shape_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    create_user(&app.database.url, "ops@example.com", Role::Viewer).await;
    let before = app.event_count().await;
    for (path, body) in [
        ("/v1/auth/login", json!({"email": "ops@example.com"})),
        (
            "/v1/auth/login",
            json!({"email": "ops@example.com", "password": PASSWORD, "role": "admin"}),
        ),
        ("/v1/auth/refresh", json!({})),
        ("/v1/auth/logout", json!({"refresh_token": 7})),
    ] {
        let refused = problem(app.api().post(path, &body).await, 422).await;
        assert!(
            refused["code"].as_str().unwrap().starts_with("VAL_"),
            "{path} {body}: {refused}"
        );
    }
    let unknown = problem(refresh(&app, "klr_not-a-token-of-ours").await, 401).await;
    assert_eq!(unknown["code"], "AUTH_INVALID_TOKEN");
    assert_eq!(app.event_count().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_the_account_even_for_the_right_password_and_leave_others_open() {
    let app = spawn_app_with(|args| {
        args.rate_limit_login_failures_per_account = "3/hour".parse().unwrap();
    })
    .await;
    create_user(&app.database.url, "ops@example.com", Role::Admin).await;
    create_user(&app.database.url, "other@example.com", Role::Viewer).await;

    for _ in 0..3 {
        let refused = login(&app, "ops@example.com", "guess").await;
        assert_eq!(refused.status(), 401);
    }
    let locked = login(&app, "ops@example.com", PASSWORD).await;
    assert!(locked.headers().contains_key("retry-after"));
    let locked = problem(locked, 429).await;
    assert_eq!(locked["code"], "RATE_LIMITED");

    // An unknown account is throttled alike, and other accounts still log in.
    for _ in 0..3 {
        login(&app, "nobody@example.com", "guess").await;
    }
    assert_eq!(
        login(&app, "nobody@example.com", "guess").await.status(),
        429
    );
    logged_in(&app, "other@example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_in_user_is_rate_limited_on_a_budget_of_their_own() {
    let app = spawn_app_with(|args| {
        args.rate_limit_reads = "2/min".parse().unwrap();
    })
    .await;
    create_user(&app.database.url, "a@example.com", Role::Viewer).await;
    create_user(&app.database.url, "b@example.com", Role::Viewer).await;
    let token_a = logged_in(&app, "a@example.com").await.access_token;
    let token_b = logged_in(&app, "b@example.com").await.access_token;
    let me = |token: String| {
        let app = &app;
        async move { me(app, &token).await.status() }
    };

    // Same address, three callers: each has its own two reads a minute.
    assert_eq!(me(token_a.clone()).await, 200);
    assert_eq!(me(token_a.clone()).await, 200);
    assert_eq!(me(token_a).await, 429);
    assert_eq!(me(token_b.clone()).await, 200);
    assert_eq!(me(token_b).await, 200);
    assert_eq!(app.get("/v1/licenses").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_belongs_to_the_caller_who_sent_it() {
    let app = spawn_app().await;
    create_user(&app.database.url, "a@example.com", Role::Operator).await;
    create_user(&app.database.url, "b@example.com", Role::Operator).await;
    let issue = |email: &'static str| {
        let app = &app;
        async move {
            let token = logged_in(app, email).await.access_token;
            let response = app
                .as_bearer(&token)
                .idempotency_key("order-42")
                .licenses()
                .try_issue(&NewLicense::new("acme", "pro"))
                .await;
            assert_eq!(response.status(), 201);
            let replayed = response.headers().contains_key("idempotent-replayed");
            let body: Value = response.json().await.unwrap();
            (body["license_id"].as_str().unwrap().to_owned(), replayed)
        }
    };

    let (first, _) = issue("a@example.com").await;
    let (again, replayed) = issue("a@example.com").await;
    assert_eq!((again.as_str(), replayed), (first.as_str(), true));
    let (other, replayed) = issue("b@example.com").await;
    assert_ne!(other, first, "another caller's key is another request");
    assert!(!replayed);
}
