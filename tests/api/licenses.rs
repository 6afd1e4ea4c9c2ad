//! Issuing, validating and revoking licenses, and reading them back.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{problem, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_license_validates_and_its_view_never_shows_the_key() {
    let app = spawn_app().await;

    let issued = app.issue_license().await;
    let key = issued["key"].as_str().unwrap();
    let id = issued["license_id"].as_str().unwrap();
    assert!(key.starts_with("lic_"));
    assert!(key.starts_with(issued["key_prefix"].as_str().unwrap()));
    assert_eq!(issued["status"], "active");
    assert_eq!(issued["tier"], "pro");

    let validation = app.validate(key).await;
    assert_eq!(validation["valid"], true);
    assert_eq!(validation["code"], "VALID");
    assert_eq!(validation["license_id"], id);
    assert_eq!(validation["tier"], "pro");

    let view: Value = app
        .get_at(
            &format!("/v1/licenses/{id}"),
            issued["position"].as_i64().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["owner"], "acme");
    assert_eq!(view["key_prefix"], issued["key_prefix"]);
    assert!(view.get("key").is_none());
    assert!(!view.to_string().contains(key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_sent_after_the_revoke_response_sees_revoked() {
    let app = spawn_app().await;
    for _ in 0..10 {
        let issued = app.issue_license().await;
        let id = issued["license_id"].as_str().unwrap();

        let revoke = app.revoke(id, "chargeback").await;
        assert_eq!(revoke.status(), 200);

        let validation = app.validate(issued["key"].as_str().unwrap()).await;
        assert_eq!(validation["valid"], false);
        assert_eq!(validation["code"], "REVOKED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_revokes_of_one_license_succeed_exactly_once() {
    let app = spawn_app().await;
    let issued = app.issue_license().await;
    let id = issued["license_id"].as_str().unwrap().to_owned();

    let revokes = (0..20).map(|i| app.revoke(&id, if i % 2 == 0 { "even" } else { "odd" }));
    let responses = futures::future::join_all(revokes).await;

    let mut ok = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => ok += 1,
            409 => assert_eq!(problem(response, 409).await["code"], "BIZ_LICENSE_REVOKED"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(
        app.events_of_type(&format!("license-{id}"), "LicenseRevoked")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_answers_not_found_malformed_and_expired() {
    let app = spawn_app().await;
    let issued = app
        .issue_license_with(json!({"owner": "acme", "tier": "basic", "valid_days": 1}))
        .await;
    let key = issued["key"].as_str().unwrap();

    // A well-formed key nobody was issued: swap the random part for another key's.
    let other = keyledger_command::license::key::LicenseKey::generate().unwrap();
    assert_eq!(app.validate(other.expose()).await["code"], "NOT_FOUND");

    let typo = format!(
        "{}{}",
        &key[..key.len() - 1],
        if key.ends_with('z') { 'y' } else { 'z' }
    );
    let before = app.event_count().await;
    let malformed = app.validate(&typo).await;
    assert_eq!(malformed["code"], "MALFORMED_KEY");
    assert_eq!(malformed["valid"], false);
    assert_eq!(
        app.event_count().await,
        before,
        "a malformed key records nothing"
    );

    app.clock.advance(chrono::Duration::days(2));
    let expired = app.validate(key).await;
    assert_eq!(expired["code"], "EXPIRED");
    assert_eq!(expired["valid"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_lists_validations_newest_first_in_pages_outside_the_license_stream() {
    let app = spawn_app().await;
    let issued = app.issue_license().await;
    let key = issued["key"].as_str().unwrap();
    let id = issued["license_id"].as_str().unwrap();
    let mut positions = Vec::new();
    for _ in 0..5 {
        positions.push(app.validate(key).await["position"].as_i64().unwrap());
    }
    let last = *positions.last().unwrap();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/licenses/{id}/usage?limit=2&cursor={c}"),
            None => format!("/v1/licenses/{id}/usage?limit=2"),
        };
        let page: Value = app.get_at(&path, last).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["code"], "VALID");
            seen.push(item["position"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    positions.reverse();
    assert_eq!(seen, positions);

    // Usage lives in its own stream: the license's stream holds only its issuance.
    let stream: Value = app
        .get(&format!("/v1/streams/license-{id}/events"))
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = stream["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["LicenseIssued"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_licenses_are_404_and_malformed_ids_400() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::new_v4();

    let body = problem(app.get(&format!("/v1/licenses/{unknown}")).await, 404).await;
    assert_eq!(body["code"], "RES_LICENSE_NOT_FOUND");
    let body = problem(app.revoke(&unknown.to_string(), "x").await, 404).await;
    assert_eq!(body["code"], "RES_LICENSE_NOT_FOUND");
    let body = problem(app.get(&format!("/v1/licenses/{unknown}/usage")).await, 404).await;
    assert_eq!(body["code"], "RES_LICENSE_NOT_FOUND");
    let body = problem(app.get("/v1/licenses/not-a-uuid").await, 400).await;
    assert_eq!(body["code"], "VAL_INVALID_PARAMETER");
    let body = problem(app.get("/v1/nothing-here").await, 404).await;
    assert_eq!(body["code"], "RES_NOT_FOUND");
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_echoed_and_becomes_the_events_correlation_id() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/v1/licenses"))
        .header("x-request-id", "req-abc-123")
        .json(&json!({"owner": "acme", "tier": "free"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-abc-123");
    let issued: Value = response.json().await.unwrap();

    let stream: Value = app
        .get(&format!(
            "/v1/streams/license-{}/events",
            issued["license_id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        stream["events"][0]["metadata"]["correlation_id"],
        "req-abc-123"
    );
    assert_eq!(
        stream["events"][0]["metadata"]["causation_id"],
        "req-abc-123"
    );
    assert_eq!(stream["events"][0]["metadata"]["actor"], "admin_token");

    // Without one, the service makes one up and still echoes it.
    let response = app.get("/health/live").await;
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_stream_pages_through_every_event_in_position_order() {
    // Without the request log, the log holds exactly the seven issuances.
    let app = spawn_app_with(|args| args.request_log_enabled = false).await;
    for _ in 0..7 {
        app.issue_license().await;
    }
    let mut after = 0;
    let mut positions = Vec::new();
    loop {
        let page: Value = app
            .get(&format!("/v1/events?after={after}&limit=3"))
            .await
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            assert_eq!(page["next_after"], after);
            break;
        }
        positions.extend(events.iter().map(|e| e["position"].as_i64().unwrap()));
        after = page["next_after"].as_i64().unwrap();
    }
    assert_eq!(positions, (1..=7).collect::<Vec<_>>());
    let unique: HashSet<_> = positions.iter().collect();
    assert_eq!(unique.len(), 7);

    let body = problem(app.get("/v1/events?limit=5000").await, 400).await;
    assert_eq!(body["code"], "VAL_INVALID_PARAMETER");
}
