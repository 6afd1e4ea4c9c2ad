//! State as of an instant: a license folded from its stream up to a time.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, spawn_app};

async fn license_as_of(
    app: &TestApp,
    license_id: &str,
    at: chrono::DateTime<Utc>,
) -> reqwest::Response {
    app.get(&format!(
        "/v1/licenses/{license_id}?as_of={}",
        at.to_rfc3339_opts(SecondsFormat::Micros, true)
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_license_as_of_before_and_after_its_revoke() {
    let app = spawn_app().await;
    let before_issue = Utc::now();
    let issued = app.issue_license().await;
    let license_id = issued["license_id"].as_str().unwrap();
    let between = Utc::now();
    assert_eq!(app.revoke(license_id, "refund").await.status(), 200);
    let after = Utc::now();

    let then: Value = license_as_of(&app, license_id, between)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(then["status"], "active");
    assert_eq!(then["revoked_at"], Value::Null);
    assert_eq!(then["owner"], "acme");

    let now: Value = license_as_of(&app, license_id, after)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["status"], "revoked");
    assert_eq!(now["revoke_reason"], "refund");
    assert!(now["position"].as_i64().unwrap() > then["position"].as_i64().unwrap());

    let body = problem(license_as_of(&app, license_id, before_issue).await, 404).await;
    assert_eq!(body["code"], "RES_LICENSE_NOT_FOUND");
    let body = problem(
        app.get(&format!("/v1/licenses/{license_id}?as_of=yesterday"))
            .await,
        400,
    )
    .await;
    assert_eq!(body["code"], "VAL_INVALID_PARAMETER");
}

/// The fold behind `as_of` and the `licenses` projection are two readings of one history: at
/// the present they must agree field for field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_license_as_of_now_is_the_read_tables_license_after_a_whole_lifecycle() {
    let app = spawn_app().await;
    let issued = app
        .issue_license_with(json!({"owner": "globex", "tier": "basic", "valid_days": 30,
                                    "metadata": {"plan": "annual"}, "entitlements": ["beta"]}))
        .await;
    let id = issued["license_id"].as_str().unwrap();
    let steps = [
        ("/suspend", json!({"reason": "unpaid"})),
        ("/reinstate", json!({"reason": "paid"})),
        ("/renew", json!({"valid_days": 10})),
        (
            "/policy",
            json!({"entitlements": ["beta", "export"], "max_installations": 4}),
        ),
        ("/installations", json!({"installation_id": "host-1"})),
        ("/certificate", json!({})),
        ("/suspend", json!({"reason": "audit"})),
    ];
    let mut position = 0;
    for (path, body) in steps {
        let response = app.post(&format!("/v1/licenses/{id}{path}"), &body).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let body: Value = response.json().await.unwrap();
        position = position.max(body["position"].as_i64().unwrap_or(0));
    }
    let projected: Value = app
        .get_at(&format!("/v1/licenses/{id}"), position)
        .await
        .json()
        .await
        .unwrap();
    let folded: Value = license_as_of(&app, id, Utc::now())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(folded, projected);
    assert_eq!(folded["status"], "suspended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_as_of_an_instant_and_as_of_now_is_the_read_tables_session() {
    let app = spawn_app().await;
    let before = Utc::now();
    let created: Value = app
        .post(
            "/v1/sessions",
            &json!({"agent_role": "planner", "metadata": {"a": 1}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = created["session_id"].as_str().unwrap();
    let transition = |to: &'static str| {
        let app = &app;
        async move {
            let response = app
                .post(
                    &format!("/v1/sessions/{id}/transition"),
                    &json!({"to": to, "reason": format!("to {to}")}),
                )
                .await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    transition("active").await;
    let between = Utc::now();
    let response = app
        .http
        .patch(app.url(&format!("/v1/sessions/{id}")))
        .json(&json!({"metadata": {"b": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let done = transition("completed").await;

    let session_at = |at: chrono::DateTime<Utc>| {
        let path = format!(
            "/v1/sessions/{id}?as_of={}",
            at.to_rfc3339_opts(SecondsFormat::Micros, true)
        );
        let app = &app;
        async move { app.get(&path).await }
    };
    let then: Value = session_at(between).await.json().await.unwrap();
    assert_eq!(then["status"], "active");
    assert_eq!(then["metadata"], json!({"a": 1}));
    assert_eq!(then["history"].as_array().unwrap().len(), 1);

    let projected: Value = app
        .get_at(
            &format!("/v1/sessions/{id}"),
            done["position"].as_i64().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    let folded: Value = session_at(Utc::now()).await.json().await.unwrap();
    assert_eq!(folded, projected);
    assert_eq!(folded["status"], "completed");

    let body = problem(session_at(before).await, 404).await;
    assert_eq!(body["code"], "RES_SESSION_NOT_FOUND");
}
