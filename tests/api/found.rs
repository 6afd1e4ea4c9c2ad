//! A license or session the service has just said it created is never answered 404, however
//! far behind its read table is; an id that was never created is 404 at once.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, spawn_app};

const PAIRS: usize = 200;
const CONCURRENCY: usize = 40;

/// Creates with `POST create_path`, reads `read_path(id)` at once, and returns the statuses.
async fn create_then_read(
    app: &TestApp,
    create_path: &str,
    body: Value,
    id_member: &str,
    read_paths: fn(&str) -> Vec<String>,
) -> Vec<(String, u16)> {
    futures::stream::iter(0..PAIRS)
        .map(|_| {
            let body = body.clone();
            async move {
                let created = app.post(create_path, &body).await;
                assert_eq!(created.status(), 201);
                let created: Value = created.json().await.unwrap();
                let id = created[id_member].as_str().unwrap().to_owned();
                let mut statuses = Vec::new();
                for path in read_paths(&id) {
                    let status = app.get(&path).await.status().as_u16();
                    statuses.push((path, status));
                }
                statuses
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_license_read_right_after_it_was_created_is_always_found() {
    let app = spawn_app().await;
    let statuses = create_then_read(
        &app,
        "/v1/licenses",
        json!({"owner": "acme", "tier": "pro"}),
        "license_id",
        |id| {
            vec![
                format!("/v1/licenses/{id}"),
                format!("/v1/licenses/{id}/usage"),
                format!("/v1/licenses/{id}/installations"),
                format!("/v1/licenses/{id}/events"),
                format!("/admin/licenses/{id}"),
            ]
        },
    )
    .await;
    assert_eq!(statuses.len(), PAIRS * 5);
    let missing: Vec<_> = statuses.iter().filter(|(_, s)| *s != 200).collect();
    assert!(missing.is_empty(), "not answered 200: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_read_right_after_it_was_created_is_always_found() {
    let app = spawn_app().await;
    let statuses = create_then_read(
        &app,
        "/v1/sessions",
        json!({"agent_role": "planner"}),
        "session_id",
        |id| {
            vec![
                format!("/v1/sessions/{id}"),
                format!("/admin/sessions/{id}"),
            ]
        },
    )
    .await;
    assert_eq!(statuses.len(), PAIRS * 2);
    let missing: Vec<_> = statuses.iter().filter(|(_, s)| *s != 200).collect();
    assert!(missing.is_empty(), "not answered 200: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_was_never_created_is_not_found_at_once() {
    let app = spawn_app().await;
    // Something in the log, so the projections have work to look at.
    app.issue_license().await;
    let unknown = uuid::Uuid::new_v4();
    for (path, code) in [
        (format!("/v1/licenses/{unknown}"), "RES_LICENSE_NOT_FOUND"),
        (
            format!("/v1/licenses/{unknown}/usage"),
            "RES_LICENSE_NOT_FOUND",
        ),
        (
            format!("/v1/licenses/{unknown}/installations"),
            "RES_LICENSE_NOT_FOUND",
        ),
        (
            format!("/v1/licenses/{unknown}/events"),
            "RES_LICENSE_NOT_FOUND",
        ),
        (format!("/v1/sessions/{unknown}"), "RES_SESSION_NOT_FOUND"),
        (format!("/v1/requests/{unknown}"), "RES_NOT_FOUND"),
    ] {
        let started = Instant::now();
        let response = app.get(&path).await;
        let elapsed = started.elapsed();
        assert_eq!(problem(response, 404).await["code"], code, "{path}");
        // Far below CONSISTENCY_TIMEOUT_MS (5 s): nothing was waited for.
        assert!(elapsed < Duration::from_secs(1), "{path} took {elapsed:?}");
    }
    let response = app.get(&format!("/admin/sessions/{unknown}")).await;
    assert_eq!(response.status(), 404);
}
