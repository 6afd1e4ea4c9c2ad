//! After issuance the raw key appears nowhere: not in a dump of the database, the service's
//! log output, the NATS messages, or any later response.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{ServiceProcess, TestDatabase, TestStream, checkpoint, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_key_appears_nowhere_after_issuance() {
    let database = TestDatabase::create().await;
    let stream = TestStream::create().await;
    let service = ServiceProcess::start(
        &database.url,
        &[
            ("NATS_URL", crate::helpers::NATS),
            ("NATS_STREAM", &stream.config.stream),
            ("NATS_SUBJECT_PREFIX", &stream.config.subject_prefix),
            ("RUST_LOG", "debug"),
            ("LOG_FORMAT", "json"),
        ],
    )
    .await;
    let http = crate::helpers::admin_client();
    let url = |path: &str| format!("{}{path}", service.address);

    let mut keys = Vec::new();
    let mut responses = Vec::new();
    for n in 0..5 {
        let issued: Value = http
            .post(url("/v1/licenses"))
            .json(&json!({"owner": format!("owner-{n}"), "tier": "enterprise"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = issued["key"].as_str().unwrap().to_owned();
        let id = issued["license_id"].as_str().unwrap().to_owned();
        let validated = http
            .post(url("/v1/licenses/validate"))
            .json(&json!({"key": key, "feature": "export"}))
            .send()
            .await
            .unwrap();
        assert_eq!(validated.status(), 200);
        responses.push(validated.text().await.unwrap());
        // A client mistake that puts the key where it does not belong.
        let mistaken = http
            .post(url("/v1/licenses"))
            .json(&json!({"owner": "x", "tier": key}))
            .send()
            .await
            .unwrap();
        assert_eq!(mistaken.status(), 422);
        responses.push(mistaken.text().await.unwrap());
        if n == 0 {
            let revoked = http
                .post(url(&format!("/v1/licenses/{id}/revoke")))
                .json(&json!({"reason": "test"}))
                .send()
                .await
                .unwrap();
            responses.push(revoked.text().await.unwrap());
        }
        responses.push(
            http.get(url(&format!("/v1/licenses/{id}")))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
        keys.push(key);
    }
    responses.push(
        http.get(url("/v1/events?limit=1000"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );

    // Everything reached NATS.
    let pool = database.pool();
    let head = {
        let client = pool.get().await.unwrap();
        keyledger_events::store::head_on(&client).await.unwrap()
    };
    // 11 domain events, and the request log's records of the requests above.
    assert!(head > 11, "{head}");
    let name = stream.config.checkpoint_name();
    eventually(
        Duration::from_secs(20),
        "the relay to publish everything",
        || {
            let pool = pool.clone();
            let name = name.clone();
            async move { (checkpoint(&pool, &name).await >= head).then_some(()) }
        },
    )
    .await;
    let messages = stream.messages().await;
    assert!(messages.len() as i64 >= head);
    assert!(
        messages
            .iter()
            .any(|m| m.subject.ends_with("ApiRequestRecorded")),
        "request records reach NATS too"
    );

    let dump = Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", &database.name])
        .output()
        .unwrap();
    assert!(dump.status.success());
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.contains("LicenseIssued"), "the dump holds the log");

    let log = service.log_text();
    assert!(log.contains("keyledger is serving"), "the log was captured");

    for key in &keys {
        assert!(!dump.contains(key.as_str()), "key in the database dump");
        assert!(!log.contains(key.as_str()), "key in the log output");
        for message in &messages {
            assert!(
                !String::from_utf8_lossy(&message.payload).contains(key.as_str()),
                "key on NATS"
            );
            for (_, values) in message.headers.iter() {
                assert!(
                    values.iter().all(|v| !v.as_str().contains(key.as_str())),
                    "key in NATS headers"
                );
            }
        }
        for response in &responses {
            assert!(
                !response.contains(key.as_str()),
                "key in a later response: {response}"
            );
        }
    }
    stream.delete().await;
}
