//! The live tail: Server-Sent Events of the log, resumed with `Last-Event-ID`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{NewSession, TestApp, eventually, problem, spawn_app};

/// Reads SSE messages off `response` until `enough` says stop; returns `(id, data)` pairs.
async fn read_events(
    mut response: reqwest::Response,
    mut enough: impl FnMut(&[(i64, Value)]) -> bool,
) -> Vec<(i64, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !enough(&events) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("the stream went quiet before enough events arrived")
            .unwrap()
            .expect("the stream ended");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in message.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<i64>().unwrap());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, data));
            }
            if enough(&events) {
                break;
            }
        }
    }
    events
}

async fn open(app: &TestApp, query: &str, last_event_id: Option<i64>) -> reqwest::Response {
    let mut request = app.http.get(app.url(&format!("/v1/events/stream{query}")));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_resumes_from_last_event_id_with_no_gap_and_no_repeat_while_appends_go_on()
{
    let app = Arc::new(spawn_app().await);
    // Appends keep landing the whole time: licenses issued one after another.
    let running = Arc::new(AtomicBool::new(true));
    let writer = {
        let (app, running) = (app.clone(), running.clone());
        tokio::spawn(async move {
            let mut issued = 0;
            while running.load(Ordering::SeqCst) {
                app.issue_license().await;
                issued += 1;
            }
            issued
        })
    };
    eventually(Duration::from_secs(10), "a few events", || async {
        (app.head().await >= 20).then_some(())
    })
    .await;

    let first = read_events(open(&app, "", None).await, |events| events.len() >= 15).await;
    let last_seen = first.last().unwrap().0;
    // The connection is dropped here; more events land meanwhile.
    eventually(
        Duration::from_secs(10),
        "more events after the drop",
        || async { (app.head().await > last_seen + 20).then_some(()) },
    )
    .await;
    running.store(false, Ordering::SeqCst);
    let issued = writer.await.unwrap();
    assert!(issued > 0);
    let head = app.head().await;

    let second = read_events(open(&app, "", Some(last_seen)).await, |events| {
        events.last().is_some_and(|(id, _)| *id >= head)
    })
    .await;
    let positions: Vec<i64> = first.iter().chain(&second).map(|(id, _)| *id).collect();
    let expected: Vec<i64> = (1..=positions.len() as i64).collect();
    assert_eq!(positions, expected, "every position once, in order");
    for (id, data) in first.iter().chain(&second) {
        assert_eq!(data["position"], *id, "the id is the event's position");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_filters_by_category_and_type_and_refuses_bad_filters() {
    let app = spawn_app().await;
    let id = app.issue_license().await.license_id;
    app.revoke(id, "refund").await;
    app.sessions().create(&NewSession::new("x")).await;

    let revokes = read_events(
        open(&app, "?category=license&type=LicenseRevoked", None).await,
        |events| !events.is_empty(),
    )
    .await;
    assert_eq!(revokes[0].1["event_type"], "LicenseRevoked");
    assert_eq!(revokes[0].1["stream_id"], format!("license-{id}"));

    let sessions = read_events(open(&app, "?category=session", None).await, |events| {
        !events.is_empty()
    })
    .await;
    assert!(
        sessions[0].1["stream_id"]
            .as_str()
            .unwrap()
            .starts_with("session-")
    );

    for query in ["?category=lic%25", "?type=", "?after=-1"] {
        let response = app.get(&format!("/v1/events/stream{query}")).await;
        let body = problem(response, 400).await;
        assert_eq!(body["code"], "VAL_INVALID_PARAMETER", "{query}");
    }
}
