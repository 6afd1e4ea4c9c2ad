//! Idempotency-Key: a repeat gets the stored response byte for byte and appends nothing.

use std::time::Duration;

use reqwest::Response;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{
    Issued, Licenses, NewLicense, ServiceProcess, TestApp, TestDatabase, Validate, Validation,
    eventually, expect, problem, spawn_app, spawn_app_with,
};

/// The calls of the bootstrap admin, each with `Idempotency-Key: key`.
fn keyed<'a>(app: &'a TestApp, key: &str) -> Licenses<'a> {
    app.api().idempotency_key(key).licenses()
}

fn replayed(response: &Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_issue_returns_the_stored_response_without_the_key_and_appends_nothing() {
    let app = spawn_app().await;
    let body = NewLicense::new("acme", "pro");

    let first = keyed(&app, "order-1").try_issue(&body).await;
    assert_eq!(first.status(), 201);
    assert!(!replayed(&first));
    let first: Value = first.json().await.unwrap();
    assert!(first["key"].as_str().unwrap().starts_with("lic_"));
    let events = app.event_count().await;

    let again = keyed(&app, "order-1").try_issue(&body).await;
    assert_eq!(again.status(), 201);
    assert!(replayed(&again));
    let again: Value = again.json().await.unwrap();
    let mut without_key = first.clone();
    without_key.as_object_mut().unwrap().remove("key");
    assert_eq!(
        again, without_key,
        "the same license, the key shown only once"
    );
    assert_eq!(
        app.event_count().await,
        events,
        "the repeat appended nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_issues_create_one_license() {
    let app = spawn_app().await;
    let body = NewLicense::new("acme", "enterprise").metadata(json!({"order": 7}));
    let licenses = keyed(&app, "burst");
    let requests = (0..50).map(|_| licenses.try_issue(&body));
    let responses = futures::future::join_all(requests).await;

    let mut bodies = Vec::new();
    for response in responses {
        assert_eq!(response.status(), 201);
        bodies.push(response.text().await.unwrap());
    }
    let with_key: Vec<&String> = bodies.iter().filter(|b| b.contains("\"key\":")).collect();
    assert_eq!(with_key.len(), 1, "only the request that ran shows the key");
    let replays: Vec<&String> = bodies.iter().filter(|b| !b.contains("\"key\":")).collect();
    assert_eq!(replays.len(), 49);
    assert!(
        replays.iter().all(|b| *b == replays[0]),
        "every replay is byte for byte the same"
    );
    let first: Value = serde_json::from_str(with_key[0]).unwrap();
    let replay: Value = serde_json::from_str(replays[0]).unwrap();
    assert_eq!(first["license_id"], replay["license_id"]);

    assert_eq!(app.count_of("LicenseIssued").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_with_another_body_is_422() {
    let app = spawn_app().await;
    let first = keyed(&app, "k1")
        .try_issue(&NewLicense::new("a", "pro"))
        .await;
    assert_eq!(first.status(), 201);
    let events = app.event_count().await;
    let other = keyed(&app, "k1")
        .try_issue(&NewLicense::new("b", "pro"))
        .await;
    assert_eq!(
        problem(other, 422).await["code"],
        "VAL_IDEMPOTENCY_KEY_REUSED"
    );
    // Member order and whitespace do not make a different body.
    let reordered = app
        .http
        .post(app.url("/v1/licenses"))
        .header("idempotency-key", "k1")
        .header("content-type", "application/json")
        .body(r#"{ "tier": "pro",  "owner": "a" }"#)
        .send()
        .await
        .unwrap();
    assert!(replayed(&reordered));
    assert_eq!(app.event_count().await, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_refusal_is_stored_and_replayed() {
    let app = spawn_app().await;
    let id = app.issue_license().await.license_id;
    app.revoke(id, "first").await;
    let events = app.event_count().await;

    let refused = keyed(&app, "again").try_revoke(id, "second").await;
    assert!(!replayed(&refused));
    let refused_text = refused.text().await.unwrap();
    assert!(refused_text.contains("BIZ_LICENSE_REVOKED"));

    let repeat = keyed(&app, "again").try_revoke(id, "second").await;
    assert_eq!(repeat.status(), 409);
    assert!(replayed(&repeat));
    assert_eq!(repeat.text().await.unwrap(), refused_text, "byte for byte");
    assert_eq!(app.event_count().await, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_fails_validation_stores_nothing_and_may_be_retried() {
    let app = spawn_app().await;
    let bad = keyed(&app, "retry-me")
        .try_issue(&NewLicense::new("", "pro"))
        .await;
    assert_eq!(problem(bad, 422).await["code"], "VAL_INVALID_FIELD");
    let good = keyed(&app, "retry-me")
        .try_issue(&NewLicense::new("fixed", "pro"))
        .await;
    assert_eq!(good.status(), 201);
    assert!(!replayed(&good));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_keys_are_400_and_nothing_is_appended() {
    let app = spawn_app().await;
    for key in [
        "x".repeat(256),
        "with space".to_owned(),
        "tab\tkey".to_owned(),
    ] {
        let response = keyed(&app, &key)
            .try_issue(&NewLicense::new("a", "pro"))
            .await;
        assert_eq!(
            problem(response, 400).await["code"],
            "VAL_INVALID_IDEMPOTENCY_KEY",
            "{key:?}"
        );
    }
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_while_the_first_request_runs_is_409() {
    let app = spawn_app().await;
    let body = json!({"owner": "a", "tier": "pro"});
    // The first request is running elsewhere: its claim is in the table, not completed.
    let fingerprint = hex::encode(Sha256::digest(keyledger_events::chain::canonical_json(
        &body,
    )));
    let client = app.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, status, token, locked_until, expires_at) \
             VALUES ('admin_token POST /v1/licenses', 'busy', $1, 'in_flight', gen_random_uuid(), \
                     now() + interval '1 hour', now() + interval '1 day')",
            &[&fingerprint],
        )
        .await
        .unwrap();
    let response = keyed(&app, "busy").try_issue(&body).await;
    assert_eq!(
        problem(response, 409).await["code"],
        "BIZ_IDEMPOTENCY_IN_FLIGHT"
    );
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_restart_returns_the_stored_response() {
    let database = TestDatabase::create().await;
    let http = crate::helpers::admin_client();
    let body = json!({"owner": "durable", "tier": "basic"});
    let first: Value = {
        let mut service = ServiceProcess::start(&database.url, &[]).await;
        let response = http
            .post(format!("{}/v1/licenses", service.address))
            .header("idempotency-key", "survives")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let first = response.json().await.unwrap();
        service.kill_9();
        first
    };
    let service = ServiceProcess::start(&database.url, &[]).await;
    let response = http
        .post(format!("{}/v1/licenses", service.address))
        .header("idempotency-key", "survives")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let replay: Value = response.json().await.unwrap();
    assert_eq!(replay["license_id"], first["license_id"]);
    assert_eq!(replay["position"], first["position"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_purged_and_may_be_used_again() {
    let app = spawn_app_with(|args| {
        args.idempotency_ttl = Duration::from_secs(1);
        args.idempotency_purge_interval = Duration::from_millis(100);
    })
    .await;
    let first = keyed(&app, "short-lived")
        .try_issue(&NewLicense::new("a", "pro"))
        .await;
    assert_eq!(first.status(), 201);
    let client = app.pool.get().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the purge of the expired key",
        || {
            let client = &client;
            async move {
                let left: i64 = client
                    .query_one("SELECT count(*) FROM idempotency_keys", &[])
                    .await
                    .unwrap()
                    .get(0);
                (left == 0).then_some(())
            }
        },
    )
    .await;
    let second = keyed(&app, "short-lived")
        .try_issue(&NewLicense::new("b", "pro"))
        .await;
    assert_eq!(second.status(), 201);
    assert!(!replayed(&second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_scoped_to_its_route() {
    let app = spawn_app().await;
    let issued = keyed(&app, "shared")
        .try_issue(&NewLicense::new("a", "pro"))
        .await;
    let issued: Issued = issued.json().await.unwrap();
    let validated = keyed(&app, "shared")
        .try_validate(&Validate::key(&issued.key))
        .await;
    assert!(!replayed(&validated));
    let validated: Validation = expect(validated, 200, "validating").await;
    assert_eq!(validated.code, "VALID");
}
