//! Trusting the record: what the API accepts is stored exactly and reads back identically, what
//! it cannot store is refused at the door, `verify` holds on the service's own traffic, and no
//! stored event stops a reader for good.

use std::process::Command;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::helpers::{
    NewLicense, NewSession, TestApp, TestDatabase, eventually, problem, spawn_app,
};

fn verify(database: &TestDatabase) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .arg("verify")
        .env("DATABASE_URL", &database.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

async fn post_text(app: &TestApp, path: &str, body: &str) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn health(app: &TestApp) -> Value {
    app.get("/health").await.json().await.unwrap()
}

/// The same JSON, bit for bit (`Value`'s `==` calls -0.0 and 0.0 equal).
fn same(a: &Value, b: &Value) -> bool {
    serde_json::to_string(a).unwrap() == serde_json::to_string(b).unwrap()
}

async fn license_count(app: &TestApp) -> i64 {
    app.count_of("LicenseIssued").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_beyond_a_double_is_refused_naming_the_member_and_nothing_is_written() {
    let app = spawn_app().await;

    let response = post_text(
        &app,
        "/v1/licenses",
        r#"{"owner":"a","tier":"pro","metadata":{"huge":1e400}}"#,
    )
    .await;

    let body = problem(response, 422).await;
    assert_eq!(body["code"], "VAL_UNREPRESENTABLE");
    assert_eq!(body["field"], "metadata.huge");
    assert!(
        body["detail"].as_str().unwrap().contains("metadata.huge"),
        "{body}"
    );
    assert_eq!(license_count(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_double_is_kept_exactly_and_every_reader_goes_on() {
    let app = spawn_app().await;

    let response = post_text(
        &app,
        "/v1/licenses",
        r#"{"owner":"a","tier":"pro","metadata":{"huge":1.7976931348623157e308,"d":3.9176200000000003,"z":-0.0,"big":1e19}}"#,
    )
    .await;
    assert_eq!(response.status(), 201);
    let issued: Value = response.json().await.unwrap();
    let id = issued["license_id"].as_str().unwrap();
    let position = issued["position"].as_i64().unwrap();

    let expected = json!({"huge": f64::MAX, "d": 3.917_620_000_000_000_3, "z": -0.0, "big": 1e19});
    let license: Value = app
        .get_at(&format!("/v1/licenses/{id}"), position)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        same(&license["metadata"], &expected),
        "{}",
        license["metadata"]
    );
    let page: Value = app.get("/v1/events?limit=1000").await.json().await.unwrap();
    let issued_event = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "LicenseIssued")
        .unwrap();
    assert!(same(&issued_event["data"]["metadata"], &expected));
    // The search (an async projection) finds it, and /health is fine.
    let search: Value = app
        .get_at("/v1/licenses?owner=a", position)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(search["items"].as_array().unwrap().len(), 1, "{search}");
    assert_eq!(health(&app).await["status"], "ok");
    let (ok, output) = verify(&app.database);
    assert!(ok, "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_a_mixed_workload_with_the_request_log_on() {
    let app = spawn_app().await;

    for n in 0..5 {
        let license = app
            .issue_license_with(NewLicense::new(&format!("owner-{n}"), "pro").metadata(
                json!({"ratio": 3.917_620_000_000_000_3, "n": n, "note": "caf\u{e9} \u{1F600}"}),
            ))
            .await;
        app.validate(&license.key).await;
        if n % 2 == 0 {
            app.revoke(license.license_id, "chargeback").await;
        }
    }
    let sessions = app.sessions();
    let session = sessions
        .create(&NewSession::new("planner").metadata(json!({"temperature": 0.7, "tokens": 1e5})))
        .await;
    sessions
        .try_transition_with(session.session_id, &json!({"to": "active"}))
        .await;
    let response = app
        .requests()
        .try_ingest(
            &json!({"service": "llm", "method": "POST", "path": "/v1/chat", "status": 200,
                    "duration_ms": 12.345_678_901_234_567, "at": "2026-11-30T10:00:00Z"}),
        )
        .await;
    assert_eq!(response.status(), 202);
    // Every request above is in the log as a request record.
    eventually(Duration::from_secs(10), "the request records", || async {
        (app.count_of("ApiRequestRecorded").await >= 14).then_some(())
    })
    .await;

    let (ok, output) = verify(&app.database);
    assert!(ok, "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_refused_naming_the_field_never_as_an_outage() {
    let app = spawn_app().await;
    let id = app.issue_license().await.license_id;

    let cases = [
        (
            "/v1/licenses".to_owned(),
            r#"{"owner":"a","tier":"pro","metadata":{"note":"x\u0000y"}}"#,
            "metadata.note",
        ),
        (
            format!("/v1/licenses/{id}/revoke"),
            r#"{"reason":"bad\u0000"}"#,
            "reason",
        ),
        (
            "/v1/sessions".to_owned(),
            r#"{"agent_role":"planner","metadata":{"a":["\u0000"]}}"#,
            "metadata.a[0]",
        ),
    ];
    for (path, body, field) in cases {
        let before = app.event_count().await;
        let response = post_text(&app, &path, body).await;
        let problem = problem(response, 422).await;
        assert_eq!(problem["code"], "VAL_UNREPRESENTABLE", "{path}: {problem}");
        assert_eq!(problem["field"], field, "{path}");
        assert_eq!(app.event_count().await, before, "{path} wrote nothing");
    }

    let response = app.get("/v1/streams/%00/events").await;
    let problem = problem(response, 400).await;
    assert_eq!(problem["code"], "VAL_INVALID_PARAMETER");
    let response = app.get("/v1/licenses?owner=%00").await;
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_with_a_raw_nul_byte_is_recorded_and_the_request_viewer_goes_on() {
    let app = spawn_app().await;

    let response = post_text(&app, "/v1/licenses", "{\"owner\":\"a\0b\"}").await;
    assert_eq!(response.status(), 400);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    let record = eventually(Duration::from_secs(10), "the request record", || async {
        let page: Value = app
            .requests()
            .try_list("?path_contains=/v1/licenses")
            .await
            .json()
            .await
            .ok()?;
        page["items"]
            .as_array()?
            .iter()
            .find(|r| r["request_id"] == request_id.as_str())
            .cloned()
    })
    .await;
    assert_eq!(record["status"], 400);
    assert_eq!(health(&app).await["status"], "ok");
}

/// An event that no reader can parse, written around the service (as a tampered or damaged
/// row would be), followed by ordinary traffic.
pub(crate) async fn write_unreadable_event(pool: &deadpool_postgres::Pool) -> i64 {
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({})",
        keyledger_events::writer::APPEND_LOCK_KEY
    ))
    .await
    .unwrap();
    let position: i64 = tx
        .query_one(
            "INSERT INTO events (position, event_id, stream_id, version, event_type, \
                 schema_version, data, metadata, recorded_at, hash, hash_rule) \
             SELECT coalesce(max(position), 0) + 1, gen_random_uuid(), \
                 'license-' || gen_random_uuid(), 1, 'LicenseIssued', 1, \
                 '{\"owner\": 1e400}', '{}', now(), '\\x00', 2 FROM events \
             RETURNING position",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    position
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_is_set_aside_loudly_and_the_rest_keeps_working() {
    let app = spawn_app().await;
    app.issue_license().await;
    let bad = write_unreadable_event(&app.pool).await;

    let after = app
        .issue_license_with(NewLicense::new("after", "pro"))
        .await;

    // The licenses projection goes on past the bad event: the next license is searchable.
    eventually(
        Duration::from_secs(20),
        "the license after the bad event",
        || async {
            let search: Value = app
                .licenses()
                .try_search("?owner=after")
                .await
                .json()
                .await
                .ok()?;
            (search["items"].as_array()?.len() == 1).then_some(())
        },
    )
    .await;
    // /health names it and the event it set aside.
    let health = health(&app).await;
    assert_eq!(health["status"], "degraded", "{health}");
    let licenses = health["components"]["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "licenses")
        .unwrap();
    assert_eq!(licenses["status"], "degraded", "{health}");
    assert_eq!(licenses["parked"], 1, "{health}");
    assert_eq!(licenses["parked_positions"], json!([bad]), "{health}");
    assert!(
        health["degraded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().starts_with("licenses: degraded")),
        "{health}"
    );
    // `$all` still reads through it, showing it as stored.
    let page = app.get("/v1/events?limit=1000").await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains(r#""data":{"owner": 1e400}"#), "{page}");
    // So does the admin hub's event page.
    let admin = app.get("/admin/events?event_type=LicenseIssued").await;
    assert_eq!(admin.status(), 200);
    assert!(admin.text().await.unwrap().contains("1e400"));
    // Commands go on, and verify names the row instead of failing to read the log.
    assert_eq!(app.validate(&after.key).await.code, "VALID");
    let (ok, output) = verify(&app.database);
    assert!(!ok);
    assert!(output.contains(&format!("position {bad}")), "{output}");
}

/// JSON text as a client may write it: numbers in every form (exponents, signs, long
/// mantissas, values beyond a double), strings with escapes, surrogate pairs and raw non-BMP
/// characters (and now and then a NUL), nesting, and whitespace.
fn json_text() -> impl Strategy<Value = String> {
    let number = (
        any::<bool>(),
        "[0-9]{1,22}",
        proptest::option::of("[0-9]{1,22}"),
        proptest::option::of((any::<bool>(), 0u32..420)),
    )
        .prop_map(|(negative, int, frac, exp)| {
            let mut text = String::new();
            if negative {
                text.push('-');
            }
            let int = int.trim_start_matches('0');
            text.push_str(if int.is_empty() { "0" } else { int });
            if let Some(frac) = frac {
                text.push('.');
                text.push_str(&frac);
            }
            if let Some((down, exp)) = exp {
                text.push_str(&format!("e{}{exp}", if down { "-" } else { "+" }));
            }
            text
        });
    let string = proptest::collection::vec(
        (
            prop_oneof![
                8 => any::<char>().prop_filter("no NUL", |c| *c != '\0'),
                1 => Just('\0'),
                1 => Just('"'),
                1 => Just('\\'),
                1 => proptest::char::range('\u{10000}', '\u{10FFFF}'),
            ],
            any::<bool>(),
        ),
        0..8,
    )
    .prop_map(|chars| {
        let mut text = String::from("\"");
        for (c, escape) in chars {
            if escape || c < ' ' || c == '"' || c == '\\' {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    text.push_str(&format!("\\u{unit:04x}"));
                }
            } else {
                text.push(c);
            }
        }
        text.push('"');
        text
    });
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number,
        string.clone(),
    ];
    leaf.prop_recursive(6, 48, 5, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| format!("[ {} ]", items.join(" ,\n"))),
            proptest::collection::btree_map("[a-z\u{e9}\u{1F600}]{1,4}", inner, 0..5).prop_map(
                |members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, v)| format!("{}: {v}", serde_json::to_string(&k).unwrap()))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }
            ),
        ]
    })
    .prop_map(|value| format!("{{\"v\": {value}}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_json_a_client_sends_is_kept_exactly_or_refused_and_verify_holds() {
    let app = spawn_app().await;
    // Generated up front (the requests are async); a failure prints the case it failed on.
    let mut runner = TestRunner::new(Config::default());
    let strategy = json_text();
    let cases: Vec<String> = (0..64)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();

    let (mut kept, mut refused) = (0, 0);
    for metadata in &cases {
        let body = format!(r#"{{"owner":"p","tier":"pro","metadata":{metadata}}}"#);
        let response = post_text(&app, "/v1/licenses", &body).await;
        let check = keyledger_api::json_check::check(metadata.as_bytes());
        if response.status() == 422 {
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["code"], "VAL_UNREPRESENTABLE", "{metadata}");
            assert!(check.is_err(), "{metadata} refused: {problem}");
            refused += 1;
            continue;
        }
        assert_eq!(response.status(), 201, "{metadata}");
        assert!(check.is_ok(), "{metadata} should have been refused");
        let sent: Value = serde_json::from_str(metadata).unwrap();
        let issued: Value = response.json().await.unwrap();
        let id = issued["license_id"].as_str().unwrap();
        let position = issued["position"].as_i64().unwrap();
        let read: Value = app
            .get_at(&format!("/v1/licenses/{id}"), position)
            .await
            .json()
            .await
            .unwrap();
        assert!(
            same(&read["metadata"], &sent),
            "sent {metadata}, read {}",
            read["metadata"]
        );
        let events: Value = app
            .get(&format!("/v1/streams/license-{id}/events"))
            .await
            .json()
            .await
            .unwrap();
        assert!(same(&events["events"][0]["data"]["metadata"], &sent));
        // The request log keeps the body as text, whatever it holds.
        kept += 1;
    }
    assert!(kept > 0 && refused > 0, "kept {kept}, refused {refused}");
    let (ok, output) = verify(&app.database);
    assert!(ok, "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_before_the_log_kept_its_text_still_verifies_after_the_upgrade() {
    use keyledger_events::chain::{ChainInput, GENESIS, canonical_json, event_hash, to_micros};
    // A database as the release before left it: jsonb columns, hashes over canonical JSON.
    let database = TestDatabase::empty().await;
    keyledger_events::db::migrate_to(&database.url, Some(5))
        .await
        .unwrap();
    let client = database.pool().get().await.unwrap();
    let values = [
        json!({"duration_ms": 3.917_620_000_000_000_3, "status": 200}),
        json!({"metadata": {"huge": f64::MAX, "tiny": 5e-324, "u": u64::MAX, "i": i64::MIN}}),
        json!({"text": "caf\u{e9} \u{1F600} \"quoted\" \\ \n", "nested": [[[{"a": null}]]]}),
    ];
    let mut previous = GENESIS.to_vec();
    for (n, data) in values.iter().enumerate() {
        let position = n as i64 + 1;
        let event_id = uuid::Uuid::new_v4();
        let stream_id = format!("test-{event_id}");
        let metadata = json!({"correlation_id": "r-1", "actor": "api"});
        let at = to_micros(chrono::Utc::now());
        let hash = event_hash(
            &previous,
            &ChainInput {
                position,
                event_id,
                stream_id: &stream_id,
                version: 1,
                event_type: "TestEvent",
                schema_version: 1,
                data: &canonical_json(data),
                metadata: &canonical_json(&metadata),
                recorded_at: at,
            },
        );
        previous = hash.to_vec();
        client
            .execute(
                "INSERT INTO events (position, event_id, stream_id, version, event_type, \
                     schema_version, data, metadata, recorded_at, hash) \
                 VALUES ($1, $2, $3, 1, 'TestEvent', 1, $4, $5, $6, $7)",
                &[
                    &position,
                    &event_id,
                    &stream_id,
                    data,
                    &metadata,
                    &at,
                    &hash.to_vec(),
                ],
            )
            .await
            .unwrap();
    }
    drop(client);

    // The upgrade, then the service's own events after the old ones.
    let app = crate::helpers::spawn_app_on(database, |_| {}).await;
    app.issue_license_with(NewLicense::new("new", "pro").metadata(json!({"x": -0.0})))
        .await;

    let (ok, output) = verify(&app.database);
    assert!(ok, "{output}");
}
