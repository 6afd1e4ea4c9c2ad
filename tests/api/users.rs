//! Managing users over the API: creating users of each role, who may do it, role changes,
//! disabling and enabling, revoking a user's tokens, password changes (an admin's and the
//! user's own), the last admin, and bodies refused with nothing written.

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, NewLicense, PASSWORD, TestApp, Tokens, User, problem, spawn_app,
};

const NEW_PASSWORD: &str = "a different horse entirely";

/// Logs in; the tokens.
async fn logged_in(app: &TestApp, email: &str, password: &str) -> Tokens {
    app.auth().login_with(email, password).await
}

/// The status of `GET /v1/auth/me` with the access token of `tokens`.
async fn me(app: &TestApp, tokens: &Tokens) -> reqwest::StatusCode {
    app.as_bearer(&tokens.access_token)
        .auth()
        .try_me()
        .await
        .status()
}

/// The status of a refresh with the refresh token of `tokens`.
async fn refresh(app: &TestApp, tokens: &Tokens) -> reqwest::StatusCode {
    app.auth().try_refresh(&tokens.refresh_token).await.status()
}

/// The status of a login.
async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::StatusCode {
    app.auth().try_login(email, password).await.status()
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
    let users = app.as_bearer(ADMIN_TOKEN).users();
    let mut created = Vec::new();
    for role in ["admin", "operator", "auditor", "viewer"] {
        let email = format!("  {}@Example.com ", role.to_uppercase());
        let response = users.try_create(&email, PASSWORD, role).await;
        assert_eq!(response.status(), 201);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let user: Value = response.json().await.unwrap();
        assert!(user["created_at"].is_string());
        assert!(user.get("password_hash").is_none() && user.get("password").is_none());
        let user: User = serde_json::from_value(user).unwrap();
        assert_eq!(location, format!("/v1/users/{}", user.id));
        assert_eq!(user.email, format!("{role}@example.com"));
        assert_eq!(user.role, role);
        assert!(!user.disabled);
        created.push(user);
    }

    let list = users.try_list().await;
    assert_eq!(list.status(), 200);
    let list = list.text().await.unwrap();
    assert!(
        !list.contains("argon2") && !list.contains("password"),
        "{list}"
    );
    let list: crate::helpers::UserList = serde_json::from_str(&list).unwrap();
    assert_eq!(list.items, created);
    for user in &created {
        assert_eq!(&users.get(user.id).await, user);
        let tokens = logged_in(&app, &user.email, PASSWORD).await;
        let who = app.as_bearer(&tokens.access_token).auth().me().await;
        assert_eq!(who.role.as_ref(), Some(&user.role));
    }
    let actors: Vec<String> = events(&app, "UserCreated")
        .await
        .into_iter()
        .map(|(actor, _)| actor)
        .collect();
    assert_eq!(actors, vec!["admin_token"; 4]);

    let again = users
        .try_create("Viewer@example.COM", PASSWORD, "admin")
        .await;
    assert_eq!(problem(again, 409).await["code"], "BIZ_USER_EXISTS");
    let unknown = users.try_get("00000000-0000-4000-8000-000000000000").await;
    assert_eq!(problem(unknown, 404).await["code"], "RES_USER_NOT_FOUND");
}

#[tokio::test]
async fn an_operator_may_neither_create_nor_list_users() {
    let app = spawn_app().await;
    app.users().create("ops@example.com", "operator").await;
    let tokens = logged_in(&app, "ops@example.com", PASSWORD).await;
    let operator = app.as_bearer(&tokens.access_token).users();
    let before = app.event_count().await;

    let refused = operator
        .try_create("new@example.com", PASSWORD, "admin")
        .await;
    let body = problem(refused, 403).await;
    assert_eq!(body["code"], "AUTH_FORBIDDEN");
    assert!(
        body["detail"].as_str().unwrap().contains("users:manage"),
        "{body}"
    );
    let listing = operator.try_list().await;
    assert_eq!(problem(listing, 403).await["code"], "AUTH_FORBIDDEN");
    assert_eq!(app.event_count().await, before);
    assert_eq!(
        login(&app, "new@example.com", PASSWORD).await,
        401,
        "no user was created"
    );
}

#[tokio::test]
async fn a_role_change_takes_effect_on_the_next_request_with_the_same_token() {
    let app = spawn_app().await;
    let users = app.users();
    let user = users.create("viewer@example.com", "viewer").await;
    let tokens = logged_in(&app, "viewer@example.com", PASSWORD).await;
    let viewer = app.as_bearer(&tokens.access_token);
    let issue = || async {
        viewer
            .clone()
            .licenses()
            .try_issue(&NewLicense::new("acme", "pro"))
            .await
            .status()
    };
    assert_eq!(issue().await, 403);

    let changed = users.change_role(user.id, "operator").await;
    assert_eq!(changed.role, "operator");
    assert_eq!(issue().await, 201);
    let who = viewer.clone().auth().me().await;
    assert_eq!(who.role.as_deref(), Some("operator"));

    users.change_role(user.id, "viewer").await;
    assert_eq!(issue().await, 403);
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
    let users = app.users();
    let user = users.create("aud@example.com", "auditor").await;
    let tokens = logged_in(&app, "aud@example.com", PASSWORD).await;
    assert_eq!(me(&app, &tokens).await, 200);

    assert!(users.disable(user.id).await.disabled);
    let refused = app.as_bearer(&tokens.access_token).auth().try_me().await;
    assert_eq!(problem(refused, 401).await["code"], "AUTH_INVALID_TOKEN");
    assert_eq!(refresh(&app, &tokens).await, 401);
    assert_eq!(login(&app, "aud@example.com", PASSWORD).await, 401);
    let revoked = events(&app, "RefreshFamilyRevoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].1["reason"], "user_disabled");
    assert_eq!(revoked[0].0, "admin_token");

    assert!(!users.enable(user.id).await.disabled);
    assert_eq!(events(&app, "UserEnabled").await.len(), 1);
    assert_eq!(
        me(&app, &tokens).await,
        401,
        "enabling revives no old token"
    );
    assert_eq!(refresh(&app, &tokens).await, 401);
    let again = logged_in(&app, "aud@example.com", PASSWORD).await;
    assert_eq!(me(&app, &again).await, 200);
}

#[tokio::test]
async fn revoking_a_users_tokens_ends_their_access_tokens_and_every_login() {
    let app = spawn_app().await;
    let users = app.users();
    let user = users.create("ops@example.com", "operator").await;
    let first = logged_in(&app, "ops@example.com", PASSWORD).await;
    let second = logged_in(&app, "ops@example.com", PASSWORD).await;
    users.create("other@example.com", "operator").await;
    let others = logged_in(&app, "other@example.com", PASSWORD).await;

    let revoked = users.revoke_tokens(user.id).await;
    assert_eq!(revoked.revoked_logins, 2);

    for tokens in [&first, &second] {
        let refused = app.as_bearer(&tokens.access_token).auth().try_me().await;
        assert_eq!(problem(refused, 401).await["code"], "AUTH_INVALID_TOKEN");
        assert_eq!(refresh(&app, tokens).await, 401);
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
    assert_eq!(me(&app, &others).await, 200);
    assert_eq!(refresh(&app, &others).await, 200);
    let fresh = logged_in(&app, "ops@example.com", PASSWORD).await;
    assert_eq!(me(&app, &fresh).await, 200);
    assert_eq!(refresh(&app, &fresh).await, 200);
}

#[tokio::test]
async fn after_an_admin_sets_a_password_the_old_one_and_the_old_tokens_no_longer_work() {
    let app = spawn_app().await;
    let user = app.users().create("ops@example.com", "operator").await;
    let tokens = logged_in(&app, "ops@example.com", PASSWORD).await;

    let set = app.users().try_set_password(user.id, NEW_PASSWORD).await;
    assert_eq!(set.status(), 204);
    assert_eq!(login(&app, "ops@example.com", PASSWORD).await, 401);
    assert_eq!(me(&app, &tokens).await, 401);
    assert_eq!(refresh(&app, &tokens).await, 401);
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
    assert_eq!(me(&app, &fresh).await, 200);
}

#[tokio::test]
async fn a_user_changes_their_own_password_only_with_the_current_one() {
    let app = spawn_app().await;
    let user = app.users().create("view@example.com", "viewer").await;
    let tokens = logged_in(&app, "view@example.com", PASSWORD).await;
    let own = app.as_bearer(&tokens.access_token).users();
    let before = app.event_count().await;

    let wrong = own
        .try_change_own_password("not the password", NEW_PASSWORD)
        .await;
    assert_eq!(problem(wrong, 403).await["code"], "AUTH_WRONG_PASSWORD");
    let short = own.try_change_own_password(PASSWORD, "short").await;
    let short = problem(short, 422).await;
    assert_eq!(short["code"], "VAL_INVALID_FIELD");
    assert!(
        short["detail"]
            .as_str()
            .unwrap()
            .starts_with("new_password")
    );
    let bootstrap = app
        .as_bearer(ADMIN_TOKEN)
        .users()
        .try_change_own_password(PASSWORD, NEW_PASSWORD)
        .await;
    assert_eq!(problem(bootstrap, 403).await["code"], "AUTH_FORBIDDEN");
    let anonymous = app
        .anonymous()
        .users()
        .try_change_own_password(PASSWORD, NEW_PASSWORD)
        .await;
    assert_eq!(
        problem(anonymous, 401).await["code"],
        "AUTH_MISSING_CREDENTIALS"
    );
    assert_eq!(app.event_count().await, before, "nothing written");

    let changed = own.try_change_own_password(PASSWORD, NEW_PASSWORD).await;
    assert_eq!(changed.status(), 204);
    assert_eq!(login(&app, "view@example.com", PASSWORD).await, 401);
    assert_eq!(me(&app, &tokens).await, 401);
    let fresh = logged_in(&app, "view@example.com", NEW_PASSWORD).await;
    assert_eq!(me(&app, &fresh).await, 200);
    let recorded = events(&app, "UserPasswordChanged").await;
    assert_eq!(recorded[0].0, format!("user:{}", user.id));
}

#[tokio::test]
async fn the_last_enabled_admin_can_be_neither_disabled_nor_demoted() {
    let app = spawn_app().await;
    let first = app.users().create("first@example.com", "admin").await;
    let tokens = logged_in(&app, "first@example.com", PASSWORD).await;
    let itself = app.as_bearer(&tokens.access_token).users();
    let before = app.event_count().await;

    let disable_self = itself.try_disable(first.id).await;
    assert_eq!(problem(disable_self, 409).await["code"], "BIZ_LAST_ADMIN");
    let demote_self = itself.try_change_role(first.id, "operator").await;
    assert_eq!(problem(demote_self, 409).await["code"], "BIZ_LAST_ADMIN");
    assert_eq!(app.event_count().await, before, "nothing written");
    assert_eq!(me(&app, &tokens).await, 200);

    // With a second admin, the first may step down; the second is then the last.
    let second = itself.create("second@example.com", "admin").await;
    let created = events(&app, "UserCreated").await;
    assert_eq!(created[1].0, format!("user:{}", first.id));
    itself.change_role(first.id, "auditor").await;
    let disable_second = app.users().try_disable(second.id).await;
    assert_eq!(problem(disable_second, 409).await["code"], "BIZ_LAST_ADMIN");
}

#[tokio::test]
async fn a_caller_gives_or_changes_only_a_role_whose_permissions_it_holds() {
    let app = spawn_app().await;
    let admin = app.users().create("admin@example.com", "admin").await;
    let viewer = app.users().create("view@example.com", "viewer").await;
    let key = app.api_keys().create("people", &["users:manage"]).await;
    let people = app.as_bearer(&key.key).users();
    let before = app.event_count().await;

    // A key that manages users but holds nothing else can neither make an admin nor take one
    // over (by setting their password, say).
    let refusals = [
        people
            .try_create("evil@example.com", PASSWORD, "admin")
            .await,
        people
            .try_create("v2@example.com", PASSWORD, "viewer")
            .await,
        people.try_change_role(viewer.id, "admin").await,
        people.try_set_password(admin.id, NEW_PASSWORD).await,
        people.try_disable(admin.id).await,
        people.try_enable(admin.id).await,
        people.try_revoke_tokens(admin.id).await,
    ];
    for refusal in refusals {
        let problem = problem(refusal, 403).await;
        assert_eq!(problem["code"], "AUTH_FORBIDDEN", "{problem}");
    }
    assert_eq!(app.event_count().await, before, "nothing written");
    assert_eq!(login(&app, "evil@example.com", PASSWORD).await, 401);

    // A key holding what a viewer holds makes and manages viewers, and no one above them.
    let wider = app
        .api_keys()
        .create(
            "viewers",
            &["users:manage", "licenses:read", "sessions:read"],
        )
        .await;
    let viewers = app.as_bearer(&wider.key).users();
    viewers.create("v2@example.com", "viewer").await;
    assert_eq!(viewers.try_disable(viewer.id).await.status(), 200);
    let promote = viewers.try_change_role(viewer.id, "operator").await;
    assert_eq!(problem(promote, 403).await["code"], "AUTH_FORBIDDEN");
}

#[tokio::test]
async fn bad_bodies_are_refused_with_422_and_write_nothing() {
    let app = spawn_app().await;
    let users = app.users();
    let user = users.create("ops@example.com", "operator").await;
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
        let response = users.try_create_with(&body).await;
        let refused = problem(response, 422).await;
        let code = refused["code"].as_str().unwrap();
        assert!(
            code == "VAL_INVALID_FIELD" || code == "VAL_INVALID_BODY",
            "{body}: {refused}"
        );
    }
    for body in [
        json!({"role": "superuser"}),
        json!({}),
        json!({"role": null}),
    ] {
        let response = users.command(user.id, "role", &body).await;
        assert_eq!(response.status(), 422, "{body}");
    }
    for body in [
        json!({"password": "1234567"}),
        json!({"password": long}),
        json!({"pass": PASSWORD}),
    ] {
        let response = users.command(user.id, "password", &body).await;
        assert_eq!(response.status(), 422, "{body}");
    }
    assert_eq!(app.event_count().await, before, "nothing written");
    assert_eq!(login(&app, "new@example.com", PASSWORD).await, 401);
    assert_eq!(
        logged_in(&app, "ops@example.com", PASSWORD)
            .await
            .token_type,
        "Bearer"
    );
}
