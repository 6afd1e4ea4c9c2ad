//! NATS killed for 30 s under load: commands go on (the log is the source of truth), `/health`
//! shows the relay falling behind, and once NATS is back the relay publishes every event to
//! JetStream exactly once per event id, in position order, with no gap.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use crate::harness::{
    Answer, Load, OwnNats, OwnPostgres, ServiceSpec, admin_client, call, eventually,
};

const OUTAGE: Duration = Duration::from_secs(30);
const STREAM: &str = "FAULTS_EVENTS";
const RELAY: &str = "relay:FAULTS_EVENTS";

/// The relay's part of `/health`.
fn relay(health: &Value) -> &Value {
    &health["components"]["relay"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_stops_no_command_and_the_relay_publishes_every_event_once_in_order() {
    let postgres = OwnPostgres::start().await;
    let mut nats = OwnNats::start().await;
    let mut spec = ServiceSpec::new(&postgres.url())
        .env("NATS_URL", &nats.url())
        .env("NATS_STREAM", STREAM)
        .env("PROJECTION_STUCK_AFTER", "5s");
    let mut service = spec.start().await;
    let http = admin_client(Duration::from_secs(60));
    let clock = Instant::now();

    let licenses = service.licenses(&http);
    let (_, key) = licenses.seed("nats-seed", clock).await;

    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let mut load = Load::default();
    for worker in 0..2 {
        let (licenses, answers, key) = (licenses.clone(), answers.clone(), key.clone());
        load.client(Duration::from_millis(10), move |n| {
            let request = if n % 2 == 0 {
                licenses.issue(&format!("nats-{worker}-{n}"), "basic")
            } else {
                licenses.validate(&key)
            };
            let answers = answers.clone();
            async move {
                let answer = call(request, clock).await;
                answers.lock().unwrap().push(answer);
            }
        });
    }

    // The relay keeps up while NATS runs.
    eventually(Duration::from_secs(30), "the relay to publish", || {
        let (service, http) = (&service, &http);
        async move {
            let health = service.health(http).await?;
            (relay(&health)["position"].as_i64()? >= 50
                && health["components"]["nats"]["status"] == "up")
                .then_some(())
        }
    })
    .await;

    nats.kill();
    let down = Instant::now();
    let mut max_lag = 0;
    let mut samples = Vec::new();
    let mut stuck_seen = false;
    while down.elapsed() < OUTAGE {
        let health = service.health(&http).await.unwrap();
        let lag = relay(&health)["lag"].as_i64().unwrap();
        max_lag = max_lag.max(lag);
        samples.push((
            down.elapsed(),
            lag,
            health["components"]["nats"]["status"].clone(),
        ));
        if relay(&health)["status"] == "stuck" && health["status"] == "degraded" {
            stuck_seen = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let backlog = service.health(&http).await.unwrap()["head"]
        .as_i64()
        .unwrap();
    nats.start_again().await;
    let back = Instant::now();

    // The backlog of the outage is published while the load goes on; then the load stops.
    let backlog_published = eventually(
        Duration::from_secs(60),
        "the relay to publish the outage's backlog",
        || {
            let (service, http) = (&service, &http);
            async move {
                let health = service.health(http).await?;
                (relay(&health)["position"].as_i64()? >= backlog).then(|| back.elapsed())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.stop().await;
    let caught_up = eventually(
        Duration::from_secs(90),
        "the relay to publish the whole log",
        || {
            let (service, http) = (&service, &http);
            async move {
                let health = service.health(http).await?;
                let relay = relay(&health);
                (relay["lag"] == 0 && relay["position"] == health["head"]).then(|| back.elapsed())
            }
        },
    )
    .await;
    service.assert_running();

    // Commands were never refused for want of NATS.
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let refused: Vec<&Answer> = answers.iter().filter(|a| !a.is_success()).collect();
    assert!(
        refused.is_empty(),
        "{} of {} commands failed while NATS was down, e.g. {}",
        refused.len(),
        answers.len(),
        refused[0].describe()
    );
    let during = answers
        .iter()
        .filter(|a| {
            a.sent >= down.duration_since(clock) && a.answered() <= back.duration_since(clock)
        })
        .count();
    assert!(
        during >= 50,
        "commands went on during the outage ({during})"
    );

    // `/health` showed the relay falling behind, with NATS down, and then stuck.
    assert!(
        samples
            .iter()
            .filter(|(at, _, _)| *at >= Duration::from_secs(2))
            .all(|(_, _, nats)| nats == "down"),
        "/health says NATS is down throughout: {samples:?}"
    );
    let (early, late) = (samples.first().unwrap().1, samples.last().unwrap().1);
    assert!(
        late > early && late >= 50,
        "the relay's lag grows while NATS is down: {samples:?}"
    );
    assert!(
        stuck_seen,
        "/health named the relay stuck (degraded): {samples:?}"
    );

    // Every event reached the stream exactly once, in position order, with its id.
    let database = postgres.connect().await;
    let events: Vec<(i64, String, String)> = database
        .query(
            "SELECT position, event_id::text, stream_id FROM events ORDER BY position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let relayed: i64 = database
        .query_one(
            "SELECT position FROM checkpoints WHERE name = $1",
            &[&RELAY],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        relayed,
        events.len() as i64,
        "the relay's checkpoint is the head"
    );
    let messages = stream_messages(&nats.url()).await;
    assert_eq!(
        messages.len(),
        events.len(),
        "one message per event (no repeat, none missing)"
    );
    for (index, ((position, event_id, stream_id), message)) in
        events.iter().zip(&messages).enumerate()
    {
        assert_eq!(*position, index as i64 + 1, "the log has no gap");
        assert_eq!(
            message.sequence,
            index as u64 + 1,
            "stream sequence of position {position}"
        );
        assert_eq!(
            (&message.position, &message.event_id, &message.stream_id),
            (&position.to_string(), event_id, stream_id),
            "message {} is the event at position {position}",
            message.sequence
        );
    }
    eprintln!(
        "[nats outage] NATS killed for {OUTAGE:?}; {} commands, all 2xx ({during} during the \
         outage); relay lag on /health grew from {early} to {late} (max {max_lag}) and it was \
         named stuck; after NATS was back (nats-server ready) the relay had published the \
         outage's backlog of {backlog} events {backlog_published:?} later under load, and the \
         whole log ({} events, each once, in order) {caught_up:?} later (the load stopped \
         2 s after the backlog was out)",
        answers.len(),
        events.len(),
    );
}

struct Published {
    sequence: u64,
    event_id: String,
    position: String,
    stream_id: String,
}

/// Every message of the stream, in stream order, with the headers the relay set.
async fn stream_messages(url: &str) -> Vec<Published> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let client = async_nats::connect(url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(STREAM).await.unwrap();
    let count = stream.info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap().take(count);
    let mut published = Vec::with_capacity(count);
    while let Some(message) = tokio::time::timeout(Duration::from_secs(30), messages.next())
        .await
        .expect("the stream's messages arrive")
    {
        let message = message.unwrap();
        let headers = message.headers.clone().unwrap_or_default();
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        published.push(Published {
            sequence: message.info().unwrap().stream_sequence,
            event_id: header("Nats-Msg-Id"),
            position: header("Keyledger-Position"),
            stream_id: header("Keyledger-Stream-Id"),
        });
    }
    published
}
