//! Bad input gets a 4xx problem+json with a stable code, and nothing is appended.

use serde_json::json;

use crate::helpers::{problem, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_issue_requests_are_rejected_with_a_code_and_append_nothing() {
    let app = spawn_app().await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", r#"{"owner": "acme", "tier": "#.into(), 400, "VAL_MALFORMED_JSON"),
        ("not JSON at all", "owner=acme".into(), 400, "VAL_MALFORMED_JSON"),
        ("unknown field", json!({"owner": "a", "tier": "pro", "colour": "red"}).to_string(), 422, "VAL_INVALID_BODY"),
        ("wrong type", json!({"owner": 42, "tier": "pro"}).to_string(), 422, "VAL_INVALID_BODY"),
        ("missing field", json!({"tier": "pro"}).to_string(), 422, "VAL_INVALID_BODY"),
        ("unknown tier", json!({"owner": "a", "tier": "platinum"}).to_string(), 422, "VAL_INVALID_BODY"),
        ("empty owner", json!({"owner": "   ", "tier": "pro"}).to_string(), 422, "VAL_INVALID_FIELD"),
        ("negative valid_days", json!({"owner": "a", "tier": "pro", "valid_days": -5}).to_string(), 422, "VAL_INVALID_BODY"),
        ("zero valid_days", json!({"owner": "a", "tier": "pro", "valid_days": 0}).to_string(), 422, "VAL_INVALID_FIELD"),
        ("past expires_at", json!({"owner": "a", "tier": "pro", "expires_at": "2001-01-01T00:00:00Z"}).to_string(), 422, "VAL_INVALID_FIELD"),
        ("both expiries", json!({"owner": "a", "tier": "pro", "valid_days": 3, "expires_at": "2099-01-01T00:00:00Z"}).to_string(), 422, "VAL_INVALID_FIELD"),
        ("metadata not an object", json!({"owner": "a", "tier": "pro", "metadata": [1]}).to_string(), 422, "VAL_INVALID_FIELD"),
        ("metadata over 16 KiB", json!({"owner": "a", "tier": "pro", "metadata": {"x": "y".repeat(20_000)}}).to_string(), 422, "VAL_INVALID_FIELD"),
        ("oversized body", json!({"owner": "a", "tier": "pro", "metadata": {"x": "y".repeat(100_000)}}).to_string(), 413, "VAL_BODY_TOO_LARGE"),
    ];
    for (what, body, status, code) in cases {
        let response = app
            .http
            .post(app.url("/v1/licenses"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let problem = problem(response, status).await;
        assert_eq!(problem["code"], code, "{what}: {problem}");
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{what}");
    }

    let response = app
        .http
        .post(app.url("/v1/licenses"))
        .header("content-type", "text/plain")
        .body(json!({"owner": "a", "tier": "pro"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(response, 415).await["code"],
        "VAL_UNSUPPORTED_MEDIA_TYPE"
    );

    assert_eq!(
        app.event_count().await,
        0,
        "no rejected command appended anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_validate_and_revoke_requests_are_rejected_and_append_nothing() {
    let app = spawn_app().await;
    let licenses = app.licenses();
    let issued = app.issue_license().await;
    let key = issued.key.as_str();
    let before = app.event_count().await;

    let cases = vec![
        (json!({}), "VAL_INVALID_BODY"),
        (json!({"key": 7}), "VAL_INVALID_BODY"),
        (json!({"key": key, "feature": ""}), "VAL_INVALID_FIELD"),
        (json!({"key": key, "metadata": "x"}), "VAL_INVALID_FIELD"),
        (json!({"key": key, "extra": 1}), "VAL_INVALID_BODY"),
    ];
    for (body, code) in cases {
        let problem = problem(licenses.try_validate(&body).await, 422).await;
        assert_eq!(problem["code"], code, "{body}");
    }
    for (body, code) in [
        (json!({"reason": ""}), "VAL_INVALID_FIELD"),
        (json!({}), "VAL_INVALID_BODY"),
        (json!({"reason": "x", "force": true}), "VAL_INVALID_BODY"),
    ] {
        let refused = licenses.command(issued.license_id, "revoke", &body).await;
        let problem = problem(refused, 422).await;
        assert_eq!(problem["code"], code, "{body}");
    }
    assert_eq!(app.event_count().await, before);
    assert_eq!(app.validate(key).await.code, "VALID");
}
