//! Nothing hangs and no failure is silent: pool and request timeouts answer 503 in bounded time,
//! leases leave the pool to requests, stopped workers are restarted and shown in `/health`, and
//! a reader stuck behind the log is named there.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use keyledger::app::Application;
use keyledger::config::ServeArgs;
use keyledger::supervise::Supervisor;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::helpers::{NATS, TestClock, TestDatabase, TestStream, eventually, problem};

/// The service with a handle on its own pool and supervisor.
struct RunningApp {
    address: String,
    http: reqwest::Client,
    /// The service's pool (not a pool of the test's).
    app_pool: Pool,
    supervisor: Supervisor,
    run: Option<JoinHandle<anyhow::Result<()>>>,
    /// A pool of the test's own, outside the service.
    pool: Pool,
    _database: TestDatabase,
}

impl RunningApp {
    async fn start(configure: impl FnOnce(&mut ServeArgs)) -> RunningApp {
        Self::start_with(configure, |_| {}).await
    }

    /// Builds the service, lets `before_run` add workers, then runs it.
    async fn start_with(
        configure: impl FnOnce(&mut ServeArgs),
        before_run: impl FnOnce(&Supervisor),
    ) -> RunningApp {
        let database = TestDatabase::create().await;
        let mut args = ServeArgs::local(&database.url);
        args.database.db_pool_size = 8;
        args.admin_token =
            Some(keyledger_api::principal::AdminToken::parse(crate::helpers::ADMIN_TOKEN).unwrap());
        configure(&mut args);
        let app = Application::build(args, TestClock::default().clock())
            .await
            .unwrap();
        before_run(&app.supervisor);
        RunningApp {
            address: format!("http://{}", app.address),
            http: crate::helpers::admin_client(),
            app_pool: app.pool.clone(),
            supervisor: app.supervisor.clone(),
            pool: database.pool(),
            run: Some(tokio::spawn(app.run_until_stopped())),
            _database: database,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    async fn health(&self) -> Value {
        let response = self.http.get(self.url("/health")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn issue_license(&self) -> reqwest::Response {
        self.http
            .post(self.url("/v1/licenses"))
            .json(&json!({"owner": "acme", "tier": "pro"}))
            .send()
            .await
            .unwrap()
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        self.supervisor.stop_all();
        if let Some(run) = self.run.take() {
            run.abort();
        }
    }
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn component<'a>(health: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    health["components"][list]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

#[tokio::test]
async fn a_command_answers_503_within_the_pool_timeout_when_every_connection_is_taken() {
    const POOL_TIMEOUT_MS: u64 = 500;
    let app = RunningApp::start(|args| {
        args.database.db_pool_size = 2;
        args.database.db_pool_timeout_ms = POOL_TIMEOUT_MS;
    })
    .await;
    let issued = app.issue_license().await;
    assert_eq!(issued.status(), 201);
    let issued: Value = issued.json().await.unwrap();
    let revoke = format!(
        "/v1/licenses/{}/revoke",
        issued["license_id"].as_str().unwrap()
    );
    // Every connection of the service's pool is held by the test. (The append writer has
    // connections of its own; a revoke loads the license through the pool.)
    let mut held = Vec::new();
    for _ in 0..2 {
        let pool = app.app_pool.clone();
        held.push(
            eventually(Duration::from_secs(10), "a pooled connection", || {
                let pool = pool.clone();
                async move { pool.get().await.ok() }
            })
            .await,
        );
    }

    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(15),
        app.http
            .post(app.url(&revoke))
            .json(&json!({"reason": "chargeback"}))
            .send(),
    )
    .await
    .expect("a command must answer, not hang, when the pool is exhausted")
    .unwrap();
    let elapsed = started.elapsed();

    assert_eq!(retry_after(&response), Some(1), "503 says when to retry");
    let body = problem(response, 503).await;
    assert_eq!(body["code"], "SYS_UNAVAILABLE");
    let bound = Duration::from_millis(POOL_TIMEOUT_MS) + Duration::from_secs(3);
    assert!(
        elapsed < bound,
        "answered after {elapsed:?}, beyond the pool timeout of {POOL_TIMEOUT_MS} ms"
    );

    // Once the connections are back, commands go through again.
    drop(held);
    let revoked = app
        .http
        .post(app.url(&revoke))
        .json(&json!({"reason": "chargeback"}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
}

#[tokio::test]
async fn leases_of_the_projections_and_the_relay_leave_every_pooled_connection_to_requests() {
    let projections: Vec<String> = keyledger_projections::asynchronous()
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    let size = projections.len();
    let stream = TestStream::create().await;
    let relay = stream.config.clone();
    let app = RunningApp::start(|args| {
        // As many connections as projections: leases on pooled connections would take them all.
        args.database.db_pool_size = size;
        args.database.db_pool_timeout_ms = 2000;
        args.nats_url = Some(NATS.to_owned());
        args.nats_stream = relay.stream.clone();
        args.nats_subject_prefix = relay.subject_prefix.clone();
        args.nats_head_subject = relay.head_subject.clone();
        args.nats_checkpoint_subject = relay.checkpoint_subject.clone();
    })
    .await;
    let mut keys: Vec<i64> = projections
        .iter()
        .map(|name| keyledger_events::lease::lease_key(&format!("projection:{name}")))
        .collect();
    keys.push(keyledger_events::lease::lease_key(
        &stream.config.checkpoint_name(),
    ));
    let pool = app.pool.clone();
    eventually(
        Duration::from_secs(15),
        "every projection to hold its lease",
        || {
            let (pool, keys) = (pool.clone(), keys.clone());
            async move {
                let client = pool.get().await.ok()?;
                let held: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
                         AND objsubid = 1 AND database = (SELECT oid FROM pg_database \
                                                          WHERE datname = current_database()) \
                         AND ((classid::bigint << 32) | objid::bigint) = ANY($1)",
                        &[&keys],
                    )
                    .await
                    .ok()?
                    .get(0);
                (held == keys.len() as i64).then_some(())
            }
        },
    )
    .await;

    // As many concurrent commands as there are pooled connections all go through.
    let responses = futures::future::join_all((0..size).map(|_| app.issue_license())).await;
    for response in responses {
        assert_eq!(response.status(), 201);
    }
    // And the pool can hand out every one of its connections at once.
    let taken = futures::future::join_all((0..size).map(|_| app.app_pool.get())).await;
    assert!(
        taken.iter().all(Result::is_ok),
        "every pooled connection is free for requests while the leases are held"
    );
    drop(taken);
    drop(app);
    stream.delete().await;
}

#[tokio::test]
async fn a_request_that_outlasts_the_request_timeout_answers_503_with_retry_after() {
    const REQUEST_TIMEOUT_MS: u64 = 300;
    let app = RunningApp::start(|args| {
        args.request_timeout_ms = REQUEST_TIMEOUT_MS;
        args.consistency_timeout_ms = 10_000;
    })
    .await;
    let response = app.issue_license().await;
    assert_eq!(response.status(), 201);
    let license: Value = response.json().await.unwrap();
    let id = license["license_id"].as_str().unwrap().to_owned();

    // A consistency wait for a position the projection cannot reach while a lock holds its
    // table.
    let mut blocker = app.pool.get().await.unwrap();
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE licenses IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let stuck: Value = app.issue_license().await.json().await.unwrap();
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(15),
        app.http
            .get(app.url(&format!("/v1/licenses/{id}")))
            .header("x-consistency-position", stuck["position"].to_string())
            .send(),
    )
    .await
    .expect("the request must answer")
    .unwrap();
    let elapsed = started.elapsed();

    assert_eq!(retry_after(&response), Some(1));
    let body = problem(response, 503).await;
    assert_eq!(body["code"], "SYS_UNAVAILABLE");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("{REQUEST_TIMEOUT_MS} ms"))),
        "the detail states the bound: {body}"
    );
    assert!(
        elapsed < Duration::from_millis(REQUEST_TIMEOUT_MS) + Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
}

#[tokio::test]
async fn a_worker_that_panics_is_restarted_and_health_names_it_degraded() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let app = RunningApp::start_with(
        |_| {},
        move |supervisor| {
            supervisor.spawn("flaky worker", move || {
                let runs = counter.clone();
                async move {
                    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("flaky worker hit a bug");
                    }
                    std::future::pending::<()>().await;
                    Ok(())
                }
            });
        },
    )
    .await;

    eventually(
        Duration::from_secs(10),
        "the worker to be restarted",
        || {
            let runs = runs.clone();
            async move { (runs.load(Ordering::SeqCst) >= 2).then_some(()) }
        },
    )
    .await;
    let health = app.health().await;
    assert_eq!(health["status"], "degraded", "{health}");
    let worker = component(&health, "workers", "flaky worker").expect("the worker is listed");
    assert_eq!(worker["status"], "degraded");
    assert_eq!(worker["restarts"], 1);
    assert!(
        worker["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("panicked") && f.contains("flaky worker hit a bug")),
        "{worker}"
    );
    assert!(worker["last_failure_at"].is_string());
    // The service keeps serving.
    assert_eq!(app.issue_license().await.status(), 201);
    // The other workers are up.
    let projectors = component(&health, "workers", "projectors").expect("projectors listed");
    assert_eq!(projectors["status"], "up");
}

#[tokio::test]
async fn a_worker_that_keeps_failing_stops_the_service_with_an_error() {
    let mut app = RunningApp::start_with(
        |args| {
            args.worker_max_failures = 3;
            args.worker_failure_window = Duration::from_secs(60);
        },
        |supervisor| {
            supervisor.spawn("broken worker", || async {
                anyhow::bail!("its configuration is wrong")
            });
        },
    )
    .await;
    let run = app.run.take().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the service stops when a worker cannot be restarted")
        .unwrap();
    let error = format!("{:#}", result.expect_err("the service stops with an error"));
    assert!(error.contains("broken worker"), "{error}");
    assert!(error.contains("its configuration is wrong"), "{error}");
}

#[tokio::test]
async fn a_projection_whose_checkpoint_does_not_move_while_the_log_grows_is_named_stuck() {
    let app = RunningApp::start(|args| {
        args.projection_stuck_after = Duration::from_secs(1);
    })
    .await;
    assert_eq!(app.issue_license().await.status(), 201);
    let health = app.health().await;
    let licenses = component(&health, "projections", "licenses").unwrap();
    assert_eq!(licenses["status"], "ok", "{health}");

    // The licenses projection cannot move its checkpoint while the test holds its row.
    let mut client = app.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.query(
        "SELECT position FROM checkpoints WHERE name = 'licenses' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    for _ in 0..3 {
        assert_eq!(app.issue_license().await.status(), 201);
    }

    let health = eventually(
        Duration::from_secs(15),
        "/health to name the stuck projection",
        || async {
            let health = app.health().await;
            (health["status"] == "degraded"
                && component(&health, "projections", "licenses")
                    .is_some_and(|p| p["status"] == "stuck"))
            .then_some(health)
        },
    )
    .await;
    let licenses = component(&health, "projections", "licenses").unwrap();
    assert!(licenses["lag"].as_i64().unwrap() >= 3, "{licenses}");
    assert!(licenses["checkpoint_age_seconds"].as_f64().unwrap() > 1.0);
    assert!(licenses["updated_at"].is_string());
    assert!(
        health["degraded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().is_some_and(|d| d.starts_with("licenses"))),
        "{health}"
    );
    let sessions = component(&health, "projections", "sessions").unwrap();
    assert_eq!(sessions["status"], "ok", "other projections are not blamed");

    // Released, it catches up and health is ok again.
    tx.rollback().await.unwrap();
    eventually(
        Duration::from_secs(20),
        "/health to be ok again",
        || async {
            let health = app.health().await;
            (health["status"] == "ok").then_some(())
        },
    )
    .await;
}
