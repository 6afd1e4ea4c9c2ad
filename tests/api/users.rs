//! Managing users over the API: creating users of each role, who may do it, role changes,
//! disabling and enabling, revoking a user's tokens, password changes (an admin's and the
//! user's own), the last admin, and bodies refused with nothing written.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, PASSWORD, TestApp, problem, spawn_app};

const NEW_PASSWORD: &str = "a different horse entirely";

/// A call as the bearer of `token`, with a JSON body if one is given.
async fn call(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let request = app.http.request(method, app.url(path)).bearer_auth(token);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.unwrap()
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> reqwest::Response {
    call(app, token, Method::POST, path, Some(body)).await
}

/// A POST without a body (disable, enable, revoke-tokens).
async fn act(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    call(app, token, Method::POST, path, None).await
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    call(app, token, Method::GET, path, None).await
}

/// Creates a user as the bearer of `token`; the 201 body.
async fn create(app: &TestApp, token: &str, email: &str, role: &str) -> Value {
    let response = post(
        app,
        token,
        "/v1/users",
        json!({"email": email, "password": PASSWORD, "role": role}),
    )
    .await;
    assert_eq!(response.status(), 201, "creating {email}");
    response.json().await.unwrap()
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post(
        "/v1/auth/login",
        &json!({"email": email, "password": password}),
    )
    .await
}

/// Logs in; the tokens.
async fn logged_in(app: &TestApp, email: &str, password: &str) -> Value {
    let response = login(app, email, password).await;
    assert_eq!(response.status(), 200, "logging in as {email}");
    response.json().await.unwrap()
}

fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

async fn refresh(app: &TestApp, tokens: &Value) -> reqwest::Response {
    app.post(
        "/v1/auth/refresh",
        &json!({"refresh_token": tokens["refresh_token"]}),
    )
    .await
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    get(app, token, "/v1/auth/me").await
}

fn id(user: &Value) -> &str {
    user["id"].as_str().unwrap()
}

/// The actors and reasons of the events of a type, in order.
async fn events(app: &TestApp, event_type: &str) -> Vec<(String, Value)> {
    let client = app.pool.get().await.unwrap();
    client
        .query(
            "SELECT metadata->>'actor', data::text FROM events WHERE event_type = $1 \
             ORDER BY position",
            &[&event_type],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (
                row.get(0),
                serde_json::from_str(row.get::<_, &str>(1)).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_bootstrap_admin_creates_users_of_each_role_who_log_in_with_that_role() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for role in ["admin", "operator", "auditor", "viewer"] {
        let email = format!("  {}@Example.com ", role.to_uppercase());
        let response = post(
            &app,
            ADMIN_TOKEN,
            "/v1/users",
            json!({"email": email, "password": PASSWORD, "role": role}),
        )
        .await;
        assert_eq!(response.status(), 201);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let user: Value = response.json().await.unwrap();
        assert_eq!(location, format!("/v1/users/{}", id(&user)));
        assert_eq!(user["email"], format!("{role}@example.com"));
        assert_eq!(user["role"], role);
        assert_eq!(user["disabled"], false);
        assert!(user["created_at"].is_string());
        assert!(user.get("password_hash").is_none() && user.get("password").is_none());
        created.push(user);
    }

    let list = get(&app, ADMIN_TOKEN, "/v1/users").await;
    assert_eq!(list.status(), 200);
    let list = list.text().await.unwrap();
    assert!(
        !list.contains("argon2") && !list.contains("password"),
        "{list}"
    );
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["items"].as_array().unwrap(), &created);
    for user in &created {
        let shown: Value = get(&app, ADMIN_TOKEN, &format!("/v1/users/{}", id(user)))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(&shown, user);
        let email = user["email"].as_str().unwrap();
        let tokens = logged_in(&app, email, PASSWORD).await;
        let who: Value = me(&app, access(&tokens)).await.json().await.unwrap();
        assert_eq!(who["role"], user["role"]);
    }
    let actors: Vec<String> = events(&app, "UserCreated")
        .await
        .into_iter()
        .map(|(actor, _)| actor)
        .collect();
    assert_eq!(actors, vec!["admin_token"; 4]);

    let again = post(
        &app,
        ADMIN_TOKEN,
        "/v1/users",
        json!({"email": "Viewer@example.COM", "password": PASSWORD, "role": "admin"}),
    )
    .await;
    assert_eq!(problem(again, 409).await["code"], "BIZ_USER_EXISTS");
    let unknown = get(
        &app,
        ADMIN_TOKEN,
        "/v1/users/00000000-0000-4000-8000-000000000000",
    )
    .await;
    assert_eq!(problem(unknown, 404).await["code"], "RES_USER_NOT_FOUND");
}

#[tokio::test]
async fn an_operator_may_neither_create_nor_list_users() {
    let app = spawn_app().await;
    create(&app, ADMIN_TOKEN, "ops@example.com", "operator").await;
    let tokens = logged_in(&app, "ops@example.com", PASSWORD).await;
    let before = app.event_count().await;

    let refused = post(
        &app,
        access(&tokens),
        "/v1/users",
        json!({"email": "new@example.com", "password": PASSWORD, "role": "admin"}),
    )
    .await;
    let body = problem(refused, 403).await;
    assert_eq!(body["code"], "AUTH_FORBIDDEN");
    assert!(
        body["detail"].as_str().unwrap().contains("users:manage"),
        "{body}"
    );
    let listing = get(&app, access(&tokens), "/v1/users").await;
    assert_eq!(problem(listing, 403).await["code"], "AUTH_FORBIDDEN");
    assert_eq!(app.event_count().await, before);
    assert_eq!(
        login(&app, "new@example.com", PASSWORD).await.status(),
        401,
        "no user was created"
    );
}

#[tokio::test]
async fn a_role_change_takes_effect_on_the_next_request_with_the_same_token() {
    let app = spawn_app().await;
    let user = create(&app, ADMIN_TOKEN, "viewer@example.com", "viewer").await;
    let tokens = logged_in(&app, "viewer@example.com", PASSWORD).await;
    let issue = |token: String| {
        let app = &app;
        async move {
            post(
                app,
                &token,
                "/v1/licenses",
                json!({"owner": "acme", "tier": "pro"}),
            )
            .await
            .status()
        }
    };
    assert_eq!(issue(access(&tokens).to_owned()).await, 403);

    let path = format!("/v1/users/{}/role", id(&user));
    let changed = post(&app, ADMIN_TOKEN, &path, json!({"role": "operator"})).await;
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["role"], "operator");
    assert_eq!(issue(access(&tokens).to_owned()).await, 201);
    let who: Value = me(&app, access(&tokens)).await.json().await.unwrap();
    assert_eq!(who["role"], "operator");

    let back = post(&app, ADMIN_TOKEN, &path, json!({"role": "viewer"})).await;
    assert_eq!(back.status(), 200);
    assert_eq!(issue(access(&tokens).to_owned()).await, 403);
    let recorded = events(&app, "UserRoleChanged").await;
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].0, "admin_token");
    assert_eq!(
        (&recorded[0].1["from"], &recorded[0].1["to"]),
        (&json!("viewer"), &json!("operator"))
    );
}

#[tokio::test]
async fn a_disabled_user_is_refused_at_once_cannot_refresh_and_comes_back_only_by_a_new_login() {
    let app = spawn_app().await;
    let user = create(&app, ADMIN_TOKEN, "aud@example.com", "auditor").await;
    let tokens = logged_in(&app, "aud@example.com", PASSWORD).await;
    assert_eq!(me(&app, access(&tokens)).await.status(), 200);

    let disabled = act(
        &app,
        ADMIN_TOKEN,
        &format!("/v1/users/{}/disable", id(&user)),
    )
    .await;
    assert_eq!(disabled.status(), 200);
    assert_eq!(disabled.json::<Value>().await.unwrap()["disabled"], true);
    let refused = problem(me(&app, access(&tokens)).await, 401).await;
    assert_eq!(refused["code"], "AUTH_INVALID_TOKEN");
    assert_eq!(refresh(&app, &tokens).await.status(), 401);
    assert_eq!(login(&app, "aud@example.com", PASSWORD).await.status(), 401);
    let revoked = events(&app, "RefreshFamilyRevoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].1["reason"], "user_disabled");
    assert_eq!(revoked[0].0, "admin_token");

    let enabled = act(
        &app,
        ADMIN_TOKEN,
        &format!("/v1/users/{}/enable", id(&user)),
    )
    .await;
    assert_eq!(enabled.status(), 200);
    assert_eq!(enabled.json::<Value>().await.unwrap()["disabled"], false);
    assert_eq!(events(&app, "UserEnabled").await.len(), 1);
    assert_eq!(
        me(&app, access(&tokens)).await.status(),
        401,
        "enabling revives no old token"
    );
    assert_eq!(refresh(&app, &tokens).await.status(), 401);
    let again = logged_in(&app, "aud@example.com", PASSWORD).await;
    assert_eq!(me(&app, access(&again)).await.status(), 200);
}

#[tokio::test]
async fn revoking_a_users_tokens_ends_their_access_tokens_and_every_login() {
    let app = spawn_app().await;
    let user = create(&app, ADMIN_TOKEN, "ops@example.com", "operator").await;
    let first = logged_in(&app, "ops@example.com", PASSWORD).await;
    let second = logged_in(&app, "ops@example.com", PASSWORD).await;
    create(&app, ADMIN_TOKEN, "other@example.com", "operator").await;
    let others = logged_in(&app, "other@example.com", PASSWORD).await;

    let response = act(
        &app,
        ADMIN_TOKEN,
        &format!("/v1/users/{}/revoke-tokens", id(&user)),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["revoked_logins"], 2);

    for tokens in [&first, &second] {
        let refused = problem(me(&app, access(tokens)).await, 401).await;
        assert_eq!(refused["code"], "AUTH_INVALID_TOKEN");
        assert_eq!(refresh(&app, tokens).await.status(), 401);
    }
    let revoked = events(&app, "RefreshFamilyRevoked").await;
    assert_eq!(revoked.len(), 2, "one event per login");
    assert!(
        revoked
            .iter()
            .all(|(actor, data)| actor == "admin_token" && data["reason"] == "admin")
    );
    assert_eq!(events(&app, "UserTokensRevoked").await.len(), 1);

    // Another user is untouched; a new login of the user works at once.
    assert_eq!(me(&app, access(&others)).await.status(), 200);
    assert_eq!(refresh(&app, &others).await.status(), 200);
    let fresh = logged_in(&app, "ops@example.com", PASSWORD).await;
    assert_eq!(me(&app, access(&fresh)).await.status(), 200);
    assert_eq!(refresh(&app, &fresh).await.status(), 200);
}

#[tokio::test]
async fn after_an_admin_sets_a_password_the_old_one_and_the_old_tokens_no_longer_work() {
    let app = spawn_app().await;
    let user = create(&app, ADMIN_TOKEN, "ops@example.com", "operator").await;
    let tokens = logged_in(&app, "ops@example.com", PASSWORD).await;

    let path = format!("/v1/users/{}/password", id(&user));
    let set = post(&app, ADMIN_TOKEN, &path, json!({"password": NEW_PASSWORD})).await;
    assert_eq!(set.status(), 204);
    assert_eq!(login(&app, "ops@example.com", PASSWORD).await.status(), 401);
    assert_eq!(me(&app, access(&tokens)).await.status(), 401);
    assert_eq!(refresh(&app, &tokens).await.status(), 401);
    let revoked = events(&app, "RefreshFamilyRevoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].1["reason"], "password_changed");
    let changed = events(&app, "UserPasswordChanged").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].0, "admin_token");
    assert!(
        changed[0].1["password_hash"]
            .as_str()
            .unwrap()
            .starts_with("$argon2id$")
    );

    let fresh = logged_in(&app, "ops@example.com", NEW_PASSWORD).await;
    assert_eq!(me(&app, access(&fresh)).await.status(), 200);
}

#[tokio::test]
async fn a_user_changes_their_own_password_only_with_the_current_one() {
    let app = spawn_app().await;
    let user = create(&app, ADMIN_TOKEN, "view@example.com", "viewer").await;
    let tokens = logged_in(&app, "view@example.com", PASSWORD).await;
    let before = app.event_count().await;

    let wrong = post(
        &app,
        access(&tokens),
        "/v1/auth/password",
        json!({"current_password": "not the password", "new_password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(problem(wrong, 403).await["code"], "AUTH_WRONG_PASSWORD");
    let short = post(
        &app,
        access(&tokens),
        "/v1/auth/password",
        json!({"current_password": PASSWORD, "new_password": "short"}),
    )
    .await;
    let short = problem(short, 422).await;
    assert_eq!(short["code"], "VAL_INVALID_FIELD");
    assert!(
        short["detail"]
            .as_str()
            .unwrap()
            .starts_with("new_password")
    );
    let bootstrap = post(
        &app,
        ADMIN_TOKEN,
        "/v1/auth/password",
        json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(problem(bootstrap, 403).await["code"], "AUTH_FORBIDDEN");
    let anonymous = app
        .anonymous
        .post(app.url("/v1/auth/password"))
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(anonymous, 401).await["code"],
        "AUTH_MISSING_CREDENTIALS"
    );
    assert_eq!(app.event_count().await, before, "nothing written");

    let changed = post(
        &app,
        access(&tokens),
        "/v1/auth/password",
        json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(changed.status(), 204);
    assert_eq!(
        login(&app, "view@example.com", PASSWORD).await.status(),
        401
    );
    assert_eq!(me(&app, access(&tokens)).await.status(), 401);
    let fresh = logged_in(&app, "view@example.com", NEW_PASSWORD).await;
    assert_eq!(me(&app, access(&fresh)).await.status(), 200);
    let recorded = events(&app, "UserPasswordChanged").await;
    assert_eq!(recorded[0].0, format!("user:{}", id(&user)));
}

#[tokio::test]
async fn the_last_enabled_admin_can_be_neither_disabled_nor_demoted() {
    let app = spawn_app().await;
    let first = create(&app, ADMIN_TOKEN, "first@example.com", "admin").await;
    let tokens = logged_in(&app, "first@example.com", PASSWORD).await;
    let before = app.event_count().await;

    let disable_self = act(
        &app,
        access(&tokens),
        &format!("/v1/users/{}/disable", id(&first)),
    )
    .await;
    assert_eq!(problem(disable_self, 409).await["code"], "BIZ_LAST_ADMIN");
    let demote_self = post(
        &app,
        access(&tokens),
        &format!("/v1/users/{}/role", id(&first)),
        json!({"role": "operator"}),
    )
    .await;
    assert_eq!(problem(demote_self, 409).await["code"], "BIZ_LAST_ADMIN");
    assert_eq!(app.event_count().await, before, "nothing written");
    assert_eq!(me(&app, access(&tokens)).await.status(), 200);

    // With a second admin, the first may step down; the second is then the last.
    let second = create(&app, access(&tokens), "second@example.com", "admin").await;
    let created = events(&app, "UserCreated").await;
    assert_eq!(created[1].0, format!("user:{}", id(&first)));
    let step_down = post(
        &app,
        access(&tokens),
        &format!("/v1/users/{}/role", id(&first)),
        json!({"role": "auditor"}),
    )
    .await;
    assert_eq!(step_down.status(), 200);
    let disable_second = act(
        &app,
        ADMIN_TOKEN,
        &format!("/v1/users/{}/disable", id(&second)),
    )
    .await;
    assert_eq!(problem(disable_second, 409).await["code"], "BIZ_LAST_ADMIN");
}

#[tokio::test]
async fn bad_bodies_are_refused_with_422_and_write_nothing() {
    let app = spawn_app().await;
    let user = create(&app, ADMIN_TOKEN, "ops@example.com", "operator").await;
    let before = app.event_count().await;

    let long = "x".repeat(257);
    for body in [
        json!({"email": "new@example.com", "password": "short", "role": "viewer"}),
        json!({"email": "new@example.com", "password": long, "role": "viewer"}),
        json!({"email": "not an email", "password": PASSWORD, "role": "viewer"}),
        json!({"email": "new@example", "password": PASSWORD, "role": "viewer"}),
        json!({"email": "new@example.com", "password": PASSWORD, "role": "root"}),
        json!({"email": "new@example.com", "password": PASSWORD, "role": 1}),
        json!({"email": "new@example.com", "password": PASSWORD}),
        json!({"email": "new@example.com", "password": PASSWORD, "role": "viewer", "x": 1}),
    ] {
        let response = post(&app, ADMIN_TOKEN, "/v1/users", body.clone()).await;
        let refused = problem(response, 422).await;
        let code = refused["code"].as_str().unwrap();
        assert!(
            code == "VAL_INVALID_FIELD" || code == "VAL_INVALID_BODY",
            "{body}: {refused}"
        );
    }
    let role_path = format!("/v1/users/{}/role", id(&user));
    for body in [
        json!({"role": "superuser"}),
        json!({}),
        json!({"role": null}),
    ] {
        let response = post(&app, ADMIN_TOKEN, &role_path, body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
    }
    let password_path = format!("/v1/users/{}/password", id(&user));
    for body in [
        json!({"password": "1234567"}),
        json!({"password": long}),
        json!({"pass": PASSWORD}),
    ] {
        let response = post(&app, ADMIN_TOKEN, &password_path, body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
    }
    assert_eq!(app.event_count().await, before, "nothing written");
    assert_eq!(login(&app, "new@example.com", PASSWORD).await.status(), 401);
    assert_eq!(
        logged_in(&app, "ops@example.com", PASSWORD).await["token_type"],
        "Bearer"
    );
}
