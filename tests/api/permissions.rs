//! Who may do what, route by route: every route the service serves is in the permission table,
//! and every route answers every kind of caller as the table says — anonymous, each role, the
//! bootstrap token, a license holder on its own license and on another.

use std::collections::BTreeSet;

use keyledger_api::Role;
use keyledger_api::permission::{Access, Permission, Rule, TABLE, rule_for};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, NewLicense, PASSWORD, TestApp, create_user, eventually, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn every_route_the_service_serves_is_in_the_permission_table_and_no_other() {
    let app = spawn_app().await;
    let missing: Vec<String> = app
        .routes
        .iter()
        .filter(|route| rule_for(&route.method, route.path).is_none())
        .map(|route| route.to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a rule in the permission table (deny by default refuses them): {missing:?}"
    );
    let served: BTreeSet<String> = app.routes.iter().map(|r| r.to_string()).collect();
    let stale: Vec<String> = TABLE
        .iter()
        .map(|rule| format!("{} {}", rule.method, rule.path))
        .filter(|rule| !served.contains(rule))
        .collect();
    assert!(
        stale.is_empty(),
        "rules for routes the service does not serve: {stale:?}"
    );
}

/// The permissions each role has, as the README states them.
fn role_has(role: Role, permission: Permission) -> bool {
    let granted: &[&str] = match role {
        Role::Admin => return true,
        Role::Operator => &[
            "licenses:read",
            "licenses:write",
            "sessions:read",
            "sessions:write",
            "requests:read",
            "events:read",
        ],
        Role::Auditor => &[
            "licenses:read",
            "sessions:read",
            "requests:read",
            "events:read",
        ],
        Role::Viewer => &["licenses:read", "sessions:read"],
    };
    granted.contains(&permission.as_str())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Bootstrap,
    User(Role),
    /// A license key: of the license the path names (`own`), or of another one.
    License {
        own: bool,
    },
    /// An API key whose scopes are the route's permission alone (`scoped`; with `users:manage`,
    /// also an auditor's), or every permission but that one.
    ApiKey {
        scoped: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed,
    /// 401 `AUTH_MISSING_CREDENTIALS` (an admin page sends the browser to the login page).
    Unauthenticated,
    /// 403 `AUTH_FORBIDDEN`.
    Forbidden,
}

fn expected(access: Access, caller: Caller) -> Outcome {
    let holds = |permission| match caller {
        Caller::Bootstrap => true,
        Caller::User(role) => role_has(role, permission),
        Caller::ApiKey { scoped } => scoped,
        Caller::Anonymous | Caller::License { .. } => false,
    };
    match (access, caller) {
        (Access::Public, _) => Outcome::Allowed,
        (_, Caller::Anonymous) => Outcome::Unauthenticated,
        (Access::Authenticated, _) => Outcome::Allowed,
        (Access::SignedInUser, Caller::User(_)) => Outcome::Allowed,
        (Access::SignedInUser, _) => Outcome::Forbidden,
        (Access::OwnLicense(_), Caller::License { own: true }) => Outcome::Allowed,
        (Access::Requires(p) | Access::OwnLicense(p), _) if holds(p) => Outcome::Allowed,
        _ => Outcome::Forbidden,
    }
}

/// A call of one route, with what it acts on made fresh for it.
struct Call {
    path: String,
    body: Option<Value>,
    /// A form body (the admin hub's login and logout), instead of JSON.
    form: Option<Vec<(&'static str, String)>>,
    /// The key of the license the path names (or of some license, for other paths).
    license_key: String,
    headers: Vec<(&'static str, String)>,
}

/// What the calls that change nothing share: a license, a session, and a license that is
/// not the one a path names.
struct World {
    license: (String, String),
    session_id: String,
    other_key: String,
}

async fn issue(app: &TestApp) -> (String, String) {
    let license = app
        .issue_license_with(NewLicense::new("matrix", "pro").valid_days(30))
        .await;
    (license.license_id.to_string(), license.key)
}

async fn admin_ok(app: &TestApp, method: reqwest::Method, path: &str, body: Value) -> Value {
    let response = app
        .http
        .request(method, app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "preparing {path}");
    response.json().await.unwrap_or(Value::Null)
}

async fn login(app: &TestApp, email: &str) -> Value {
    admin_ok(
        app,
        reqwest::Method::POST,
        "/v1/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await
}

async fn create_session(app: &TestApp) -> String {
    let session: Value = admin_ok(
        app,
        reqwest::Method::POST,
        "/v1/sessions",
        json!({"agent_role": "matrix"}),
    )
    .await;
    session["session_id"].as_str().unwrap().to_owned()
}

/// Prepares what `rule`'s route acts on, as the bootstrap admin: a route that changes a
/// license or a session gets one of its own.
async fn prepare(app: &TestApp, world: &World, rule: &Rule) -> Call {
    let changes = rule.method != reqwest::Method::GET;
    let (license_id, license_key) = if changes && rule.path.starts_with("/v1/licenses/{id}") {
        issue(app).await
    } else {
        world.license.clone()
    };
    let session_id = if changes && rule.path.starts_with("/v1/sessions/{id}") {
        create_session(app).await
    } else {
        world.session_id.clone()
    };
    let license_path = |rest: &str| format!("/v1/licenses/{license_id}{rest}");
    let post = reqwest::Method::POST;
    let mut headers = Vec::new();
    let mut form = None;
    let (path, body) = match (rule.method.as_str(), rule.path) {
        ("POST", "/v1/licenses") => (
            rule.path.to_owned(),
            Some(json!({"owner": "m", "tier": "pro"})),
        ),
        ("POST", "/v1/licenses/validate") => {
            (rule.path.to_owned(), Some(json!({"key": license_key})))
        }
        ("GET", "/v1/licenses/by-key") => {
            headers.push(("x-license-key", license_key.clone()));
            (rule.path.to_owned(), None)
        }
        // An MCP initialize: any credentials may open the transport (each tool call is then
        // checked as its route).
        ("POST", "/mcp") => {
            headers.push(("accept", "application/json, text/event-stream".to_owned()));
            (
                rule.path.to_owned(),
                Some(json!({
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "matrix", "version": "1"},
                    },
                })),
            )
        }
        ("POST", "/v1/licenses/by-key") => {
            (rule.path.to_owned(), Some(json!({"key": license_key})))
        }
        ("POST", "/v1/licenses/{id}/revoke" | "/v1/licenses/{id}/suspend") => (
            rule.path.replace("{id}", &license_id),
            Some(json!({"reason": "matrix"})),
        ),
        ("POST", "/v1/licenses/{id}/reinstate") => {
            admin_ok(
                app,
                post.clone(),
                &license_path("/suspend"),
                json!({"reason": "m"}),
            )
            .await;
            (license_path("/reinstate"), Some(json!({})))
        }
        ("POST", "/v1/licenses/{id}/renew") => {
            (license_path("/renew"), Some(json!({"valid_days": 30})))
        }
        ("POST", "/v1/licenses/{id}/certificate") => {
            (license_path("/certificate"), Some(json!({"ttl_days": 7})))
        }
        ("POST", "/v1/licenses/{id}/policy") => (
            license_path("/policy"),
            Some(json!({"max_installations": 5})),
        ),
        ("POST", "/v1/licenses/{id}/installations") => (
            license_path("/installations"),
            Some(json!({"installation_id": "m1"})),
        ),
        (_, path) if path.starts_with("/v1/licenses/{id}/installations/{installation_id}") => {
            admin_ok(
                app,
                post.clone(),
                &license_path("/installations"),
                json!({"installation_id": "m1"}),
            )
            .await;
            let path = path
                .replace("{id}", &license_id)
                .replace("{installation_id}", "m1");
            let body = (rule.method == reqwest::Method::POST).then(|| json!({}));
            (path, body)
        }
        ("POST", "/v1/sessions") => (rule.path.to_owned(), Some(json!({"agent_role": "m"}))),
        ("PATCH", "/v1/sessions/{id}") => (
            rule.path.replace("{id}", &session_id),
            Some(json!({"metadata": {"matrix": 1}})),
        ),
        ("POST", "/v1/sessions/{id}/transition") => (
            rule.path.replace("{id}", &session_id),
            Some(json!({"to": "active", "reason": "matrix"})),
        ),
        ("POST", "/v1/requests") => (
            rule.path.to_owned(),
            Some(
                json!({"service": "billing", "method": "GET", "path": "/x", "status": 200, "duration_ms": 1}),
            ),
        ),
        ("GET", "/v1/requests/{id}") => {
            let record_id = eventually(
                std::time::Duration::from_secs(10),
                "a request record",
                || async {
                    let page: Value = app.get("/v1/requests?limit=1").await.json().await.ok()?;
                    page["items"][0]["record_id"].as_str().map(str::to_owned)
                },
            )
            .await;
            (rule.path.replace("{id}", &record_id), None)
        }
        ("POST", "/v1/api-keys") => (
            rule.path.to_owned(),
            // A key may grant only what its creator holds: the scope the route asks for.
            Some(json!({"name": "matrix", "scopes": ["api_keys:manage"]})),
        ),
        (_, "/v1/api-keys/{id}") => {
            let key = admin_ok(
                app,
                post.clone(),
                "/v1/api-keys",
                json!({"name": "matrix", "scopes": ["licenses:read"]}),
            )
            .await;
            (rule.path.replace("{id}", key["id"].as_str().unwrap()), None)
        }
        ("POST", "/v1/auth/login") => (
            rule.path.to_owned(),
            Some(json!({"email": "admin@example.com", "password": PASSWORD})),
        ),
        ("POST", "/v1/auth/refresh" | "/v1/auth/logout") => {
            let tokens = login(app, "viewer@example.com").await;
            (
                rule.path.to_owned(),
                Some(json!({"refresh_token": tokens["refresh_token"]})),
            )
        }
        ("POST", "/admin/login") => {
            form = Some(vec![
                ("email", "admin@example.com".to_owned()),
                ("password", PASSWORD.to_owned()),
            ]);
            (rule.path.to_owned(), None)
        }
        ("POST", "/admin/logout") => {
            form = Some(vec![]);
            (rule.path.to_owned(), None)
        }
        ("POST", "/v1/users") => (
            rule.path.to_owned(),
            Some(json!({
                "email": format!("m-{}@example.com", uuid::Uuid::new_v4().simple()),
                "password": PASSWORD,
                "role": "viewer",
            })),
        ),
        (method, path) if path.starts_with("/v1/users/{id}") => {
            // A user of its own for each call that changes one.
            let user = admin_ok(
                app,
                post.clone(),
                "/v1/users",
                json!({
                    "email": format!("m-{}@example.com", uuid::Uuid::new_v4().simple()),
                    "password": PASSWORD,
                    "role": "viewer",
                }),
            )
            .await;
            let path = path.replace("{id}", user["id"].as_str().unwrap());
            let body = match path.rsplit('/').next() {
                Some("role") => Some(json!({"role": "auditor"})),
                Some("password") => Some(json!({"password": "another horse battery"})),
                _ if method == "POST" => Some(json!({})),
                _ => None,
            };
            (path, body)
        }
        // The caller's own password, set to what it was (the callers log in again after).
        ("POST", "/v1/auth/password") => (
            rule.path.to_owned(),
            Some(json!({"current_password": PASSWORD, "new_password": PASSWORD})),
        ),
        ("GET", "/v1/streams/{stream_id}/events") => (
            rule.path
                .replace("{stream_id}", &format!("license-{license_id}")),
            None,
        ),
        ("GET", path) if path.contains("/sessions/{id}") => {
            (path.replace("{id}", &session_id), None)
        }
        ("GET", path) => (path.replace("{id}", &license_id), None),
        (method, path) => panic!("the matrix does not know how to call {method} {path}"),
    };
    Call {
        path,
        body,
        form,
        license_key,
        headers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_answers_each_caller_as_the_permission_table_says() {
    // Checkpoints signed often, so that `/v1/checkpoints/latest` has one to show.
    let app = spawn_app_with(|args| {
        args.checkpoint_interval = std::time::Duration::from_millis(100);
    })
    .await;
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let email = format!("{}@example.com", role.as_str());
        create_user(&app.database.url, &email, role).await;
        let login = login(&app, &email).await;
        let access = login["access_token"].as_str().unwrap().to_owned();
        tokens.push((role, access));
    }
    let world = World {
        license: issue(&app).await,
        session_id: create_session(&app).await,
        other_key: issue(&app).await.1,
    };
    eventually(
        std::time::Duration::from_secs(10),
        "a signed checkpoint",
        || async { (app.get("/v1/checkpoints/latest").await.status() == 200).then_some(()) },
    )
    .await;
    let mut callers = vec![
        Caller::Anonymous,
        Caller::Bootstrap,
        Caller::License { own: true },
        Caller::License { own: false },
    ];
    callers.extend(Role::ALL.map(Caller::User));
    callers.extend([
        Caller::ApiKey { scoped: true },
        Caller::ApiKey { scoped: false },
    ]);
    // For each permission, a key with it alone and a key with every other. A key that manages
    // users also holds what an auditor holds: the users the calls act on are viewers made
    // auditors, and a caller gives or changes only a role whose permissions it holds.
    let mut api_keys = std::collections::HashMap::new();
    for permission in Permission::ALL {
        let mut keys = Vec::new();
        let alone = if permission == Permission::UsersManage {
            let mut scopes = keyledger_api::permission::grants(Role::Auditor).to_vec();
            scopes.push(permission);
            scopes
        } else {
            vec![permission]
        };
        for scopes in [
            alone,
            Permission::ALL
                .into_iter()
                .filter(|p| *p != permission)
                .collect(),
        ] {
            let created = admin_ok(
                &app,
                reqwest::Method::POST,
                "/v1/api-keys",
                json!({"name": format!("matrix {permission}"), "scopes": scopes}),
            )
            .await;
            keys.push(created["key"].as_str().unwrap().to_owned());
        }
        api_keys.insert(permission, keys);
    }

    // An admin page answers an anonymous browser with a redirect: seen, not followed.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut wrong = Vec::new();
    for rule in TABLE {
        for &caller in &callers {
            let call = prepare(&app, &world, rule).await;
            let authorization = match caller {
                Caller::Anonymous => None,
                Caller::Bootstrap => Some(format!("Bearer {ADMIN_TOKEN}")),
                Caller::User(role) => {
                    let (_, token) = tokens.iter().find(|(r, _)| *r == role).unwrap();
                    Some(format!("Bearer {token}"))
                }
                Caller::ApiKey { scoped } => {
                    let permission = match rule.access {
                        Access::Requires(p) | Access::OwnLicense(p) => p,
                        _ => Permission::LicensesRead,
                    };
                    let keys = &api_keys[&permission];
                    Some(format!("Bearer {}", keys[if scoped { 0 } else { 1 }]))
                }
                Caller::License { own } => Some(format!(
                    "License {}",
                    if own {
                        &call.license_key
                    } else {
                        &world.other_key
                    }
                )),
            };
            let method = reqwest::Method::from_bytes(rule.method.as_str().as_bytes()).unwrap();
            let mut request = no_redirects
                .request(method, app.url(&call.path))
                .header("x-consistency-position", app.head().await.to_string());
            if let Some(authorization) = &authorization {
                request = request.header("authorization", authorization);
            }
            for (name, value) in &call.headers {
                request = request.header(*name, value);
            }
            if let Some(body) = &call.body {
                request = request.json(body);
            }
            if let Some(form) = &call.form {
                request = request.form(form);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            // A refusal's code is in its body; an allowed call's body is not read (the live
            // event stream never ends).
            let code = if response.status().is_success() {
                None
            } else {
                response
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|body| body["code"].as_str().map(str::to_owned))
            };
            let outcome = expected(rule.access, caller);
            let admin_page = rule.path.starts_with("/admin") && rule.access != Access::Public;
            // Logging in and out of the hub ends in a redirect (to the hub, to the login page).
            let redirects = rule.method == reqwest::Method::POST
                && matches!(rule.path, "/admin/login" | "/admin/logout");
            let as_expected = match outcome {
                Outcome::Allowed if redirects => status == 303,
                Outcome::Allowed => (200..300).contains(&status),
                Outcome::Unauthenticated if admin_page => status == 303,
                Outcome::Unauthenticated => {
                    status == 401 && code.as_deref() == Some("AUTH_MISSING_CREDENTIALS")
                }
                Outcome::Forbidden => status == 403 && code.as_deref() == Some("AUTH_FORBIDDEN"),
            };
            if !as_expected {
                wrong.push(format!(
                    "{} {} as {caller:?}: expected {outcome:?}, got {status} {code:?}",
                    rule.method, rule.path
                ));
            }
        }
        if rule.path == "/v1/auth/password" {
            // A password change ends the user's tokens: the routes after it get new ones.
            for (role, token) in tokens.iter_mut() {
                let login = login(&app, &format!("{}@example.com", role.as_str())).await;
                *token = login["access_token"].as_str().unwrap().to_owned();
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn a_license_holder_validates_and_activates_with_its_own_key_and_nothing_else() {
    let app = spawn_app().await;
    let (license_id, key) = issue(&app).await;
    let (other_id, _) = issue(&app).await;
    let holder = crate::helpers::client_with(&format!("License {key}"));

    // Validation with the key in the header and none in the body.
    let response = holder
        .post(app.url("/v1/licenses/validate"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let verdict: Value = response.json().await.unwrap();
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["license_id"], license_id.as_str());

    let activate = |id: &str| {
        holder
            .post(app.url(&format!("/v1/licenses/{id}/installations")))
            .json(&json!({"installation_id": "laptop"}))
            .send()
    };
    assert_eq!(activate(&license_id).await.unwrap().status(), 201);
    let refused = crate::helpers::problem(activate(&other_id).await.unwrap(), 403).await;
    assert_eq!(refused["code"], "AUTH_FORBIDDEN");
    assert_eq!(
        app.actors(&format!("license-{license_id}")).await,
        ["admin_token", &format!("license:{license_id}")]
    );

    // A license key is no operator: it reads nothing and issues nothing.
    let read = holder
        .get(app.url(&format!("/v1/licenses/{license_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::problem(read, 403).await["code"],
        "AUTH_FORBIDDEN"
    );

    // Validation by an anonymous caller with the key in the body is recorded as anonymous.
    let response = app
        .anonymous
        .post(app.url("/v1/licenses/validate"))
        .json(&json!({"key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.actors(&format!("license_usage-{license_id}")).await,
        [format!("license:{license_id}"), "anonymous".to_owned()]
    );
}

#[tokio::test]
async fn a_key_that_is_no_license_key_of_this_service_is_refused_with_a_challenge() {
    let app = spawn_app().await;
    let stranger = crate::helpers::client_with("License LK-NOT-A-KEY");
    let response = stranger
        .post(app.url("/v1/licenses/validate"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"License realm="keyledger", error="invalid_token""#
    );
    assert_eq!(
        crate::helpers::problem(response, 401).await["code"],
        "AUTH_INVALID_TOKEN"
    );
    let unknown_scheme = crate::helpers::client_with("Basic dXNlcjpwYXNz")
        .get(app.url("/v1/licenses"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::problem(unknown_scheme, 401).await["code"],
        "AUTH_INVALID_TOKEN"
    );
    assert_eq!(app.event_count().await, 0);
}

#[test]
fn the_readme_shows_the_permission_table_as_enforced() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table = keyledger_api::permission::markdown_table();
    assert!(
        readme.contains(&table),
        "README.md's permission table differs from the enforced one; `keyledger permissions` \
         prints it:\n{table}"
    );
}

#[tokio::test]
async fn the_license_page_shows_who_did_each_thing() {
    let app = spawn_app().await;
    let (license_id, key) = issue(&app).await;
    let holder = crate::helpers::client_with(&format!("License {key}"));
    let activated = holder
        .post(app.url(&format!("/v1/licenses/{license_id}/installations")))
        .json(&json!({"installation_id": "desk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(activated.status(), 201);
    let page = app
        .get_at(&format!("/admin/licenses/{license_id}"), app.head().await)
        .await
        .text()
        .await
        .unwrap();
    let history = &page[page.find("id=\"history\"").expect("a history table")..];
    assert!(history.contains("<td>admin_token</td>"), "{history}");
    assert!(
        history.contains(&format!("<td>license:{license_id}</td>")),
        "{history}"
    );
}
