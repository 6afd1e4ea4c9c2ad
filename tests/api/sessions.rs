//! Agent sessions: the state machine over HTTP, updates, lists, and the retention job.

use std::time::Duration;

use keyledger_events::session::SessionStatus;
use keyledger_events::{Notifier, PgEventStore, WriterConfig};
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, spawn_app};

async fn create(app: &TestApp, body: Value) -> Value {
    let response = app.post("/v1/sessions", &body).await;
    assert_eq!(response.status(), 201, "{body}");
    response.json().await.unwrap()
}

async fn transition(app: &TestApp, id: &str, to: &str) -> reqwest::Response {
    app.post(
        &format!("/v1/sessions/{id}/transition"),
        &json!({"to": to, "reason": "test"}),
    )
    .await
}

/// A new session brought to `status` through allowed transitions.
async fn session_in(app: &TestApp, status: SessionStatus) -> String {
    let created = create(app, json!({"agent_role": "reviewer"})).await;
    let id = created["session_id"].as_str().unwrap().to_owned();
    let path: &[&str] = match status {
        SessionStatus::Pending => &[],
        SessionStatus::Active => &["active"],
        SessionStatus::Completed => &["active", "completed"],
        SessionStatus::Failed => &["active", "failed"],
        SessionStatus::Expired => &["expired"],
    };
    for step in path {
        assert_eq!(transition(app, &id, step).await.status(), 200);
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_session_is_pending_and_readable_with_its_history() {
    let app = spawn_app().await;
    let task = uuid::Uuid::new_v4();
    let created = create(
        &app,
        json!({"agent_role": "planner", "task_id": task, "metadata": {"repo": "x"}}),
    )
    .await;
    assert_eq!(created["status"], "pending");
    assert_eq!(created["agent_role"], "planner");
    assert_eq!(created["task_id"], task.to_string());
    let id = created["session_id"].as_str().unwrap();

    let moved: Value = transition(&app, id, "active").await.json().await.unwrap();
    assert_eq!(moved["status"], "active");
    let detail: Value = app
        .get_at(
            &format!("/v1/sessions/{id}"),
            moved["position"].as_i64().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["status"], "active");
    assert_eq!(detail["metadata"], json!({"repo": "x"}));
    let history = detail["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["from"], "pending");
    assert_eq!(history[0]["to"], "active");
    assert_eq!(history[0]["reason"], "test");
    assert_eq!(history[0]["actor"], "admin_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_pair_is_allowed_or_refused_with_nothing_appended() {
    let app = spawn_app().await;
    let allowed = [
        ("pending", "active"),
        ("pending", "expired"),
        ("active", "completed"),
        ("active", "failed"),
        ("active", "expired"),
    ];
    for from in SessionStatus::ALL {
        for to in SessionStatus::ALL {
            let id = session_in(&app, from).await;
            let before = app.event_count().await;
            let response = transition(&app, &id, to.as_str()).await;
            if allowed.contains(&(from.as_str(), to.as_str())) {
                assert_eq!(response.status(), 200, "{from:?} → {to:?}");
                assert_eq!(app.event_count().await, before + 1);
            } else {
                let body = problem(response, 409).await;
                assert_eq!(body["code"], "BIZ_INVALID_TRANSITION", "{from:?} → {to:?}");
                assert_eq!(body["current_status"], from.as_str());
                let detail = body["detail"].as_str().unwrap();
                assert!(detail.contains(from.as_str()), "{detail}");
                let targets: Vec<&str> =
                    from.allowed_targets().iter().map(|s| s.as_str()).collect();
                assert_eq!(body["allowed"], json!(targets));
                for target in targets {
                    assert!(detail.contains(target), "{detail} names {target}");
                }
                assert_eq!(
                    app.event_count().await,
                    before,
                    "{from:?} → {to:?} appended nothing"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_activations_succeed_once() {
    let app = spawn_app().await;
    let id = session_in(&app, SessionStatus::Pending).await;
    let responses =
        futures::future::join_all((0..50).map(|_| transition(&app, &id, "active"))).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let refused = responses.iter().filter(|r| r.status() == 409).count();
    assert_eq!((ok, refused), (1, 49));
    assert_eq!(
        app.events_of_type(&format!("session-{id}"), "SessionTransitioned")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_transition_with_an_idempotency_key_replays_the_same_refusal() {
    let app = spawn_app().await;
    let id = session_in(&app, SessionStatus::Pending).await;
    let send = || {
        app.http
            .post(app.url(&format!("/v1/sessions/{id}/transition")))
            .header("idempotency-key", "finish-it")
            .json(&json!({"to": "completed"}))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 409);
    let first = first.text().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_merges_metadata_and_a_closed_session_refuses_changes() {
    let app = spawn_app().await;
    let created = create(
        &app,
        json!({"agent_role": "r", "metadata": {"a": 1, "b": {"c": 2, "d": 3}}}),
    )
    .await;
    let id = created["session_id"].as_str().unwrap();
    let task = uuid::Uuid::new_v4();
    let response = app
        .http
        .patch(app.url(&format!("/v1/sessions/{id}")))
        .json(&json!({"task_id": task, "metadata": {"a": null, "b": {"d": 4}, "e": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(
        patched["metadata"],
        json!({"b": {"c": 2, "d": 4}, "e": true})
    );
    assert_eq!(patched["task_id"], task.to_string());
    assert_eq!(patched["status"], "pending");

    assert_eq!(transition(&app, id, "expired").await.status(), 200);
    let before = app.event_count().await;
    let response = app
        .http
        .patch(app.url(&format!("/v1/sessions/{id}")))
        .json(&json!({"metadata": {"late": 1}}))
        .send()
        .await
        .unwrap();
    let body = problem(response, 409).await;
    assert_eq!(body["code"], "BIZ_SESSION_TERMINAL");
    assert_eq!(app.event_count().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_filters_by_status_and_role_newest_first_with_pages() {
    let app = spawn_app().await;
    let mut active = Vec::new();
    for n in 0..5 {
        let role = if n % 2 == 0 { "builder" } else { "reviewer" };
        let created = create(&app, json!({"agent_role": role})).await;
        let id = created["session_id"].as_str().unwrap().to_owned();
        if n < 3 {
            assert_eq!(transition(&app, &id, "active").await.status(), 200);
            active.push(id);
        }
    }
    let head = app.head().await;
    let page: Value = app
        .get_at("/v1/sessions?status=active", head)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 3);
    assert_eq!(page["page"], 1);
    assert_eq!(page["page_size"], 20);
    let ids: Vec<&str> = page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    active.reverse();
    assert_eq!(ids, active, "newest first");

    let page: Value = app
        .get_at("/v1/sessions?agent_role=builder&page=2&page_size=2", head)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 3);
    assert_eq!(page["sessions"].as_array().unwrap().len(), 1);
    let page: Value = app.get_at("/v1/sessions", head).await.json().await.unwrap();
    assert_eq!(page["total"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_input_is_rejected_and_appends_nothing() {
    let app = spawn_app().await;
    let id = session_in(&app, SessionStatus::Pending).await;
    let before = app.event_count().await;
    let cases = vec![
        (
            "/v1/sessions",
            json!({"agent_role": ""}),
            422,
            "VAL_INVALID_FIELD",
        ),
        (
            "/v1/sessions",
            json!({"agent_role": "x".repeat(65)}),
            422,
            "VAL_INVALID_FIELD",
        ),
        (
            "/v1/sessions",
            json!({"agent_role": "r", "task_id": "not-a-uuid"}),
            422,
            "VAL_INVALID_BODY",
        ),
        (
            "/v1/sessions",
            json!({"agent_role": "r", "metadata": "text"}),
            422,
            "VAL_INVALID_FIELD",
        ),
        (
            "/v1/sessions",
            json!({"agent_role": "r", "metadata": {"x": "y".repeat(17_000)}}),
            422,
            "VAL_INVALID_FIELD",
        ),
        (
            "/v1/sessions",
            json!({"agent_role": "r", "colour": 1}),
            422,
            "VAL_INVALID_BODY",
        ),
    ];
    for (path, body, status, code) in cases {
        assert_eq!(
            problem(app.post(path, &body).await, status).await["code"],
            code,
            "{body}"
        );
    }
    let unknown = transition(&app, &id, "paused").await;
    assert_eq!(problem(unknown, 422).await["code"], "VAL_INVALID_BODY");
    for query in [
        "page_size=0",
        "page_size=1000",
        "page=0",
        "status=sleeping",
        "colour=red",
    ] {
        let response = app.get(&format!("/v1/sessions?{query}")).await;
        assert_eq!(
            problem(response, 400).await["code"],
            "VAL_INVALID_PARAMETER",
            "{query}"
        );
    }
    let unknown_session = uuid::Uuid::new_v4();
    let response = transition(&app, &unknown_session.to_string(), "active").await;
    assert_eq!(
        problem(response, 404).await["code"],
        "RES_SESSION_NOT_FOUND"
    );
    assert_eq!(app.event_count().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_job_expires_exactly_the_sessions_past_retention_once() {
    let app = spawn_app().await;
    let old_pending = session_in(&app, SessionStatus::Pending).await;
    let old_active = session_in(&app, SessionStatus::Active).await;
    let old_completed = session_in(&app, SessionStatus::Completed).await;
    app.clock.advance(chrono::Duration::days(4));
    let young = session_in(&app, SessionStatus::Active).await;
    app.clock.advance(chrono::Duration::days(4));
    // The job reads the session list: wait until it shows everything.
    let head = app.head().await;
    assert_eq!(app.get_at("/v1/sessions", head).await.status(), 200);

    // Two processes run the job at the same moment.
    let stores = [0, 1].map(|_| {
        PgEventStore::start(
            app.database.pool(),
            WriterConfig::default(),
            vec![],
            None,
            Notifier::default(),
        )
        .0
    });
    let now = (app.clock.clock())();
    let retention = Duration::from_secs(7 * 24 * 3600);
    let pool = app.pool.clone();
    let (a, b) = tokio::join!(
        keyledger_command::session::expiry::expire_due(&stores[0], &pool, now, retention),
        keyledger_command::session::expiry::expire_due(&stores[1], &pool, now, retention),
    );
    assert_eq!(
        a.unwrap() + b.unwrap(),
        2,
        "two sessions expired, each once"
    );

    for (id, expired) in [
        (&old_pending, 1),
        (&old_active, 1),
        (&old_completed, 0),
        (&young, 0),
    ] {
        assert_eq!(
            app.events_of_type(&format!("session-{id}"), "SessionExpired")
                .await,
            expired,
            "{id}"
        );
    }
    let stream: Value = app
        .get(&format!("/v1/streams/session-{old_active}/events"))
        .await
        .json()
        .await
        .unwrap();
    let last = stream["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event_type"], "SessionExpired");
    assert_eq!(last["metadata"]["actor"], "system");
    assert_eq!(last["data"]["reason"], "retention");

    let detail: Value = app
        .get_at(&format!("/v1/sessions/{old_active}"), app.head().await)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["status"], "expired");
    assert_eq!(
        detail["history"].as_array().unwrap().last().unwrap()["actor"],
        "system"
    );
}
