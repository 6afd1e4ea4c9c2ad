//! State as of an instant: a license folded from its stream up to a time.

use chrono::Utc;
use serde_json::{Value, json};

use crate::helpers::{
    License, NewLicense, NewSession, SessionDetail, Transitioned, expect, instant, problem,
    spawn_app,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_license_as_of_before_and_after_its_revoke() {
    let app = spawn_app().await;
    let before_issue = Utc::now();
    let licenses = app.licenses();
    let license_id = app.issue_license().await.license_id;
    let between = Utc::now();
    app.revoke(license_id, "refund").await;
    let after = Utc::now();
    let as_of = |at| {
        let licenses = &licenses;
        async move { licenses.try_get_as_of(license_id, &instant(at)).await }
    };

    let then: License = as_of(between).await.json().await.unwrap();
    assert_eq!(then.status, "active");
    assert_eq!(then.revoked_at, None);
    assert_eq!(then.owner, "acme");

    let now: License = as_of(after).await.json().await.unwrap();
    assert_eq!(now.status, "revoked");
    assert_eq!(now.revoke_reason.as_deref(), Some("refund"));
    assert!(now.position > then.position);

    let body = problem(as_of(before_issue).await, 404).await;
    assert_eq!(body["code"], "RES_LICENSE_NOT_FOUND");
    let body = problem(licenses.try_get_as_of(license_id, "yesterday").await, 400).await;
    assert_eq!(body["code"], "VAL_INVALID_PARAMETER");
}

/// The fold behind `as_of` and the `licenses` projection are two readings of one history: at
/// the present they must agree field for field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_license_as_of_now_is_the_read_tables_license_after_a_whole_lifecycle() {
    let app = spawn_app().await;
    let licenses = app.licenses();
    let issued = app
        .issue_license_with(
            NewLicense::new("globex", "basic")
                .valid_days(30)
                .metadata(json!({"plan": "annual"}))
                .entitlements(&["beta"]),
        )
        .await;
    let id = issued.license_id;
    let steps = [
        ("suspend", json!({"reason": "unpaid"})),
        ("reinstate", json!({"reason": "paid"})),
        ("renew", json!({"valid_days": 10})),
        (
            "policy",
            json!({"entitlements": ["beta", "export"], "max_installations": 4}),
        ),
        ("installations", json!({"installation_id": "host-1"})),
        ("certificate", json!({})),
        ("suspend", json!({"reason": "audit"})),
    ];
    let mut position = 0;
    for (action, body) in steps {
        let response = licenses.command(id, action, &body).await;
        assert!(
            response.status().is_success(),
            "{action}: {}",
            response.status()
        );
        let body: Value = response.json().await.unwrap();
        position = position.max(body["position"].as_i64().unwrap_or(0));
    }
    let projected: Value = app
        .api()
        .at(position)
        .licenses()
        .try_get(id)
        .await
        .json()
        .await
        .unwrap();
    let folded: Value = licenses
        .try_get_as_of(id, &instant(Utc::now()))
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
    let sessions = app.sessions();
    let created = sessions
        .create(&NewSession::new("planner").metadata(json!({"a": 1})))
        .await;
    let id = created.session_id;
    let transition = |to: &'static str| {
        let sessions = &sessions;
        async move {
            let response = sessions
                .try_transition_with(id, &json!({"to": to, "reason": format!("to {to}")}))
                .await;
            expect::<Transitioned>(response, 200, "a transition").await
        }
    };
    transition("active").await;
    let between = Utc::now();
    sessions.update(id, &json!({"metadata": {"b": 2}})).await;
    let done = transition("completed").await;

    let session_at = |at| {
        let sessions = &sessions;
        async move { sessions.try_get_as_of(id, &instant(at)).await }
    };
    let then: SessionDetail = session_at(between).await.json().await.unwrap();
    assert_eq!(then.session.status, "active");
    assert_eq!(then.session.metadata, json!({"a": 1}));
    assert_eq!(then.history.len(), 1);

    let projected: Value = app
        .api()
        .at(done.position)
        .sessions()
        .try_get(id)
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
