//! The projector runtime: one active worker per projection across processes, and bounded
//! consistency waits.

use std::time::Duration;

use keyledger::app::Application;
use keyledger::config::ServeArgs;
use keyledger_api::principal::AdminToken;
use keyledger_events::lease::lease_key;

use crate::helpers::{TestApp, eventually, problem, spawn_app, spawn_app_with};

/// How many sessions hold the lease of `name` (a session-level advisory lock).
async fn lease_holders(app: &TestApp, name: &str) -> i64 {
    let key = lease_key(name);
    let client = app.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND ((classid::bigint << 32) | objid::bigint) = $1",
            &[&key],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_database_run_each_projection_once() {
    let app = spawn_app().await;
    // A second service on the same database, as a second process would be.
    let mut args = ServeArgs::local(&app.database.url);
    args.admin_token = Some(AdminToken::parse(crate::helpers::ADMIN_TOKEN).unwrap());
    let second = Application::build(args, app.clock.clock()).await.unwrap();
    let second_address = format!("http://{}", second.address);
    tokio::spawn(second.run_until_stopped());

    for name in ["projection:licenses", "projection:license_usage"] {
        eventually(Duration::from_secs(10), "a lease holder", || async {
            (lease_holders(&app, name).await == 1).then_some(())
        })
        .await;
    }

    for n in 0..10 {
        let base = if n % 2 == 0 {
            app.address.clone()
        } else {
            second_address.clone()
        };
        let response = app
            .http
            .post(format!("{base}/v1/licenses"))
            .json(&serde_json::json!({"owner": format!("o{n}"), "tier": "free"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    // Both processes see every license, each projected once.
    let client = app.pool.get().await.unwrap();
    let count: i64 = eventually(Duration::from_secs(10), "all licenses projected", || {
        let client = &client;
        async move {
            let n: i64 = client
                .query_one("SELECT count(*) FROM licenses", &[])
                .await
                .unwrap()
                .get(0);
            (n == 10).then_some(n)
        }
    })
    .await;
    assert_eq!(count, 10);
    for name in ["projection:licenses", "projection:license_usage"] {
        assert_eq!(
            lease_holders(&app, name).await,
            1,
            "{name} has one active worker"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_waits_for_its_position_and_gives_up_after_the_bound() {
    let app = spawn_app_with(|args| args.consistency_timeout_ms = 300).await;
    let issued = app.issue_license().await;
    let id = issued.license_id;
    let read_at = |position| {
        let app = &app;
        async move { app.api().at(position).licenses().try_get(id).await }
    };

    // A position the log has reached: the query waits for the projection and answers.
    assert_eq!(read_at(issued.position).await.status(), 200);

    // A position in the log that the projection cannot reach (a lock holds its table): 503
    // after the bound, with Retry-After.
    let mut blocker = app.pool.get().await.unwrap();
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE licenses IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let stuck = app.issue_license().await;
    let started = std::time::Instant::now();
    let response = read_at(stuck.position).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.headers()["retry-after"], "1");
    let body = problem(response, 503).await;
    assert_eq!(body["code"], "SYS_CONSISTENCY_TIMEOUT");
    lock.rollback().await.unwrap();

    // A position nobody has handed out is refused at once.
    let response = read_at(1_000_000).await;
    assert_eq!(
        problem(response, 400).await["code"],
        "VAL_INVALID_PARAMETER"
    );

    let response = app
        .http
        .get(app.url(&format!("/v1/licenses/{id}")))
        .header("x-consistency-position", "soon")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(response, 400).await["code"],
        "VAL_INVALID_PARAMETER"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_node_and_a_projector_node_split_the_work() {
    let app = spawn_app_with(|args| args.role = keyledger::config::Role::Api).await;
    let mut worker_args = ServeArgs::local(&app.database.url);
    worker_args.role = keyledger::config::Role::Projector;
    let worker = Application::build(worker_args, app.clock.clock())
        .await
        .unwrap();
    let worker_address = format!("http://{}", worker.address);
    tokio::spawn(worker.run_until_stopped());

    // The API node runs no projector: the worker node's lease holders apply its events.
    for name in ["projection:licenses", "projection:license_usage"] {
        eventually(Duration::from_secs(10), "the worker's lease", || async {
            (lease_holders(&app, name).await == 1).then_some(())
        })
        .await;
    }
    let issued = app.issue_license().await;
    let id = issued.license_id;
    app.api().at(issued.position).licenses().get(id).await;

    // The worker serves health, not the API.
    let health = app
        .http
        .get(format!("{worker_address}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let api = app
        .http
        .get(format!("{worker_address}/v1/licenses/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
}
