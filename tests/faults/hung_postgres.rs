//! A hung PostgreSQL (every server process SIGSTOPped for 15 s: a stuck disk, a frozen VM).
//! Unlike a stopped server it accepts connections and never answers, and no server-side
//! timeout fires, so only the service's own bounds (pool wait, connect, request timeout) end a
//! wait. Every call answers within `REQUEST_TIMEOUT_MS` with a success or a 503, readiness is
//! not ready, and the service recovers by itself once the server runs again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{
    Answer, Load, OwnPostgres, ServiceSpec, admin_client, call, eventually, keyledger_cli,
    percentile,
};

const HUNG: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_millis(8000);
/// Past the request timeout, an answer is late (the timeout layer did not end the wait).
const ANSWER_BOUND: Duration = Duration::from_millis(8000 + 2000);
/// A readiness probe answers within the pool's wait timeout (2 s), with a margin.
const PROBE_BOUND: Duration = Duration::from_millis(2000 + 1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_postgres_is_bounded_by_the_request_timeout_and_recovers_by_itself() {
    let mut postgres = OwnPostgres::start().await;
    let mut spec = ServiceSpec::new(&postgres.url())
        .env("DB_POOL_TIMEOUT_MS", "2000")
        .env("DB_CONNECT_TIMEOUT_MS", "2000")
        .env(
            "REQUEST_TIMEOUT_MS",
            &REQUEST_TIMEOUT.as_millis().to_string(),
        )
        .env("CONSISTENCY_TIMEOUT_MS", "5000");
    let mut service = spec.start().await;
    let http = admin_client(Duration::from_secs(60));
    let clock = Instant::now();
    let licenses = service.licenses(&http);
    let (_, key) = licenses.seed("hung-seed", clock).await;

    let commands: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let probes: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut load = Load::default();
    for worker in 0..4 {
        let (licenses, commands, acknowledged, key) = (
            licenses.clone(),
            commands.clone(),
            acknowledged.clone(),
            key.clone(),
        );
        load.client(Duration::from_millis(20), move |n| {
            let request = if worker % 2 == 0 {
                licenses.issue(&format!("hung-{worker}-{n}"), "basic")
            } else {
                licenses.validate(&key)
            };
            let (commands, acknowledged) = (commands.clone(), acknowledged.clone());
            async move {
                let answer = call(request, clock).await;
                acknowledged.lock().unwrap().extend(answer.issued());
                commands.lock().unwrap().push(answer);
            }
        });
    }
    {
        let (http, probes) = (http.clone(), probes.clone());
        let ready = service.url("/health/ready");
        load.client(Duration::from_millis(250), move |_| {
            // Probes overlap, as a prober's do: a slow one does not hold back the next.
            let (http, probes, ready) = (http.clone(), probes.clone(), ready.clone());
            tokio::spawn(async move {
                let answer = call(http.get(&ready), clock).await;
                probes.lock().unwrap().push(answer);
            });
            async {}
        });
    }
    eventually(Duration::from_secs(30), "commands under load", || {
        let count = commands.lock().unwrap().len();
        async move { (count >= 20).then_some(()) }
    })
    .await;

    postgres.freeze().await;
    let frozen = clock.elapsed();
    tokio::time::sleep(HUNG).await;
    let thawing = clock.elapsed();
    postgres.thaw().await;

    let first_issue = eventually(Duration::from_secs(60), "an issue to succeed again", || {
        let found = commands
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.sent >= thawing && a.status == Some(201))
            .map(Answer::answered)
            .min();
        async move { found }
    })
    .await;
    let ready_again = eventually(Duration::from_secs(60), "/health/ready to be 200", || {
        let found = probes
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.sent >= thawing && a.status == Some(200))
            .map(Answer::answered)
            .min();
        async move { found }
    })
    .await;
    load.stop().await;
    // The last probes spawned finish within their bound.
    tokio::time::sleep(ANSWER_BOUND).await;
    service.assert_running();

    let commands = std::mem::take(&mut *commands.lock().unwrap());
    let probes = std::mem::take(&mut *probes.lock().unwrap());
    for answer in &commands {
        assert!(
            answer.status.is_some() && answer.took < ANSWER_BOUND,
            "a command was not answered within {ANSWER_BOUND:?}: {}",
            answer.describe()
        );
        assert!(
            answer.is_success() || answer.is_unavailable_with_retry_after(),
            "neither a success nor 503 SYS_UNAVAILABLE with Retry-After: {}",
            answer.describe()
        );
    }
    let during = |a: &&Answer| a.sent >= frozen && a.answered() <= thawing;
    assert!(
        commands.iter().filter(during).all(|a| !a.is_success()),
        "nothing can succeed while PostgreSQL is hung"
    );
    // Each client's call in flight at the freeze, and any later one, ends within the bound.
    let refused: Vec<Duration> = commands
        .iter()
        .filter(|a| {
            !a.is_success()
                && a.answered() > frozen + Duration::from_secs(1)
                && a.answered() <= thawing
        })
        .map(|a| a.took)
        .collect();
    assert!(
        refused.len() >= 4,
        "every client got its answer while PostgreSQL was hung: {refused:?}"
    );
    for probe in &probes {
        assert!(
            probe.status.is_some() && probe.took < PROBE_BOUND,
            "a readiness probe was not answered within {PROBE_BOUND:?}: {}",
            probe.describe()
        );
    }
    let probes_hung: Vec<&Answer> = probes.iter().filter(during).collect();
    assert!(
        !probes_hung.is_empty() && probes_hung.iter().all(|a| a.status == Some(503)),
        "/health/ready did not answer 503 throughout the hang: {:?}",
        probes_hung.iter().map(|a| a.describe()).collect::<Vec<_>>()
    );
    let probe_times: Vec<Duration> = probes_hung.iter().map(|a| a.took).collect();

    // Nothing acknowledged was lost, and the log verifies.
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    licenses.assert_all_valid(&acknowledged, clock).await;
    drop(service);
    let verified = keyledger_cli(&["verify"], &spec.database_url()).await;
    assert!(verified.starts_with("ok:"), "{verified}");

    eprintln!(
        "[hung postgres] SIGSTOPped for {HUNG:?} with REQUEST_TIMEOUT_MS {}: {} commands \
         refused while hung (503 SYS_UNAVAILABLE, median {:?}, max {:?}); {} readiness probes \
         while hung, all 503, median {:?}, max {:?}; after SIGCONT: first issue {:?}, ready \
         {:?}; {} licenses acknowledged, all valid; {}",
        REQUEST_TIMEOUT.as_millis(),
        refused.len(),
        percentile(&refused, 50),
        percentile(&refused, 100),
        probe_times.len(),
        percentile(&probe_times, 50),
        percentile(&probe_times, 100),
        first_issue.saturating_sub(thawing),
        ready_again.saturating_sub(thawing),
        acknowledged.len(),
        verified.trim(),
    );
}
