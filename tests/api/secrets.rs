//! After issuance the raw key appears nowhere: not in a dump of the database, the service's
//! log output, the NATS messages, or any later response. Likewise every credential (passwords,
//! refresh and access tokens, the bootstrap token) after logins, refreshes, password changes
//! and user management.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, ServiceProcess, TestDatabase, TestStream, checkpoint, eventually,
};

/// The real binary publishing to `stream`, logging everything at debug level: every place a
/// secret could leak to is there to search.
async fn watched_service(database: &TestDatabase, stream: &TestStream) -> ServiceProcess {
    ServiceProcess::start(
        &database.url,
        &[
            ("NATS_URL", crate::helpers::NATS),
            ("NATS_STREAM", &stream.config.stream),
            ("NATS_SUBJECT_PREFIX", &stream.config.subject_prefix),
            ("NATS_CHECKPOINT_SUBJECT", &stream.config.checkpoint_subject),
            ("RUST_LOG", "debug"),
            ("LOG_FORMAT", "json"),
        ],
    )
    .await
}

/// Waits until the relay has published the log up to its head; the head and the stream's
/// messages.
async fn published(
    database: &TestDatabase,
    stream: &TestStream,
) -> (i64, Vec<async_nats::jetstream::message::StreamMessage>) {
    let pool = database.pool();
    let head = {
        let client = pool.get().await.unwrap();
        keyledger_events::store::head_on(&client).await.unwrap()
    };
    let name = stream.config.checkpoint_name();
    eventually(
        Duration::from_secs(20),
        "the relay to publish everything",
        || {
            let pool = pool.clone();
            let name = name.clone();
            async move { (checkpoint(&pool, &name).await >= head).then_some(()) }
        },
    )
    .await;
    (head, stream.messages().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_key_appears_nowhere_after_issuance() {
    let database = TestDatabase::create().await;
    let stream = TestStream::create().await;
    let service = watched_service(&database, &stream).await;
    let http = crate::helpers::admin_client();
    let url = |path: &str| format!("{}{path}", service.address);

    let mut keys = Vec::new();
    let mut responses = Vec::new();
    for n in 0..5 {
        let issued: Value = http
            .post(url("/v1/licenses"))
            .json(&json!({"owner": format!("owner-{n}"), "tier": "enterprise"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = issued["key"].as_str().unwrap().to_owned();
        let id = issued["license_id"].as_str().unwrap().to_owned();
        let validated = http
            .post(url("/v1/licenses/validate"))
            .json(&json!({"key": key, "feature": "export"}))
            .send()
            .await
            .unwrap();
        assert_eq!(validated.status(), 200);
        responses.push(validated.text().await.unwrap());
        // A client mistake that puts the key where it does not belong.
        let mistaken = http
            .post(url("/v1/licenses"))
            .json(&json!({"owner": "x", "tier": key}))
            .send()
            .await
            .unwrap();
        assert_eq!(mistaken.status(), 422);
        responses.push(mistaken.text().await.unwrap());
        // The key pasted into free text the service keeps, used as a member's name, or sent
        // in a path.
        let pasted = http
            .post(url("/v1/licenses/validate"))
            .json(&json!({"key": key, "feature": key, "installation_id": key,
                          "metadata": {key.as_str(): 1, "note": format!("see {key}")}}))
            .send()
            .await
            .unwrap();
        responses.push(pasted.text().await.unwrap());
        let in_path = http
            .post(url(&format!("/v1/licenses/{key}/suspend")))
            .json(&json!({"reason": format!("leaked as {key}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(in_path.status(), 400);
        responses.push(in_path.text().await.unwrap());
        let as_owner = http
            .post(url("/v1/licenses"))
            .json(&json!({"owner": key, "tier": "pro", "entitlements": [key]}))
            .send()
            .await
            .unwrap();
        assert_eq!(as_owner.status(), 201);
        responses.push(as_owner.text().await.unwrap());
        if n == 0 {
            let revoked = http
                .post(url(&format!("/v1/licenses/{id}/revoke")))
                .json(&json!({"reason": format!("test {key}")}))
                .send()
                .await
                .unwrap();
            responses.push(revoked.text().await.unwrap());
        }
        responses.push(
            http.get(url(&format!("/v1/licenses/{id}")))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
        keys.push(key);
    }
    responses.push(
        http.get(url("/v1/events?limit=1000"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );

    // Everything reached NATS: 11 domain events, and the request log's records of the requests
    // above.
    let (head, messages) = published(&database, &stream).await;
    assert!(head > 11, "{head}");
    assert!(messages.len() as i64 >= head);
    assert!(
        messages
            .iter()
            .any(|m| m.subject.ends_with("ApiRequestRecorded")),
        "request records reach NATS too"
    );

    let dump = Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", &database.name])
        .output()
        .unwrap();
    assert!(dump.status.success());
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.contains("LicenseIssued"), "the dump holds the log");

    let log = service.log_text();
    assert!(log.contains("keyledger is serving"), "the log was captured");

    for key in &keys {
        assert!(!dump.contains(key.as_str()), "key in the database dump");
        assert!(!log.contains(key.as_str()), "key in the log output");
        for message in &messages {
            assert!(
                !String::from_utf8_lossy(&message.payload).contains(key.as_str()),
                "key on NATS"
            );
            for (_, values) in message.headers.iter() {
                assert!(
                    values.iter().all(|v| !v.as_str().contains(key.as_str())),
                    "key in NATS headers"
                );
            }
        }
        for response in &responses {
            assert!(
                !response.contains(key.as_str()),
                "key in a later response: {response}"
            );
        }
    }
    stream.delete().await;
}

/// Every secret a workload handled, with what it is: `password`, `refresh_token`,
/// `access_token`, `bootstrap_token`, `api_key`.
#[derive(Default)]
struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    fn add(&mut self, kind: &'static str, secret: &str) {
        self.0.push((kind, secret.to_owned()));
    }

    fn add_tokens(&mut self, tokens: &Value) {
        self.add("access_token", tokens["access_token"].as_str().unwrap());
        self.add("refresh_token", tokens["refresh_token"].as_str().unwrap());
    }
}

/// A client of a service process.
struct Caller<'a> {
    http: reqwest::Client,
    service: &'a ServiceProcess,
}

impl Caller<'_> {
    async fn post(&self, bearer: Option<&str>, path: &str, body: Value) -> reqwest::Response {
        let request = self
            .http
            .post(format!("{}{path}", self.service.address))
            .json(&body);
        let request = match bearer {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        request.send().await.unwrap()
    }

    async fn get(&self, bearer: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.service.address))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
    }

    /// Creates a user with the bootstrap token; the user's id.
    async fn create_user(&self, email: &str, password: &str, role: &str) -> String {
        let response = self
            .post(
                Some(ADMIN_TOKEN),
                "/v1/users",
                json!({"email": email, "password": password, "role": role}),
            )
            .await;
        assert_eq!(response.status(), 201);
        let user: Value = response.json().await.unwrap();
        user["id"].as_str().unwrap().to_owned()
    }

    async fn login(&self, email: &str, password: &str) -> Value {
        let response = self
            .post(
                None,
                "/v1/auth/login",
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(response.status(), 200, "logging in as {email}");
        response.json().await.unwrap()
    }

    async fn refresh(&self, tokens: &Value) -> Value {
        let response = self
            .post(
                None,
                "/v1/auth/refresh",
                json!({"refresh_token": tokens["refresh_token"]}),
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

/// Logins, refreshes, password changes, user management and bootstrap-token calls; returns
/// every secret they handled.
async fn credentials_workload(caller: &Caller<'_>) -> Secrets {
    let mut secrets = Secrets::default();
    secrets.add("bootstrap_token", ADMIN_TOKEN);
    let password = |name: &str| format!("{name}-password-{}", uuid::Uuid::new_v4().simple());
    let (admin_pw, ops_pw, viewer_pw) = (password("admin"), password("ops"), password("viewer"));
    for secret in [&admin_pw, &ops_pw, &viewer_pw] {
        secrets.add("password", secret);
    }
    caller
        .create_user("admin@example.com", &admin_pw, "admin")
        .await;
    let ops = caller
        .create_user("ops@example.com", &ops_pw, "operator")
        .await;
    let viewer = caller
        .create_user("viewer@example.com", &viewer_pw, "viewer")
        .await;
    // A password refused for its length is a secret too.
    let too_long = format!("{}{}", password("refused"), "x".repeat(256));
    secrets.add("password", &too_long);
    let refused = caller
        .post(
            Some(ADMIN_TOKEN),
            "/v1/users",
            json!({"email": "long@example.com", "password": too_long, "role": "viewer"}),
        )
        .await;
    assert_eq!(refused.status(), 422);
    assert_eq!(caller.get(ADMIN_TOKEN, "/v1/users").await.status(), 200);

    let admin = caller.login("admin@example.com", &admin_pw).await;
    secrets.add_tokens(&admin);
    let ops_first = caller.login("ops@example.com", &ops_pw).await;
    secrets.add_tokens(&ops_first);
    let ops_second = caller.refresh(&ops_first).await;
    secrets.add_tokens(&ops_second);
    let ops_third = caller.refresh(&ops_second).await;
    secrets.add_tokens(&ops_third);
    let viewer_tokens = caller.login("viewer@example.com", &viewer_pw).await;
    secrets.add_tokens(&viewer_tokens);

    // Wrong passwords, at login and at a password change.
    let wrong = password("wrong");
    secrets.add("password", &wrong);
    let failed = caller
        .post(
            None,
            "/v1/auth/login",
            json!({"email": "admin@example.com", "password": wrong}),
        )
        .await;
    assert_eq!(failed.status(), 401);
    let ops_new_pw = password("ops-new");
    secrets.add("password", &ops_new_pw);
    let refused = caller
        .post(
            Some(access(&ops_third)),
            "/v1/auth/password",
            json!({"current_password": wrong, "new_password": ops_new_pw}),
        )
        .await;
    assert_eq!(refused.status(), 403);
    let changed = caller
        .post(
            Some(access(&ops_third)),
            "/v1/auth/password",
            json!({"current_password": ops_pw, "new_password": ops_new_pw}),
        )
        .await;
    assert_eq!(changed.status(), 204);
    let ops_again = caller.login("ops@example.com", &ops_new_pw).await;
    secrets.add_tokens(&ops_again);

    // An admin sets a password, revokes tokens, disables; the bootstrap token issues a license.
    let viewer_new_pw = password("viewer-new");
    secrets.add("password", &viewer_new_pw);
    let set = caller
        .post(
            Some(access(&admin)),
            &format!("/v1/users/{viewer}/password"),
            json!({"password": viewer_new_pw}),
        )
        .await;
    assert_eq!(set.status(), 204);
    let viewer_again = caller.login("viewer@example.com", &viewer_new_pw).await;
    secrets.add_tokens(&viewer_again);
    let revoked = caller
        .post(
            Some(ADMIN_TOKEN),
            &format!("/v1/users/{ops}/revoke-tokens"),
            json!({}),
        )
        .await;
    assert_eq!(revoked.status(), 200);
    let logout = caller
        .post(
            None,
            "/v1/auth/logout",
            json!({"refresh_token": viewer_again["refresh_token"]}),
        )
        .await;
    assert_eq!(logout.status(), 204);
    for bearer in [ADMIN_TOKEN, access(&admin)] {
        let issued = caller
            .post(
                Some(bearer),
                "/v1/licenses",
                json!({"owner": "acme", "tier": "pro"}),
            )
            .await;
        assert_eq!(issued.status(), 201);
    }
    assert_eq!(
        caller.get(access(&admin), "/v1/auth/me").await.status(),
        200
    );

    // An API key: created, used (issues, and is looked up on every call), then revoked.
    let created: Value = caller
        .post(
            Some(access(&admin)),
            "/v1/api-keys",
            json!({"name": "ci", "scopes": ["licenses:write"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    secrets.add("api_key", &key);
    let issued = caller
        .post(
            Some(&key),
            "/v1/licenses",
            json!({"owner": "ci", "tier": "pro"}),
        )
        .await;
    assert_eq!(issued.status(), 201);
    let id = created["id"].as_str().unwrap();
    let revoked = caller
        .http
        .delete(format!("{}/v1/api-keys/{id}", caller.service.address))
        .bearer_auth(access(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let refused = caller
        .post(
            Some(&key),
            "/v1/licenses",
            json!({"owner": "ci", "tier": "pro"}),
        )
        .await;
    assert_eq!(refused.status(), 401);
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_appears_in_the_database_the_log_or_nats() {
    let database = TestDatabase::create().await;
    let stream = TestStream::create().await;
    let service = watched_service(&database, &stream).await;
    let caller = Caller {
        http: reqwest::Client::new(),
        service: &service,
    };
    let secrets = credentials_workload(&caller).await;

    let (_, messages) = published(&database, &stream).await;
    assert!(
        messages
            .iter()
            .any(|m| m.subject.ends_with("UserPasswordChanged")),
        "the user events reached NATS"
    );
    let nats: Vec<String> = messages
        .iter()
        .map(|m| {
            let headers = m
                .headers
                .iter()
                .flat_map(|(_, values)| values.iter().map(|v| v.as_str().to_owned()))
                .collect::<Vec<_>>()
                .join("\n");
            format!("{}\n{headers}", String::from_utf8_lossy(&m.payload))
        })
        .collect();

    let dump = Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", &database.name])
        .output()
        .unwrap();
    assert!(dump.status.success());
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(
        dump.contains("RefreshTokenRotated"),
        "the dump holds the log"
    );
    assert!(
        dump.contains("/v1/auth/password"),
        "the dump holds requests"
    );

    let log = service.log_text();
    assert!(log.contains("keyledger is serving"), "the log was captured");

    // The searches reach where the secrets' traces are: their hashes and redactions.
    let refresh = secrets
        .0
        .iter()
        .find(|(kind, _)| *kind == "refresh_token")
        .map(|(_, token)| token.as_str())
        .unwrap();
    assert!(
        dump.contains(&keyledger_command::auth::token_hash(refresh)),
        "refresh tokens are stored as their hashes"
    );
    assert!(
        dump.contains("[REDACTED]"),
        "request bodies are stored redacted"
    );
    assert!(log.contains("/v1/auth/password"), "requests are logged");
    assert!(secrets.0.len() > 20, "{} secrets", secrets.0.len());
    for (kind, secret) in &secrets.0 {
        assert!(!dump.contains(secret.as_str()), "a {kind} in the database");
        assert!(!log.contains(secret.as_str()), "a {kind} in the log output");
        assert!(
            nats.iter()
                .all(|message| !message.contains(secret.as_str())),
            "a {kind} on NATS"
        );
    }
    stream.delete().await;
}
