//! PostgreSQL stopped (`pg_ctl stop -m immediate`) for 10 s under a load of issues and
//! validations: clients get a quick 503 `SYS_UNAVAILABLE` with `Retry-After`, never a hang, a
//! 500 or a success that was not stored; `/health/ready` says not ready and then ready again
//! without a restart of the service; nothing acknowledged is lost and the chain verifies.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{
    Answer, Load, OwnPostgres, ServiceSpec, StopMode, admin_client, call, eventually,
    keyledger_cli, percentile,
};

const OUTAGE: Duration = Duration::from_secs(10);
/// The service's pool and connect timeouts (ms), and the longest any answer may take.
const POOL_TIMEOUT_MS: &str = "2000";
const CONNECT_TIMEOUT_MS: &str = "2000";
const ANSWER_BOUND: Duration = Duration::from_secs(6);

#[derive(Default)]
struct Seen {
    issues: Vec<Answer>,
    validations: Vec<Answer>,
    /// `(license_id, key)` of every 201.
    acknowledged: Vec<(String, String)>,
    /// `/health/ready` probes: (sent, took, status).
    ready: Vec<(Duration, Duration, Option<u16>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_answers_503_quickly_and_loses_nothing_acknowledged() {
    let mut postgres = OwnPostgres::start().await;
    let mut spec = ServiceSpec::new(&postgres.url())
        .env("DB_POOL_TIMEOUT_MS", POOL_TIMEOUT_MS)
        .env("DB_CONNECT_TIMEOUT_MS", CONNECT_TIMEOUT_MS)
        .env("DB_POOL_SIZE", "8");
    let mut service = spec.start().await;
    let http = admin_client(Duration::from_secs(60));
    let clock = Instant::now();
    let licenses = service.licenses(&http);
    let seen: Arc<Mutex<Seen>> = Arc::default();

    // Licenses to validate from the start.
    for n in 0..10 {
        let seed = licenses.seed(&format!("pg-seed-{n}"), clock).await;
        seen.lock().unwrap().acknowledged.push(seed);
    }

    let mut load = Load::default();
    for worker in 0..2 {
        let (licenses, seen) = (licenses.clone(), seen.clone());
        load.client(Duration::from_millis(20), move |n| {
            let request = licenses.issue(&format!("pg-load-{worker}-{n}"), "basic");
            let seen = seen.clone();
            async move {
                let answer = call(request, clock).await;
                let mut seen = seen.lock().unwrap();
                seen.acknowledged.extend(answer.issued());
                seen.issues.push(answer);
            }
        });
    }
    for worker in 0..2usize {
        let (licenses, seen) = (licenses.clone(), seen.clone());
        load.client(Duration::from_millis(20), move |n| {
            let key = {
                let seen = seen.lock().unwrap();
                seen.acknowledged[(worker + 7 * n) % seen.acknowledged.len()]
                    .1
                    .clone()
            };
            let (request, seen) = (licenses.validate(&key), seen.clone());
            async move {
                let answer = call(request, clock).await;
                seen.lock().unwrap().validations.push(answer);
            }
        });
    }
    {
        let (http, seen) = (http.clone(), seen.clone());
        let url = service.url("/health/ready");
        load.client(Duration::from_millis(100), move |_| {
            let (request, seen) = (http.get(&url), seen.clone());
            async move {
                let answer = call(request, clock).await;
                seen.lock()
                    .unwrap()
                    .ready
                    .push((answer.sent, answer.took, answer.status));
            }
        });
    }

    // Load before the outage.
    eventually(Duration::from_secs(30), "issues under load", || {
        let count = seen.lock().unwrap().issues.len();
        async move { (count >= 20).then_some(()) }
    })
    .await;
    postgres.stop(StopMode::Immediate).await;
    let down = clock.elapsed();
    tokio::time::sleep(OUTAGE).await;
    let restarting = clock.elapsed();
    postgres.start_again().await;
    let back = clock.elapsed();

    // Recovery, measured from the moment PostgreSQL accepts connections again.
    let first_issue = eventually(Duration::from_secs(60), "an issue to succeed again", || {
        let found = seen
            .lock()
            .unwrap()
            .issues
            .iter()
            .filter(|a| a.sent >= back && a.status == Some(201))
            .map(Answer::answered)
            .min();
        async move { found }
    })
    .await;
    let first_validation = eventually(
        Duration::from_secs(60),
        "a validation to succeed again",
        || {
            let found = seen
                .lock()
                .unwrap()
                .validations
                .iter()
                .filter(|a| a.sent >= back && a.status == Some(200))
                .map(Answer::answered)
                .min();
            async move { found }
        },
    )
    .await;
    let ready_again = eventually(Duration::from_secs(60), "/health/ready to be 200", || {
        let found = seen
            .lock()
            .unwrap()
            .ready
            .iter()
            .filter(|(sent, _, status)| *sent >= back && *status == Some(200))
            .map(|(sent, took, _)| *sent + *took)
            .min();
        async move { found }
    })
    .await;
    // A little more load after recovery, then stop it.
    let after = clock.elapsed();
    eventually(Duration::from_secs(30), "issues after recovery", || {
        let count = seen
            .lock()
            .unwrap()
            .issues
            .iter()
            .filter(|a| a.sent >= after && a.status == Some(201))
            .count();
        async move { (count >= 10).then_some(()) }
    })
    .await;
    load.stop().await;
    service.assert_running();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let during = |a: &Answer| a.sent >= down && a.answered() <= restarting;
    let all: Vec<&Answer> = seen.issues.iter().chain(&seen.validations).collect();

    // Every call was answered, within the bound, with a success or a proper 503.
    for answer in &all {
        assert!(
            answer.status.is_some(),
            "a call got no answer: {}",
            answer.describe()
        );
        assert!(
            answer.took < ANSWER_BOUND,
            "a call took longer than {ANSWER_BOUND:?}: {}",
            answer.describe()
        );
        assert!(
            answer.is_success() || answer.is_unavailable_with_retry_after(),
            "neither a success nor 503 SYS_UNAVAILABLE with Retry-After: {}",
            answer.describe()
        );
    }
    // While PostgreSQL was down nothing succeeded: a success would not have been stored.
    let while_down: Vec<&Answer> = all.iter().copied().filter(|a| during(a)).collect();
    assert!(
        while_down.iter().all(|a| !a.is_success()),
        "a call succeeded while PostgreSQL was down: {:?}",
        while_down
            .iter()
            .find(|a| a.is_success())
            .map(|a| a.describe())
    );
    let issues_down = seen.issues.iter().filter(|a| during(a)).count();
    let validations_down = seen.validations.iter().filter(|a| during(a)).count();
    assert!(
        issues_down >= 10 && validations_down >= 10,
        "clients kept calling during the outage ({issues_down} issues, {validations_down} \
         validations)"
    );
    let took_down: Vec<Duration> = while_down.iter().map(|a| a.took).collect();

    // Readiness: not ready during the outage, ready again afterwards, every probe answered.
    assert!(
        seen.ready
            .iter()
            .all(|(_, took, status)| status.is_some() && *took < ANSWER_BOUND),
        "a readiness probe hung or got no answer: {:?}",
        seen.ready
            .iter()
            .find(|(_, took, status)| status.is_none() || *took >= ANSWER_BOUND)
    );
    let not_ready_at = seen
        .ready
        .iter()
        .filter(|(sent, _, status)| *sent >= down && *status != Some(200))
        .map(|(sent, took, _)| *sent + *took)
        .min()
        .expect("/health/ready turned not-ready while PostgreSQL was down");
    assert!(
        seen.ready
            .iter()
            .filter(|(sent, took, _)| *sent >= down + Duration::from_secs(1)
                && *sent + *took <= restarting)
            .all(|(_, _, status)| *status == Some(503)),
        "/health/ready answered 503 throughout the outage"
    );

    // Nothing acknowledged was lost: every 201's key validates as its license.
    licenses.assert_all_valid(&seen.acknowledged, clock).await;
    // The read side recovered too, without a restart: every projection caught up with the log.
    let health = eventually(
        Duration::from_secs(60),
        "every projection to catch up after the outage",
        || {
            let (service, http) = (&service, &http);
            async move {
                let health = service.health(http).await?;
                let projections = health["components"]["projections"].as_array()?;
                (!projections.is_empty()
                    && projections
                        .iter()
                        .all(|p| p["lag"] == 0 && p["status"] == "ok"))
                .then_some(health)
            }
        },
    )
    .await;
    let restarted: Vec<String> = health["components"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["restarts"].as_u64().unwrap_or(0) > 0)
        .map(|w| format!("{} ({} restarts)", w["name"], w["restarts"]))
        .collect();
    service.assert_running();
    drop(service);
    let verified = keyledger_cli(&["verify"], &spec.database_url()).await;
    assert!(verified.starts_with("ok:"), "{verified}");
    // What the crash recovery kept is durable: restarted cleanly, the log is the same.
    postgres.restart(StopMode::Fast).await;
    assert_eq!(
        keyledger_cli(&["verify"], &spec.database_url()).await,
        verified
    );

    let total = seen.issues.len() + seen.validations.len();
    eprintln!(
        "[postgres outage] {:?} down; {total} calls, {} issues acknowledged; during the outage \
         {issues_down} issues and {validations_down} validations answered 503 SYS_UNAVAILABLE \
         with Retry-After, median {:?}, p99 {:?}, max {:?}; /health/ready not ready {:?} after \
         the stop; recovery after PostgreSQL accepted connections again: first issue {:?}, \
         first validation {:?}, ready {:?}; projections caught up; workers restarted: {}; {}",
        back - down,
        seen.acknowledged.len(),
        percentile(&took_down, 50),
        percentile(&took_down, 99),
        percentile(&took_down, 100),
        not_ready_at.saturating_sub(down),
        first_issue.saturating_sub(back),
        first_validation.saturating_sub(back),
        ready_again.saturating_sub(back),
        if restarted.is_empty() {
            "none".to_owned()
        } else {
            restarted.join(", ")
        },
        verified.trim(),
    );
}
