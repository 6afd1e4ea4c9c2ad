//! The relay publishes every event to JetStream exactly once per Nats-Msg-Id, in commit order,
//! across restarts.

use std::collections::HashSet;
use std::time::Duration;

use keyledger_events::relay::{self, RelayConfig};
use keyledger_events::{
    AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent, Notifier, PgEventStore,
    WriterConfig,
};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestDatabase, TestStream, checkpoint, eventually};

async fn append_events(store: &PgEventStore, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for n in 0..count {
        let id = Uuid::new_v4();
        let category = if n % 2 == 0 {
            "license"
        } else {
            "license_usage"
        };
        store
            .append(AppendRequest {
                stream_id: format!("{category}-{}", Uuid::new_v4()),
                expected: ExpectedVersion::NoStream,
                events: vec![NewEvent {
                    event_id: id,
                    event_type: if n % 2 == 0 {
                        "LicenseIssued"
                    } else {
                        "LicenseValidated"
                    },
                    schema_version: 1,
                    data: json!({"n": n}),
                }],
                metadata: Metadata {
                    correlation_id: Some(format!("corr-{n}")),
                    ..Metadata::default()
                },
                idempotency: None,
            })
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

fn start_relay(
    database: &TestDatabase,
    config: &RelayConfig,
    stream: &TestStream,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(relay::run_until_stopped(
        database.pool(),
        stream.client.clone(),
        config.clone(),
        Notifier::default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_jetstream_exactly_once_even_when_the_relay_restarts() {
    let database = TestDatabase::create().await;
    let pool = database.pool();
    let (store, _) = PgEventStore::start(
        pool.clone(),
        WriterConfig::default(),
        vec![],
        None,
        Notifier::default(),
    );
    let stream = TestStream::create().await;
    let config = RelayConfig {
        batch_size: 10,
        ..stream.config.clone()
    };
    let name = config.checkpoint_name();
    let mut expected = append_events(&store, 300).await;

    // Stop the relay, most likely mid-stream (it publishes in batches of 10).
    let running = start_relay(&database, &config, &stream);
    eventually(
        Duration::from_secs(20),
        "the relay to publish some events",
        || {
            let pool = pool.clone();
            let name = name.clone();
            async move { (checkpoint(&pool, &name).await >= 40).then_some(()) }
        },
    )
    .await;
    running.abort();
    let _ = running.await;

    // A crash between the PubAcks and the checkpoint update: the relay's checkpoint lags what
    // JetStream already holds, so the restarted relay publishes those events again.
    pool.get()
        .await
        .unwrap()
        .execute(
            "UPDATE checkpoints SET position = greatest(position - 25, 0) WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap();
    expected.extend(append_events(&store, 30).await);

    let restarted = start_relay(&database, &config, &stream);
    eventually(Duration::from_secs(30), "the relay to catch up", || {
        let pool = pool.clone();
        let name = name.clone();
        async move { (checkpoint(&pool, &name).await == 330).then_some(()) }
    })
    .await;
    restarted.abort();

    let messages = stream.messages().await;
    assert_eq!(
        messages.len(),
        330,
        "one message per event, repeats dropped"
    );
    let ids: Vec<Uuid> = messages
        .iter()
        .map(|m| {
            m.headers
                .get("Nats-Msg-Id")
                .unwrap()
                .as_str()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 330);
    assert_eq!(ids, expected, "published in commit order");
    let positions: Vec<i64> = messages
        .iter()
        .map(|m| {
            m.headers
                .get("Keyledger-Position")
                .unwrap()
                .as_str()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(positions, (1..=330).collect::<Vec<_>>());
    assert_eq!(
        messages[0].subject.as_str(),
        format!("{}.license.LicenseIssued", config.subject_prefix)
    );
    assert_eq!(
        messages[1].subject.as_str(),
        format!("{}.license_usage.LicenseValidated", config.subject_prefix)
    );
    assert_eq!(
        messages[1]
            .headers
            .get("Keyledger-Correlation-Id")
            .unwrap()
            .as_str(),
        "corr-1"
    );
    stream.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_keep_working_while_nats_is_unreachable() {
    // A relay pointed at a port where no NATS listens: the log goes on, the relay lags.
    let unreachable = "nats://127.0.0.1:1";
    let app = crate::helpers::spawn_app_with(|args| {
        args.nats_url = Some(unreachable.into());
    })
    .await;
    let issued = app.issue_license().await;
    assert_eq!(app.validate(&issued.key).await.code, "VALID");
    let health: serde_json::Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["components"]["nats"]["status"], "down");
    // Nothing was published: the relay's lag is the whole log.
    assert_eq!(health["components"]["relay"]["lag"], health["head"]);
    assert!(health["head"].as_i64().unwrap() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_the_head_an_auditor_can_verify_against() {
    use futures::StreamExt;

    let database = TestDatabase::create().await;
    let pool = database.pool();
    let (store, _) = PgEventStore::start(
        pool.clone(),
        WriterConfig::default(),
        vec![],
        None,
        Notifier::default(),
    );
    let stream = TestStream::create().await;
    let mut heads = stream
        .client
        .subscribe(stream.config.head_subject.clone())
        .await
        .unwrap();
    stream.client.flush().await.unwrap();
    append_events(&store, 25).await;

    let relay = start_relay(&database, &stream.config, &stream);
    let head: serde_json::Value = tokio::time::timeout(Duration::from_secs(20), heads.next())
        .await
        .expect("a head within 20 s")
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .unwrap();
    relay.abort();
    assert_eq!(head["position"], 25);
    let client = pool.get().await.unwrap();
    let hash: Vec<u8> = client
        .query_one("SELECT hash FROM events WHERE position = 25", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(head["hash"], hex::encode(hash));
    let expected = head["expect_head"].as_str().unwrap().parse().unwrap();
    let report = keyledger_events::verify::verify(
        &client,
        keyledger_events::verify::Chain::new(Some(&expected)),
    )
    .await
    .unwrap();
    assert_eq!(report.finding, None);
    stream.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_is_set_aside_and_the_relay_publishes_the_rest() {
    let database = TestDatabase::create().await;
    let pool = database.pool();
    let (store, _) = PgEventStore::start(
        pool.clone(),
        WriterConfig::default(),
        vec![],
        None,
        Notifier::default(),
    );
    let stream = TestStream::create().await;
    let config = stream.config.clone();
    let name = config.checkpoint_name();
    let mut expected = append_events(&store, 3).await;
    let bad = crate::record::write_unreadable_event(&pool).await;
    expected.extend(append_events(&store, 3).await);

    let running = start_relay(&database, &config, &stream);
    eventually(Duration::from_secs(20), "the relay to go past it", || {
        let pool = pool.clone();
        let name = name.clone();
        async move { (checkpoint(&pool, &name).await == 7).then_some(()) }
    })
    .await;
    running.abort();

    let ids: Vec<Uuid> = stream
        .messages()
        .await
        .iter()
        .map(|m| {
            m.headers
                .get("Nats-Msg-Id")
                .unwrap()
                .as_str()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, expected, "every readable event, in order");
    let parked: Vec<i64> = pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT position FROM projection_parked WHERE projection = $1",
            &[&name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(parked, vec![bad]);
    stream.delete().await;
}
