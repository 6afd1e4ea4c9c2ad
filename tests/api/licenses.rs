//! Issuing, validating and revoking licenses, and reading them back.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{Issued, NewLicense, problem, query, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_license_validates_and_its_view_never_shows_the_key() {
    let app = spawn_app().await;

    // The answer that shows the key is never cached.
    let response = app
        .licenses()
        .try_issue(&NewLicense::new("acme", "pro"))
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");

    let issued = app.issue_license().await;
    let key = issued.key.as_str();
    assert!(key.starts_with("lic_"));
    assert!(key.starts_with(&issued.key_prefix));
    assert_eq!(issued.status, "active");
    assert_eq!(issued.tier, "pro");

    let validation = app.validate(key).await;
    assert!(validation.valid);
    assert_eq!(validation.code, "VALID");
    assert_eq!(validation.license_id, Some(issued.license_id));
    assert_eq!(validation.tier.as_deref(), Some("pro"));

    let view: Value = app
        .api()
        .at(issued.position)
        .licenses()
        .try_get(issued.license_id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["owner"], "acme");
    assert_eq!(view["key_prefix"], issued.key_prefix);
    assert!(view.get("key").is_none());
    assert!(!view.to_string().contains(key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_sent_after_the_revoke_response_sees_revoked() {
    let app = spawn_app().await;
    for _ in 0..10 {
        let issued = app.issue_license().await;

        let revoked = app.revoke(issued.license_id, "chargeback").await;
        assert_eq!(revoked.status, "revoked");

        let validation = app.validate(&issued.key).await;
        assert!(!validation.valid);
        assert_eq!(validation.code, "REVOKED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_revokes_of_one_license_succeed_exactly_once() {
    let app = spawn_app().await;
    let id = app.issue_license().await.license_id;

    let revokes = (0..20).map(|i| app.try_revoke(id, if i % 2 == 0 { "even" } else { "odd" }));
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
        .issue_license_with(NewLicense::new("acme", "basic").valid_days(1))
        .await;
    let key = issued.key.as_str();

    // A well-formed key nobody was issued: swap the random part for another key's.
    let other = keyledger_command::license::key::LicenseKey::generate().unwrap();
    assert_eq!(app.validate(other.expose()).await.code, "NOT_FOUND");

    let typo = format!(
        "{}{}",
        &key[..key.len() - 1],
        if key.ends_with('z') { 'y' } else { 'z' }
    );
    let before = app.event_count().await;
    let malformed = app.validate(&typo).await;
    assert_eq!(malformed.code, "MALFORMED_KEY");
    assert!(!malformed.valid);
    assert_eq!(
        app.event_count().await,
        before,
        "a malformed key records nothing"
    );

    app.clock.advance(chrono::Duration::days(2));
    let expired = app.validate(key).await;
    assert_eq!(expired.code, "EXPIRED");
    assert!(!expired.valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_lists_validations_newest_first_in_pages_outside_the_license_stream() {
    let app = spawn_app().await;
    let issued = app.issue_license().await;
    let id = issued.license_id;
    let mut positions = Vec::new();
    for _ in 0..5 {
        positions.push(app.validate(&issued.key).await.position.unwrap());
    }
    let last = *positions.last().unwrap();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = app
            .api()
            .at(last)
            .licenses()
            .usage(
                id,
                &query(&[("limit", Some("2".into())), ("cursor", cursor.clone())]),
            )
            .await;
        for item in page.items {
            assert_eq!(item.code, "VALID");
            seen.push(item.position);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    positions.reverse();
    assert_eq!(seen, positions);

    // Usage lives in its own stream: the license's stream holds only its issuance.
    let stream = app.log().stream(&format!("license-{id}")).await;
    assert_eq!(stream.types(), ["LicenseIssued"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_licenses_are_404_and_malformed_ids_400() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::new_v4();

    let licenses = app.licenses();

    let body = problem(licenses.try_get(unknown).await, 404).await;
    assert_eq!(body["code"], "RES_LICENSE_NOT_FOUND");
    let body = problem(licenses.try_revoke(unknown, "x").await, 404).await;
    assert_eq!(body["code"], "RES_LICENSE_NOT_FOUND");
    let body = problem(licenses.try_usage(unknown, "").await, 404).await;
    assert_eq!(body["code"], "RES_LICENSE_NOT_FOUND");
    let body = problem(licenses.try_get("not-a-uuid").await, 400).await;
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
    let issued: Issued = response.json().await.unwrap();

    let stream = app
        .log()
        .stream(&format!("license-{}", issued.license_id))
        .await;
    let metadata = &stream.events[0].metadata;
    assert_eq!(metadata["correlation_id"], "req-abc-123");
    assert_eq!(metadata["causation_id"], "req-abc-123");
    assert_eq!(metadata["actor"], "admin_token");

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
        let page = app.log().page(after, 3).await;
        if page.events.is_empty() {
            assert_eq!(page.next_after, after);
            break;
        }
        positions.extend(page.events.iter().map(|e| e.position));
        after = page.next_after;
    }
    assert_eq!(positions, (1..=7).collect::<Vec<_>>());
    let unique: HashSet<_> = positions.iter().collect();
    assert_eq!(unique.len(), 7);

    let body = problem(app.get("/v1/events?limit=5000").await, 400).await;
    assert_eq!(body["code"], "VAL_INVALID_PARAMETER");
}
