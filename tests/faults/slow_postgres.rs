//! A PostgreSQL that does not answer in time: first the append lock is held by someone else
//! (an advisory lock on the writer's key), then the `events` table itself is locked. Under a
//! closed-loop load of appends and reads, every call answers within a bound — appends with 503
//! once the writer's `lock_timeout` runs out, reads once the statement or pool timeout does —
//! instead of piling up, the service's memory stays bounded, and everything works again as soon
//! as the lock is released.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{
    Answer, Load, OwnPostgres, ServiceSpec, admin_client, call, eventually, percentile,
};

const HOLD: Duration = Duration::from_secs(12);
const POOL_TIMEOUT_MS: u64 = 1000;
/// Above the writer's lock timeout, so that it is the lock timeout that ends an append's wait.
const STATEMENT_TIMEOUT_MS: u64 = 6000;
/// The append writer's `lock_timeout` (`WriterConfig::default()`).
const LOCK_TIMEOUT_MS: u64 = 5000;
/// The lock timeout bounds each lock wait, not an append: with the table locked, a batch waits
/// for the append lock (held by the other batch in flight, itself stuck on the table) and then
/// for the table, and an append queued behind both batches waits for a slot first; up to three
/// lock timeouts in all (measured: 15 s). A read waits at most for a connection and its
/// statement.
const APPEND_BOUND: Duration = Duration::from_millis(3 * LOCK_TIMEOUT_MS + 3000);
const READ_BOUND: Duration = Duration::from_millis(POOL_TIMEOUT_MS + STATEMENT_TIMEOUT_MS + 3000);
/// Peak resident memory of the (debug-built) service.
const RSS_BOUND_KIB: u64 = 512 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Call {
    Issue,
    Validate,
    Read,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_postgres_answers_503_in_bounded_time_with_bounded_memory() {
    let postgres = OwnPostgres::start().await;
    let mut spec = ServiceSpec::new(&postgres.url())
        .env("DB_POOL_SIZE", "4")
        .env("DB_POOL_TIMEOUT_MS", &POOL_TIMEOUT_MS.to_string())
        .env("DB_STATEMENT_TIMEOUT_MS", &STATEMENT_TIMEOUT_MS.to_string());
    let mut service = spec.start().await;
    let http = admin_client(Duration::from_secs(60));
    let clock = Instant::now();

    let licenses = service.licenses(&http);
    let (license_id, key) = licenses.seed("slow-seed", clock).await;
    let baseline_kib = service.peak_rss_kib();

    let answers: Arc<Mutex<Vec<(Call, Answer)>>> = Arc::default();
    let mut load = Load::default();
    for client in 0..24 {
        let kind = [Call::Issue, Call::Validate, Call::Read][client % 3];
        let (licenses, http, answers, key) =
            (licenses.clone(), http.clone(), answers.clone(), key.clone());
        let read = service.url(&format!("/v1/licenses/{license_id}/events"));
        load.client(Duration::from_millis(5), move |n| {
            let request = match kind {
                Call::Issue => licenses.issue(&format!("slow-{client}-{n}"), "basic"),
                Call::Validate => licenses.validate(&key),
                Call::Read => http.get(&read),
            };
            let answers = answers.clone();
            async move {
                let answer = call(request, clock).await;
                answers.lock().unwrap().push((kind, answer));
            }
        });
    }
    eventually(Duration::from_secs(30), "load to run", || {
        let count = answers.lock().unwrap().len();
        async move { (count >= 100).then_some(()) }
    })
    .await;

    let locker = postgres.connect().await;
    // Phase 1: someone else holds the append lock.
    locker
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&keyledger_events::writer::APPEND_LOCK_KEY],
        )
        .await
        .unwrap();
    let append_locked = clock.elapsed();
    tokio::time::sleep(HOLD).await;
    locker
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&keyledger_events::writer::APPEND_LOCK_KEY],
        )
        .await
        .unwrap();
    let append_released = clock.elapsed();
    let recovered_appends = first_success_after(&answers, Call::Issue, append_released).await;

    // Phase 2: the event table itself is locked, for reads and appends alike.
    locker
        .batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let table_locked = clock.elapsed();
    tokio::time::sleep(HOLD).await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    let table_released = clock.elapsed();
    let recovered_reads = first_success_after(&answers, Call::Read, table_released).await;
    let recovered_issues = first_success_after(&answers, Call::Issue, table_released).await;

    load.stop().await;
    service.assert_running();
    let peak_kib = service.peak_rss_kib();
    let answers = std::mem::take(&mut *answers.lock().unwrap());

    for (kind, answer) in &answers {
        let bound = if *kind == Call::Read {
            READ_BOUND
        } else {
            APPEND_BOUND
        };
        assert!(
            answer.took < bound,
            "a {kind:?} took longer than {bound:?}: {}",
            answer.describe()
        );
        assert!(
            answer.is_success() || answer.is_unavailable_with_retry_after(),
            "a {kind:?} got neither a success nor 503 SYS_UNAVAILABLE with Retry-After: {}",
            answer.describe()
        );
    }
    // Calls refused while the lock was held (whenever they were sent), by how long they took.
    let refused = |kind: Call, from: Duration, until: Duration| -> Vec<Duration> {
        answers
            .iter()
            .filter(|(k, a)| {
                *k == kind && a.answered() > from && a.answered() <= until && !a.is_success()
            })
            .map(|(_, a)| a.took)
            .collect()
    };
    let succeeded = |kind: Call, from: Duration, until: Duration| {
        answers
            .iter()
            .filter(|(k, a)| *k == kind && a.sent >= from && a.answered() <= until)
            .filter(|(_, a)| a.is_success())
            .count()
    };
    // Phase 1: appends were refused (nothing could commit), reads went on.
    let appends_1: Vec<Duration> = [Call::Issue, Call::Validate]
        .into_iter()
        .flat_map(|kind| refused(kind, append_locked, append_released))
        .collect();
    assert!(
        !appends_1.is_empty(),
        "appends answered 503 while the append lock was held"
    );
    assert_eq!(
        succeeded(Call::Issue, append_locked, append_released)
            + succeeded(Call::Validate, append_locked, append_released),
        0,
        "no append can succeed while another session holds the append lock"
    );
    assert!(
        succeeded(Call::Read, append_locked, append_released) > 0,
        "reads go on while only the append lock is held"
    );
    // Phase 2: reads and appends were refused.
    let reads_2 = refused(Call::Read, table_locked, table_released);
    let appends_2: Vec<Duration> = [Call::Issue, Call::Validate]
        .into_iter()
        .flat_map(|kind| refused(kind, table_locked, table_released))
        .collect();
    assert!(
        !reads_2.is_empty(),
        "reads answered 503 while the table was locked"
    );
    assert!(
        !appends_2.is_empty(),
        "appends answered 503 while the table was locked"
    );
    // The service's own account: the writer gave up on the lock (SQLSTATE 55P03, the lock
    // timeout), and requests gave up waiting for a pooled connection.
    let log = service.log_text();
    assert!(
        log.contains("(55P03)"),
        "the append writer's lock timeout ended the waits"
    );
    assert!(
        log.contains("waiting for a slot"),
        "the pool timeout ended waits for a connection"
    );
    assert!(
        peak_kib < RSS_BOUND_KIB,
        "peak RSS {peak_kib} KiB is beyond {RSS_BOUND_KIB} KiB"
    );

    let first_503 = |from: Duration, kinds: &[Call]| {
        answers
            .iter()
            .filter(|(k, a)| kinds.contains(k) && a.answered() > from && a.status == Some(503))
            .map(|(_, a)| a.answered().saturating_sub(from))
            .min()
            .unwrap_or_default()
    };
    eprintln!(
        "[slow postgres] {} calls by 24 clients. Append lock held {HOLD:?}: {} appends answered \
         503 after median {:?}, max {:?} (writer lock_timeout {LOCK_TIMEOUT_MS} ms), first 503 \
         {:?} after the lock was taken; reads kept succeeding; appends succeeded again {:?} after \
         the release. Events table locked {HOLD:?}: {} reads answered 503 after median {:?}, \
         max {:?} (pool timeout {POOL_TIMEOUT_MS} ms, statement timeout {STATEMENT_TIMEOUT_MS} \
         ms), {} appends after median {:?}, max {:?}; first 503 {:?} after the lock; reads and \
         issues succeeded again {:?} / {:?} after the release. Peak RSS {} MiB (before the load \
         {} MiB, bound {} MiB)",
        answers.len(),
        appends_1.len(),
        percentile(&appends_1, 50),
        percentile(&appends_1, 100),
        first_503(append_locked, &[Call::Issue, Call::Validate]),
        recovered_appends.saturating_sub(append_released),
        reads_2.len(),
        percentile(&reads_2, 50),
        percentile(&reads_2, 100),
        appends_2.len(),
        percentile(&appends_2, 50),
        percentile(&appends_2, 100),
        first_503(table_locked, &[Call::Issue, Call::Validate, Call::Read]),
        recovered_reads.saturating_sub(table_released),
        recovered_issues.saturating_sub(table_released),
        peak_kib / 1024,
        baseline_kib / 1024,
        RSS_BOUND_KIB / 1024,
    );
}

/// When the first call of `kind` sent after `from` succeeded (since the test's start).
async fn first_success_after(
    answers: &Arc<Mutex<Vec<(Call, Answer)>>>,
    kind: Call,
    from: Duration,
) -> Duration {
    eventually(
        Duration::from_secs(30),
        &format!("a {kind:?} to succeed after the release"),
        || {
            let found = answers
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, a)| *k == kind && a.sent >= from && a.is_success())
                .map(|(_, a)| a.answered())
                .min();
            async move { found }
        },
    )
    .await
}
