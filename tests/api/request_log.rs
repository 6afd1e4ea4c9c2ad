//! The request log: every request recorded, redacted, filterable, linked to its events.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    NATS, RequestPage, ServiceProcess, TestApp, TestDatabase, TestStream, checkpoint, eventually,
    problem, spawn_app, spawn_app_with,
};

/// Waits until the request viewer lists what `query` selects, `count` rows at least.
async fn requests(app: &TestApp, query: &str, count: usize) -> RequestPage {
    eventually(Duration::from_secs(10), "request records", || async {
        let page: RequestPage = app
            .requests()
            .try_list(&format!("?{query}"))
            .await
            .json()
            .await
            .ok()?;
        (page.items.len() >= count).then_some(page)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_is_recorded_with_its_route_caller_and_redacted_bodies() {
    let app = spawn_app().await;
    let issued = app.issue_license().await;
    let key = issued.key.as_str();
    app.validate(key).await;

    let page = requests(&app, "route=/v1/licenses/validate", 1).await;
    let record = &page.items[0];
    assert_eq!(record.service, "keyledger");
    assert_eq!(record.method, "POST");
    assert_eq!(record.path, "/v1/licenses/validate");
    assert_eq!(record.status, 200);
    assert_eq!(record.caller.as_ref(), Some(&issued.key_prefix));
    assert!(record.duration_ms >= 0.0);
    let request_body = record.request_body.as_deref().unwrap();
    assert!(request_body.contains("[REDACTED]"), "{request_body}");
    assert!(!request_body.contains(key));
    assert!(record.response_body.as_deref().unwrap().contains("VALID"));

    // The issuance's record links to the event it caused.
    let page = requests(&app, "route=/v1/licenses&method=post", 1).await;
    let issue_record = &page.items[0];
    assert!(
        !issue_record.response_body.as_deref().unwrap().contains(key),
        "the key is redacted in the response too"
    );
    let detail = app.requests().get(issue_record.record_id).await;
    let types: Vec<&str> = detail
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(types, ["LicenseIssued"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_filters_by_status_class_method_and_path_and_pages() {
    let app = spawn_app().await;
    let licenses = app.licenses();
    app.issue_license().await;
    licenses.try_get("not-a-uuid").await;
    licenses.try_issue(&json!({"owner": ""})).await;
    licenses.try_get(uuid::Uuid::new_v4()).await;
    app.get("/health/ready").await;

    let page = requests(&app, "status_class=4xx", 3).await;
    let statuses: Vec<i32> = page.items.iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().all(|s| (400..500).contains(s)),
        "{statuses:?}"
    );
    assert_eq!(statuses.len(), 3);

    let page = requests(&app, "method=GET&path_contains=not-a-uuid", 1).await;
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].status, 400);

    let all = requests(&app, "limit=100", 4).await;
    assert!(
        all.items.iter().all(|r| !r.path.starts_with("/health")),
        "health checks are not recorded"
    );
    let first = app.requests().list("?limit=2").await;
    let cursor = first.next_cursor.unwrap();
    let second = app
        .requests()
        .list(&format!("?limit=2&cursor={cursor}"))
        .await;
    assert_ne!(first.items[0].record_id, second.items[0].record_id);

    for bad in [
        "status_class=6xx",
        "status=42",
        "cursor=nope",
        "limit=5000",
        "from=yesterday",
    ] {
        let response = app.requests().try_list(&format!("?{bad}")).await;
        assert_eq!(
            problem(response, 400).await["code"],
            "VAL_INVALID_PARAMETER",
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_services_send_records_one_or_in_batches_and_bad_ones_are_named() {
    let app = spawn_app().await;
    let one = json!({"service": "billing", "method": "post", "path": "/invoices", "status": 201,
                     "duration_ms": 12.5, "request_body": {"card_token": "tok_123", "amount": 5}});
    let response = app.requests().try_ingest(&one).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap()["accepted"], 1);

    let batch: Vec<Value> = (0..20)
        .map(|n| json!({"service": "billing", "method": "GET", "path": format!("/invoices/{n}"), "status": 200, "duration_ms": 1}))
        .collect();
    let response = app.requests().try_ingest(&json!({"records": batch})).await;
    assert_eq!(response.json::<Value>().await.unwrap()["accepted"], 20);

    let page = requests(&app, "service=billing&method=POST", 1).await;
    let body = page.items[0].request_body.as_deref().unwrap();
    assert!(
        body.contains("[REDACTED]") && !body.contains("tok_123"),
        "{body}"
    );
    requests(&app, "service=billing&limit=100", 21).await;

    let mut bad = (0..5)
        .map(|_| json!({"service": "s", "method": "GET", "path": "/", "status": 200, "duration_ms": 1}))
        .collect::<Vec<_>>();
    bad[3]["status"] = json!(99);
    let response = app.requests().try_ingest(&bad).await;
    let body = problem(response, 422).await;
    assert!(
        body["detail"].as_str().unwrap().starts_with("records[3]"),
        "{body}"
    );
    let too_many: Vec<Value> = (0..1001).map(|_| json!({})).collect();
    let response = app.requests().try_ingest(&too_many).await;
    assert_eq!(problem(response, 422).await["code"], "VAL_INVALID_FIELD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_recorded_when_sampling_is_zero_or_the_path_is_excluded() {
    let app = spawn_app_with(|args| {
        args.request_log_exclude = vec!["/v1/licenses/validate".into()];
    })
    .await;
    let issued = app.issue_license().await;
    app.validate(&issued.key).await;
    requests(&app, "route=/v1/licenses", 1).await;
    let page = app.requests().list("?path_contains=validate").await;
    assert_eq!(page.items.len(), 0);

    let unsampled = spawn_app_with(|args| args.request_log_sample_rate = 0.0).await;
    unsampled.issue_license().await;
    assert_eq!(unsampled.count_of("ApiRequestRecorded").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_sent_to_the_service_appear_nowhere_it_stores_or_logs() {
    let database = TestDatabase::create().await;
    let stream = TestStream::create().await;
    let service = ServiceProcess::start(
        &database.url,
        &[
            ("NATS_URL", NATS),
            ("NATS_STREAM", &stream.config.stream),
            ("NATS_SUBJECT_PREFIX", &stream.config.subject_prefix),
            ("NATS_CHECKPOINT_SUBJECT", &stream.config.checkpoint_subject),
            ("RUST_LOG", "debug"),
            ("LOG_FORMAT", "json"),
        ],
    )
    .await;
    let http = crate::helpers::admin_client();
    let issued: Value = http
        .post(format!("{}/v1/licenses", service.address))
        .json(&json!({"owner": "acme", "tier": "pro"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = issued["key"].as_str().unwrap().to_owned();
    let secrets = [
        "hunter2-password",
        "tok-abcdef-123",
        "s3cr3t-value",
        "Bearer abc.def.ghi",
    ];
    let body = json!({
        "key": key,
        "metadata": {"password": secrets[0], "api_token": secrets[1], "note": format!("pasted {key}")},
        "feature": "core",
    });
    http.post(format!("{}/v1/licenses/validate", service.address))
        .header("authorization", secrets[3])
        .json(&body)
        .send()
        .await
        .unwrap();
    http.post(format!("{}/v1/requests", service.address))
        .json(&json!({"service": "portal", "method": "POST", "path": "/login", "status": 200, "duration_ms": 3,
                      "request_body": {"user": "ann", "client_secret": secrets[2], "license": key}}))
        .send()
        .await
        .unwrap();

    // Wait until the records are projected and published.
    let pool = database.pool();
    let client = pool.get().await.unwrap();
    eventually(
        Duration::from_secs(20),
        "three request records in the viewer",
        || async {
            let n: i64 = client
                .query_one("SELECT count(*) FROM api_requests", &[])
                .await
                .ok()?
                .get(0);
            (n >= 3).then_some(())
        },
    )
    .await;
    let head = keyledger_events::store::head_on(&client).await.unwrap();
    let name = stream.config.checkpoint_name();
    eventually(Duration::from_secs(20), "the relay to publish", || {
        let pool = pool.clone();
        let name = name.clone();
        async move { (checkpoint(&pool, &name).await >= head).then_some(()) }
    })
    .await;

    let dump = Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", &database.name])
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.contains("ApiRequestRecorded") && dump.contains("[REDACTED]"));
    let log = service.log_text();
    let messages: Vec<String> = stream
        .messages()
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("ApiRequestRecorded") || m.contains("/v1/requests"))
    );
    for secret in secrets.iter().copied().chain([key.as_str()]) {
        assert!(!dump.contains(secret), "{secret} in the database");
        assert!(!log.contains(secret), "{secret} in the logs");
        assert!(
            messages.iter().all(|m| !m.contains(secret)),
            "{secret} on NATS"
        );
    }
    stream.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_in_the_platform_loggers_shape_is_accepted_with_its_fields_mapped() {
    let app = spawn_app().await;
    let record = json!({
        "service": "llm", "endpoint": "/v1/completions", "method": "POST",
        "user_identifier": "ann@example.com", "request_body": "{\"prompt\": \"hello\"}",
        "response_body": "plain text answer", "status_code": 429, "duration_ms": 812.25,
        "timestamp": "2025-03-04T05:06:07.125Z"
    });
    let response = app.requests().try_ingest(&record).await;
    assert_eq!(response.status(), 202);

    let page = requests(&app, "service=llm", 1).await;
    let stored = &page.items[0];
    assert_eq!(stored.path, "/v1/completions");
    assert_eq!(stored.method, "POST");
    assert_eq!(stored.status, 429);
    assert_eq!(stored.caller.as_deref(), Some("ann@example.com"));
    assert_eq!(stored.duration_ms, 812.25);
    assert_eq!(stored.at, "2025-03-04T05:06:07.125Z");
    assert_eq!(
        stored.request_body.as_deref(),
        Some(r#"{"prompt":"hello"}"#)
    );
    assert_eq!(stored.response_body.as_deref(), Some("plain text answer"));
    // The filters work on the mapped fields.
    requests(&app, "service=llm&caller=ann@example.com&status=429", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_is_recorded_as_it_was_sent() {
    let app = spawn_app().await;
    // A number beyond what the service keeps is refused, and the request viewer shows the
    // number the refusal names, with the members in the order they were sent.
    let sent = r#"{"tier": "pro", "owner": "acme",
                   "metadata": {"seats": 123456789012345678901234567890, "ratio": 1.50}}"#;
    let response = app
        .http
        .post(app.url("/v1/licenses"))
        .header("content-type", "application/json")
        .body(sent)
        .send()
        .await
        .unwrap();
    let refusal = problem(response, 422).await;
    assert_eq!(refusal["code"], "VAL_UNREPRESENTABLE");

    let page = requests(&app, "route=/v1/licenses&method=post", 1).await;
    assert_eq!(
        page.items[0].request_body.as_deref(),
        Some(
            r#"{"tier":"pro","owner":"acme","metadata":{"seats":123456789012345678901234567890,"ratio":1.50}}"#
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_services_bodies_are_stored_as_it_sent_them_whatever_numbers_they_hold() {
    let app = spawn_app().await;
    // Bodies are what another service saw: a number no double carries, members in its own
    // order, a NUL. The record is kept, with its bodies as sent (secrets redacted).
    let sent = r#"{"service": "ledger", "path": "/v2/balance", "method": "GET", "status": 200,
        "duration_ms": 3,
        "request_body": "note\u0000end",
        "response_body": {"zeta": 1, "balance": 123456789012345678901234567890.25,
                          "rate": 1e400, "token": "tok-secret-1"}}"#;
    let response = app
        .http
        .post(app.url("/v1/requests"))
        .header("content-type", "application/json")
        .body(sent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());

    let page = requests(&app, "service=ledger", 1).await;
    let stored = &page.items[0];
    assert_eq!(
        stored.response_body.as_deref(),
        Some(
            r#"{"zeta":1,"balance":123456789012345678901234567890.25,"rate":1e400,"token":"[REDACTED]"}"#
        )
    );
    assert_eq!(stored.request_body.as_deref(), Some("note\u{FFFD}end"));

    // The record's own fields are still held to what the service can store.
    let refused = r#"{"service": "ledger", "path": "/x", "method": "GET", "status": 200,
        "duration_ms": 1e400}"#;
    let response = app
        .http
        .post(app.url("/v1/requests"))
        .header("content-type", "application/json")
        .body(refused)
        .send()
        .await
        .unwrap();
    let refusal = problem(response, 422).await;
    assert_eq!(refusal["code"], "VAL_UNREPRESENTABLE");
    assert_eq!(refusal["field"], "duration_ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_valued_bodies_are_stored_as_redacted_json_text() {
    let app = spawn_app().await;
    let record = json!({
        "service": "llm", "endpoint": "/v1/login", "method": "POST", "status_code": 200,
        "duration_ms": 4,
        "request_body": {"user": "ann", "password": "hunter2-secret", "nested": [{"api_token": "tok-xyz"}]},
        "response_body": [1, 2.5, {"ok": true}]
    });
    assert_eq!(app.requests().try_ingest(&record).await.status(), 202);
    let number = json!({"service": "llm", "path": "/v1/count", "method": "GET", "status": 200,
                        "duration_ms": 1, "response_body": 42});
    assert_eq!(app.requests().try_ingest(&number).await.status(), 202);

    let page = requests(&app, "service=llm&path_contains=login", 1).await;
    let stored = &page.items[0];
    let request_body: Value =
        serde_json::from_str(stored.request_body.as_deref().unwrap()).unwrap();
    assert_eq!(
        request_body,
        json!({"user": "ann", "password": "[REDACTED]", "nested": [{"api_token": "[REDACTED]"}]})
    );
    assert_eq!(
        stored.response_body.as_deref(),
        Some(r#"[1,2.5,{"ok":true}]"#)
    );
    let page = requests(&app, "service=llm&path_contains=count", 1).await;
    assert_eq!(page.items[0].response_body.as_deref(), Some("42"));
    let client = app.pool.get().await.unwrap();
    let leaked: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE data::text LIKE '%hunter2-secret%' \
             OR data::text LIKE '%tok-xyz%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "the secrets are in the event log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_naming_a_field_both_ways_is_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let good = json!({"service": "llm", "endpoint": "/a", "method": "GET", "status_code": 200,
                      "duration_ms": 1});
    let mut mixed = good.clone();
    mixed["path"] = json!("/b");
    let response = app.requests().try_ingest(&json!([good, mixed])).await;
    let body = problem(response, 422).await;
    assert_eq!(body["code"], "VAL_INVALID_FIELD");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("records[1]: path:") && detail.contains("endpoint"),
        "{detail}"
    );
    let mut mixed = good.clone();
    mixed["status"] = json!(200);
    let body = problem(app.requests().try_ingest(&mixed).await, 422).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("record: status:") && detail.contains("status_code"),
        "{detail}"
    );
    let client = app.pool.get().await.unwrap();
    let written: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE data->>'service' = 'llm'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_on_any_route_and_recorded_cut_short() {
    let app = spawn_app().await;
    let oversized = format!(
        r#"{{"password": "hunter2-secret", "owner": "acme", "tier": "pro", "padding": "{}"}}"#,
        "x".repeat(100 * 1024)
    );
    for (method, path) in [
        (reqwest::Method::POST, "/v1/licenses"),
        (reqwest::Method::GET, "/v1/licenses"),
        (reqwest::Method::POST, "/v1/no-such-route"),
        (reqwest::Method::GET, "/admin"),
    ] {
        // The service answers without reading the whole body, with `Connection: close`, so
        // the client's next request goes on a new connection.
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .header("content-type", "application/json")
            .body(oversized.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["connection"], "close");
        let body = problem(response, 413).await;
        assert_eq!(body["code"], "VAL_BODY_TOO_LARGE", "{method} {path}");
    }
    // Request ingestion keeps its larger limit.
    let record = json!({"service": "big", "method": "POST", "path": "/x", "status": 200,
                        "duration_ms": 1, "request_body": "y".repeat(200 * 1024)});
    assert_eq!(app.requests().try_ingest(&record).await.status(), 202);

    let page = requests(&app, "status=413&limit=10", 4).await;
    for record in &page.items {
        let stored = record.request_body.as_deref().unwrap();
        assert!(stored.ends_with("…[truncated]"), "{stored}");
        assert!(stored.chars().count() <= 2000 + "…[truncated]".chars().count());
        assert!(
            stored.contains(r#""password":"[REDACTED]""#)
                || stored.contains(r#""password": "[REDACTED]""#),
            "{stored}"
        );
        assert!(!stored.contains("hunter2"), "{stored}");
    }
    let page = requests(&app, "service=big", 1).await;
    let stored = page.items[0].request_body.as_deref().unwrap();
    assert!(stored.ends_with("…[truncated]"), "{stored}");
}

/// The query behind a request's detail page finds the events through the correlation index,
/// which leaves request records out (V11): its condition must keep matching the index's
/// predicate, or the page would read the log from one end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_a_request_are_found_through_the_correlation_index() {
    let app = spawn_app().await;
    for _ in 0..20 {
        app.issue_license().await;
    }
    let client = app.database.pool().get().await.unwrap();
    client
        .batch_execute("ANALYZE events; SET enable_seqscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(
            &format!(
                "EXPLAIN {}",
                keyledger_query::request::events_of_a_request()
            ),
            &[&"a-request-id"],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("events_correlation_idx"),
        "the request's events are not looked up by index:\n{plan}"
    );
}
