//! Agent sessions: the state machine over HTTP, updates, lists, and the retention job.

use std::time::Duration;

use keyledger_events::session::SessionStatus;
use keyledger_events::{Notifier, PgEventStore, WriterConfig};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{NewSession, TestApp, problem, spawn_app};

/// A new session brought to `status` through allowed transitions.
async fn session_in(app: &TestApp, status: SessionStatus) -> Uuid {
    let sessions = app.sessions();
    let id = sessions
        .create(&NewSession::new("reviewer"))
        .await
        .session_id;
    let path: &[&str] = match status {
        SessionStatus::Pending => &[],
        SessionStatus::Active => &["active"],
        SessionStatus::Completed => &["active", "completed"],
        SessionStatus::Failed => &["active", "failed"],
        SessionStatus::Expired => &["expired"],
    };
    for step in path {
        sessions.transition(id, step).await;
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_session_is_pending_and_readable_with_its_history() {
    let app = spawn_app().await;
    let sessions = app.sessions();
    let task = Uuid::new_v4();
    let created = sessions
        .create(
            &NewSession::new("planner")
                .task(task)
                .metadata(json!({"repo": "x"})),
        )
        .await;
    assert_eq!(created.status, "pending");
    assert_eq!(created.agent_role, "planner");
    assert_eq!(created.task_id, Some(task));
    let id = created.session_id;

    let moved = sessions.transition(id, "active").await;
    assert_eq!(moved.status, "active");
    let detail = app.api().at(moved.position).sessions().get(id).await;
    assert_eq!(detail.session.status, "active");
    assert_eq!(detail.session.metadata, json!({"repo": "x"}));
    let history = &detail.history;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].from, "pending");
    assert_eq!(history[0].to, "active");
    assert_eq!(history[0].reason.as_deref(), Some("test"));
    assert_eq!(history[0].actor.as_deref(), Some("admin_token"));
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
            let response = app.sessions().try_transition(id, to.as_str()).await;
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
    let sessions = app.sessions();
    let responses =
        futures::future::join_all((0..50).map(|_| sessions.try_transition(id, "active"))).await;
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
    let sessions = app.api().idempotency_key("finish-it").sessions();
    let finish = json!({"to": "completed"});
    let send = || sessions.try_transition_with(id, &finish);
    let first = send().await;
    assert_eq!(first.status(), 409);
    let first = first.text().await.unwrap();
    let again = send().await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_merges_metadata_and_a_closed_session_refuses_changes() {
    let app = spawn_app().await;
    let sessions = app.sessions();
    let created = sessions
        .create(&NewSession::new("r").metadata(json!({"a": 1, "b": {"c": 2, "d": 3}})))
        .await;
    let id = created.session_id;
    let task = Uuid::new_v4();
    let patched = sessions
        .update(
            id,
            &json!({"task_id": task, "metadata": {"a": null, "b": {"d": 4}, "e": true}}),
        )
        .await;
    assert_eq!(patched.metadata, json!({"b": {"c": 2, "d": 4}, "e": true}));
    assert_eq!(patched.task_id, Some(task));
    assert_eq!(patched.status, "pending");

    sessions.transition(id, "expired").await;
    let before = app.event_count().await;
    let response = sessions
        .try_update(id, &json!({"metadata": {"late": 1}}))
        .await;
    let body = problem(response, 409).await;
    assert_eq!(body["code"], "BIZ_SESSION_TERMINAL");
    assert_eq!(app.event_count().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_filters_by_status_and_role_newest_first_with_pages() {
    let app = spawn_app().await;
    let sessions = app.sessions();
    let mut active = Vec::new();
    for n in 0..5 {
        let role = if n % 2 == 0 { "builder" } else { "reviewer" };
        let id = sessions.create(&NewSession::new(role)).await.session_id;
        if n < 3 {
            sessions.transition(id, "active").await;
            active.push(id);
        }
    }
    let listed = app.api().at(app.head().await).sessions();
    let page = listed.list("?status=active").await;
    assert_eq!((page.total, page.page, page.page_size), (3, 1, 20));
    let ids: Vec<Uuid> = page.sessions.iter().map(|s| s.session_id).collect();
    active.reverse();
    assert_eq!(ids, active, "newest first");

    let page = listed.list("?agent_role=builder&page=2&page_size=2").await;
    assert_eq!(page.total, 3);
    assert_eq!(page.sessions.len(), 1);
    assert_eq!(listed.list("").await.total, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_input_is_rejected_and_appends_nothing() {
    let app = spawn_app().await;
    let id = session_in(&app, SessionStatus::Pending).await;
    let before = app.event_count().await;
    let sessions = app.sessions();
    let cases = vec![
        (json!({"agent_role": ""}), "VAL_INVALID_FIELD"),
        (json!({"agent_role": "x".repeat(65)}), "VAL_INVALID_FIELD"),
        (
            json!({"agent_role": "r", "task_id": "not-a-uuid"}),
            "VAL_INVALID_BODY",
        ),
        (
            json!({"agent_role": "r", "metadata": "text"}),
            "VAL_INVALID_FIELD",
        ),
        (
            json!({"agent_role": "r", "metadata": {"x": "y".repeat(17_000)}}),
            "VAL_INVALID_FIELD",
        ),
        (json!({"agent_role": "r", "colour": 1}), "VAL_INVALID_BODY"),
    ];
    for (body, code) in cases {
        assert_eq!(
            problem(sessions.try_create(&body).await, 422).await["code"],
            code,
            "{body}"
        );
    }
    let unknown = sessions.try_transition(id, "paused").await;
    assert_eq!(problem(unknown, 422).await["code"], "VAL_INVALID_BODY");
    for query in [
        "page_size=0",
        "page_size=1000",
        "page=0",
        "status=sleeping",
        "colour=red",
    ] {
        let response = sessions.try_list(&format!("?{query}")).await;
        assert_eq!(
            problem(response, 400).await["code"],
            "VAL_INVALID_PARAMETER",
            "{query}"
        );
    }
    let response = sessions.try_transition(Uuid::new_v4(), "active").await;
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
    app.api().at(app.head().await).sessions().list("").await;

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
    let stream = app.log().stream(&format!("session-{old_active}")).await;
    let last = stream.events.last().unwrap();
    assert_eq!(last.event_type, "SessionExpired");
    assert_eq!(last.metadata["actor"], "system");
    assert_eq!(last.data["reason"], "retention");

    let detail = app
        .api()
        .at(app.head().await)
        .sessions()
        .get(old_active)
        .await;
    assert_eq!(detail.session.status, "expired");
    assert_eq!(
        detail.history.last().unwrap().actor.as_deref(),
        Some("system")
    );
}
