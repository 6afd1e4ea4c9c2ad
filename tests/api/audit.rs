//! Signed checkpoints: the head signed with the audit key, the key published from the log, and
//! an export checked offline against both.

use std::io::Cursor;
use std::process::Command;
use std::time::Duration;

use keyledger_command::audit::{AuditKey, sign_if_moved};
use keyledger_events::audit::{KeySet, SignedCheckpoint, SigningKey};
use keyledger_events::store::{AppendRequest, PgEventStore};
use keyledger_events::verify::{self, Finding};
use keyledger_events::{EventStore, ExpectedVersion, Metadata, NewEvent};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{NATS, TestDatabase, TestStream, eventually, spawn_app_with};

async fn happen(store: &PgEventStore, n: usize) {
    for i in 0..n {
        store
            .append(AppendRequest {
                stream_id: format!("test-{}", Uuid::new_v4()),
                expected: ExpectedVersion::NoStream,
                events: vec![NewEvent {
                    event_id: Uuid::new_v4(),
                    event_type: "TestHappened",
                    schema_version: 1,
                    data: json!({"i": i}),
                }],
                metadata: Metadata::default(),
                idempotency: None,
            })
            .await
            .unwrap();
    }
}

/// The whole log as an export.
async fn export(database: &TestDatabase) -> String {
    let client = database.pool().get().await.unwrap();
    verify::read_stored(&client, 0, i64::MAX, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|event| serde_json::to_string(event).unwrap() + "\n")
        .collect()
}

fn check(text: &str, keys: &KeySet) -> verify::Report {
    verify::verify_export(
        Cursor::new(text.as_bytes()),
        verify::Chain::new(None).with_keys(keys),
    )
    .unwrap()
}

fn keys_of(key: &SigningKey) -> KeySet {
    KeySet {
        keys: vec![key.public_key().clone()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_is_signed_only_when_the_log_moved_and_the_key_is_recorded_first() {
    let database = TestDatabase::create().await;
    let store = database.store();
    let pool = database.pool();
    let key = AuditKey::new(SigningKey::from_seed([21; 32]));
    assert_eq!(
        sign_if_moved(&store, &pool, &key).await.unwrap(),
        None,
        "an empty log has no head to sign"
    );
    happen(&store, 3).await;
    assert_eq!(sign_if_moved(&store, &pool, &key).await.unwrap(), Some(3));
    assert_eq!(
        sign_if_moved(&store, &pool, &key).await.unwrap(),
        None,
        "nothing moved since the last checkpoint"
    );
    happen(&store, 1).await;
    // Positions: 1-3 events, 4 the key, 5 the checkpoint, 6 an event.
    assert_eq!(sign_if_moved(&store, &pool, &key).await.unwrap(), Some(6));
    let report = check(&export(&database).await, &keys_of(key.key()));
    assert_eq!(report.finding, None);
    assert_eq!(report.checkpoints, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_signed_by_an_unpublished_key_or_stating_another_hash_is_named() {
    let database = TestDatabase::create().await;
    let store = database.store();
    let pool = database.pool();
    let published = SigningKey::from_seed([22; 32]);
    happen(&store, 2).await;
    sign_if_moved(
        &store,
        &pool,
        &AuditKey::new(SigningKey::from_seed([22; 32])),
    )
    .await
    .unwrap();
    let good = export(&database).await;
    assert_eq!(check(&good, &keys_of(&published)).finding, None);

    // Someone with database access appends a checkpoint of their own key: the chain holds (they
    // went through the writer), but the signature is not the published key's.
    let intruder = AuditKey::recorded(SigningKey::from_seed([23; 32]));
    happen(&store, 1).await;
    let forged_at = sign_if_moved(&store, &pool, &intruder)
        .await
        .unwrap()
        .unwrap()
        + 1;
    let report = check(&export(&database).await, &keys_of(&published));
    assert!(
        matches!(&report.finding, Some(Finding::BadCheckpoint { position, .. }) if *position == forged_at),
        "{:?}",
        report.finding
    );
    assert_eq!(report.events, forged_at - 1);

    // A checkpoint rightly signed, stating a hash the chain does not have at its position.
    let database = TestDatabase::create().await;
    let store2 = database.store();
    happen(&store2, 2).await;
    let lying = published.sign_checkpoint(2, &[0u8; 32], chrono::Utc::now());
    store2
        .append(AppendRequest {
            stream_id: keyledger_events::audit::checkpoint_stream(Uuid::new_v4()),
            expected: ExpectedVersion::NoStream,
            events: vec![keyledger_events::EventPayload::to_new_event(
                &keyledger_events::audit::AuditEvent::CheckpointSigned(lying),
                Uuid::new_v4(),
            )],
            metadata: Metadata::default(),
            idempotency: None,
        })
        .await
        .unwrap();
    assert_eq!(
        check(&export(&database).await, &keys_of(&published)).finding,
        Some(Finding::CheckpointMismatch { position: 3, at: 2 })
    );
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_signs_its_head_publishes_key_and_checkpoint_and_an_auditor_detects_a_cut_tail()
{
    let stream = TestStream::create().await;
    let relay = stream.config.clone();
    let app = spawn_app_with(|args| {
        args.checkpoint_interval = Duration::from_millis(100);
        args.nats_url = Some(NATS.to_owned());
        args.nats_stream = relay.stream.clone();
        args.nats_subject_prefix = relay.subject_prefix.clone();
        args.nats_head_subject = relay.head_subject.clone();
        args.nats_checkpoint_subject = relay.checkpoint_subject.clone();
    })
    .await;
    app.issue_license().await;
    let head = app.head().await;
    let checkpoint: Value = eventually(Duration::from_secs(10), "a signed checkpoint", || async {
        let response = app.log().try_latest_checkpoint().await;
        if response.status() != 200 {
            return None;
        }
        let checkpoint: Value = response.json().await.ok()?;
        (checkpoint["position"].as_i64()? >= head).then_some(checkpoint)
    })
    .await;
    let signed: SignedCheckpoint = serde_json::from_value(checkpoint.clone()).unwrap();

    // The keys are public and verify the checkpoint; its hash is the log's at its position.
    let keys_response = app.anonymous().log().try_keys().await;
    assert_eq!(keys_response.status(), 200);
    let keys: KeySet = keys_response.json().await.unwrap();
    assert_eq!(signed.verify(&keys), Ok(()));
    let client = app.database.pool().get().await.unwrap();
    let stored: Vec<u8> = client
        .query_one(
            "SELECT hash FROM events WHERE position = $1",
            &[&signed.checkpoint.position],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(signed.checkpoint.hash, hex::encode(stored));

    // The listing pages by the recording event's position.
    let page: Value = app
        .get("/v1/checkpoints?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["checkpoints"].as_array().unwrap().len(), 1);
    assert!(page["next_after"].as_i64().unwrap() > 0);

    // The relay keeps the checkpoints in a JetStream stream of their own.
    let published: SignedCheckpoint = eventually(
        Duration::from_secs(10),
        "a checkpoint on the checkpoint subject",
        || async {
            let checkpoints = stream
                .context
                .get_stream(&relay.checkpoint_stream())
                .await
                .ok()?;
            let message = checkpoints.get_raw_message(1).await.ok()?;
            serde_json::from_slice(&message.payload).ok()
        },
    )
    .await;
    assert_eq!(published.verify(&keys), Ok(()));

    // An auditor with the keys and the checkpoint: the whole log verifies, a log cut before the
    // checkpoint does not.
    let dir = std::env::temp_dir();
    let id = Uuid::new_v4();
    let keys_file = dir.join(format!("keyledger-keys-{id}.json"));
    let checkpoint_file = dir.join(format!("keyledger-checkpoint-{id}.json"));
    let full = dir.join(format!("keyledger-full-{id}.ndjson"));
    let cut = dir.join(format!("keyledger-cut-{id}.ndjson"));
    std::fs::write(&keys_file, serde_json::to_vec(&keys).unwrap()).unwrap();
    std::fs::write(&checkpoint_file, checkpoint.to_string()).unwrap();
    let keyledger = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_keyledger"))
            .args(args)
            .env("DATABASE_URL", &app.database.url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let until = (signed.checkpoint.position - 1).to_string();
    let (ok, out) = keyledger(&["export", "--out", full.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = keyledger(&["export", "--out", cut.to_str().unwrap(), "--until", &until]);
    assert!(ok, "{out}");
    let verify_file = |file: &std::path::Path| {
        keyledger(&[
            "verify",
            "--file",
            file.to_str().unwrap(),
            "--keys",
            keys_file.to_str().unwrap(),
            "--expect-checkpoint",
            checkpoint_file.to_str().unwrap(),
        ])
    };
    let (ok, out) = verify_file(&full);
    assert!(ok, "{out}");
    assert!(out.contains("signed checkpoints verified: "), "{out}");
    let (ok, out) = verify_file(&cut);
    assert!(!ok, "{out}");
    assert!(out.contains("cut off"), "{out}");
    for file in [keys_file, checkpoint_file, full, cut] {
        let _ = std::fs::remove_file(file);
    }
    stream.delete().await;
}

/// A replaced signing key stays published: checkpoints it signed still verify with the key
/// set the service serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_key_stays_published_and_its_checkpoints_still_verify() {
    let app = crate::helpers::spawn_app().await;
    let store = app.database.store();
    let pool = app.database.pool();
    let old = AuditKey::new(SigningKey::from_seed([31; 32]));
    let new = AuditKey::new(SigningKey::from_seed([32; 32]));
    happen(&store, 2).await;
    sign_if_moved(&store, &pool, &old).await.unwrap().unwrap();
    happen(&store, 2).await;
    sign_if_moved(&store, &pool, &new).await.unwrap().unwrap();

    let keys: KeySet = app
        .anonymous
        .get(app.url("/.well-known/keyledger-keys.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = keys.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, [old.key().kid(), new.key().kid()]);
    let report = check(&export(&app.database).await, &keys);
    assert_eq!(report.finding, None);
    assert_eq!(report.checkpoints, Some(2));
}
