//! The event log itself: ordering under concurrency, group commit, immutability, the hash chain.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keyledger_events::{AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent, Notifier};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestDatabase, eventually};

fn event(n: usize) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "TestHappened",
        schema_version: 1,
        data: json!({"n": n}),
    }
}

fn append(stream_id: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        stream_id: stream_id.to_owned(),
        expected,
        events,
        metadata: Metadata::default(),
        idempotency: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_following_all_sees_every_committed_event_once_in_increasing_positions() {
    let database = TestDatabase::create().await;
    // Two writers, as two processes would have.
    let writers = [database.store(), database.store()];
    let reader = database.store();
    let done = Arc::new(AtomicBool::new(false));

    let follow = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut checkpoint = 0;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = reader.read_all(checkpoint, 50).await.unwrap();
                for e in &batch {
                    seen.push((e.position, e.event_id));
                    checkpoint = e.position;
                }
                if batch.is_empty() && finished {
                    return seen;
                }
            }
        })
    };

    let mut tasks = Vec::new();
    for task in 0..40 {
        let writer = writers[task % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for round in 0..10 {
                let stream = format!("test-{}", Uuid::new_v4());
                let events = vec![event(round), event(round + 1)];
                let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
                writer
                    .append(append(&stream, ExpectedVersion::NoStream, events))
                    .await
                    .unwrap();
                acknowledged.extend(ids);
            }
            acknowledged
        }));
    }
    let mut acknowledged = HashSet::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let seen = follow.await.unwrap();

    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "positions strictly increase"
    );
    let seen_ids: Vec<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    let unique: HashSet<Uuid> = seen_ids.iter().copied().collect();
    assert_eq!(unique.len(), seen_ids.len(), "no event seen twice");
    assert_eq!(unique, acknowledged, "every acknowledged event seen");
    assert_eq!(acknowledged.len(), 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_share_append_transactions() {
    let database = TestDatabase::create().await;
    let store = database.store();
    let appends = (0..200).map(|n| {
        let store = store.clone();
        async move {
            store
                .append(append(
                    &format!("test-{}", Uuid::new_v4()),
                    ExpectedVersion::NoStream,
                    vec![event(n)],
                ))
                .await
                .unwrap()
        }
    });
    futures::future::join_all(appends).await;

    let client = database.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*), max(commands) FROM \
               (SELECT xmin::text, count(DISTINCT stream_id) AS commands FROM events GROUP BY 1) t",
            &[],
        )
        .await
        .unwrap();
    let (transactions, largest): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        largest > 1,
        "some transaction carried several commands' appends"
    );
    assert!(
        transactions < 200,
        "200 commands took {transactions} transactions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_append_fails_alone_and_its_batch_commits() {
    let database = TestDatabase::create().await;
    let store = database.store();
    let contested = format!("test-{}", Uuid::new_v4());
    let requests: Vec<_> = (0..30)
        .map(|n| {
            let stream = if n % 3 == 0 {
                contested.clone()
            } else {
                format!("test-{}", Uuid::new_v4())
            };
            let store = store.clone();
            async move {
                (
                    n % 3 == 0,
                    store
                        .append(append(&stream, ExpectedVersion::NoStream, vec![event(n)]))
                        .await,
                )
            }
        })
        .collect();
    let results = futures::future::join_all(requests).await;

    let contested_ok = results.iter().filter(|(c, r)| *c && r.is_ok()).count();
    let contested_conflicts = results
        .iter()
        .filter(|(c, r)| *c && matches!(r, Err(keyledger_events::StoreError::Conflict { .. })))
        .count();
    let others_ok = results.iter().filter(|(c, r)| !*c && r.is_ok()).count();
    assert_eq!(contested_ok, 1);
    assert_eq!(contested_conflicts, 9);
    assert_eq!(others_ok, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_delete_and_truncate_on_events_are_refused() {
    let database = TestDatabase::create().await;
    let store = database.store();
    store
        .append(append("test-1", ExpectedVersion::NoStream, vec![event(1)]))
        .await
        .unwrap();
    let client = database.pool().get().await.unwrap();
    for statement in [
        "UPDATE events SET data = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let error = client.batch_execute(statement).await.unwrap_err();
        assert!(
            error
                .as_db_error()
                .unwrap()
                .message()
                .contains("append-only"),
            "{statement}: {error}"
        );
    }
    let count: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

fn keyledger(args: &[&str], database: &TestDatabase) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(args)
        .env("DATABASE_URL", &database.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_an_untouched_log_and_names_an_altered_position() {
    let database = TestDatabase::create().await;
    let store = database.store();
    for n in 0..20 {
        // Awkward numbers must hash the same after a trip through jsonb.
        let mut e = event(n);
        e.data = json!({"n": n, "f": 0.1, "big": 12345678901234567890u64, "exp": 1e300, "neg": -7, "nested": {"z": 1, "a": [1.5, "x"]}});
        store
            .append(append(&format!("test-{n}"), ExpectedVersion::Any, vec![e]))
            .await
            .unwrap();
    }
    let (ok, output) = keyledger(&["verify"], &database);
    assert!(ok, "{output}");
    assert!(output.contains("ok: 20 events"), "{output}");

    let client = database.pool().get().await.unwrap();
    client
        .batch_execute(
            "ALTER TABLE events DISABLE TRIGGER USER; \
             UPDATE events SET data = jsonb_set(data::jsonb, '{n}', '99')::json WHERE position = 13; \
             ALTER TABLE events ENABLE TRIGGER USER;",
        )
        .await
        .unwrap();
    let (ok, output) = keyledger(&["verify"], &database);
    assert!(!ok);
    assert!(output.contains("position 13"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_deleted_rows_and_a_cut_tail_against_an_expected_head() {
    let database = TestDatabase::create().await;
    let store = database.store();
    for n in 0..10 {
        store
            .append(append(
                &format!("test-{n}"),
                ExpectedVersion::Any,
                vec![event(n)],
            ))
            .await
            .unwrap();
    }
    let (ok, output) = keyledger(&["verify"], &database);
    assert!(ok);
    let head = output.rsplit("head ").next().unwrap().trim().to_owned();
    assert!(head.starts_with("10:"), "{head}");

    let client = database.pool().get().await.unwrap();
    client
        .batch_execute(
            "ALTER TABLE events DISABLE TRIGGER USER; \
             DELETE FROM events WHERE position = 10; \
             ALTER TABLE events ENABLE TRIGGER USER;",
        )
        .await
        .unwrap();
    // The chain itself still holds for 1..=9; only the auditor's head shows the cut.
    let (ok, _) = keyledger(&["verify"], &database);
    assert!(ok);
    let (ok, output) = keyledger(&["verify", "--expect-head", &head], &database);
    assert!(!ok);
    assert!(output.contains("past the end of the log"), "{output}");

    client
        .batch_execute(
            "ALTER TABLE events DISABLE TRIGGER USER; \
             DELETE FROM events WHERE position = 4; \
             ALTER TABLE events ENABLE TRIGGER USER;",
        )
        .await
        .unwrap();
    let (ok, output) = keyledger(&["verify"], &database);
    assert!(!ok);
    assert!(output.contains("position 4 is missing"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_is_woken_by_a_commit_in_another_process() {
    // LISTEN/NOTIFY: the notifier of one "process" learns of another's commit.
    let database = TestDatabase::create().await;
    let listener_notifier = Notifier::default();
    let listen = tokio::spawn(keyledger_events::notifier::listen(
        database.url.clone(),
        listener_notifier.clone(),
    ));
    let writer = database.store();
    let mut head = listener_notifier.head();
    let position = eventually(Duration::from_secs(10), "a NOTIFY of the commit", || {
        let writer = writer.clone();
        let current = *head.borrow_and_update();
        async move {
            if current > 0 {
                return Some(current);
            }
            // The LISTEN may not be in place yet: keep committing until one is heard.
            writer
                .append(append("test-x", ExpectedVersion::Any, vec![event(0)]))
                .await
                .unwrap();
            None
        }
    })
    .await;
    assert!(position >= 1);
    listen.abort();
}
