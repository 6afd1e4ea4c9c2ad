//! `kill -9` of the service at random moments of a mixed workload (issues, validations,
//! revocations, sessions created and moved on), ten times. Every command carries an
//! Idempotency-Key; whatever got no answer before a crash is sent again, same key and body,
//! after the restart. Afterwards: nothing acknowledged is lost, every key had exactly one
//! effect, and the read tables equal a rebuild from the log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{
    Answer, OwnPostgres, Random, Service, ServiceSpec, admin_client, call, component, eventually,
    keyledger_cli,
};

const CRASHES: usize = 10;
const WORKERS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Issue,
    Validate,
    Revoke,
    CreateSession,
    Transition,
}

impl Kind {
    /// The one event a command of this kind appends.
    fn event_type(self) -> &'static str {
        match self {
            Kind::Issue => "LicenseIssued",
            Kind::Validate => "LicenseValidated",
            Kind::Revoke => "LicenseRevoked",
            Kind::CreateSession => "SessionCreated",
            Kind::Transition => "SessionTransitioned",
        }
    }
}

/// A command as sent: retried with the same key and body until it is answered.
#[derive(Debug, Clone)]
struct Op {
    kind: Kind,
    key: String,
    path: String,
    body: Value,
    /// The license or session it acts on.
    target: Option<usize>,
    /// A transition's target status.
    to: &'static str,
    /// Sent again after a crash.
    retried: bool,
}

struct License {
    id: String,
    /// `None` when the issue's answer was a replay: the key is in the first answer only.
    key: Option<String>,
    revoked: bool,
    /// A revocation was sent and is not answered yet.
    busy: bool,
}

struct Session {
    id: String,
    status: &'static str,
    busy: bool,
}

#[derive(Default)]
struct World {
    licenses: Vec<License>,
    sessions: Vec<Session>,
    /// Sent, not answered (the service died, or asked to retry).
    pending: Vec<Op>,
    acknowledged: Vec<(Op, Answer)>,
    unexpected: Vec<String>,
}

impl World {
    fn next_op(&mut self, random: &mut Random) -> Op {
        let key = format!("k9-{}", Uuid::new_v4().simple());
        let roll = random.between(0, 100);
        let op = |kind, path: String, body, target, to| Op {
            kind,
            key: key.clone(),
            path,
            body,
            target,
            to,
            retried: false,
        };
        let keyed: Vec<usize> = (0..self.licenses.len())
            .filter(|&n| self.licenses[n].key.is_some())
            .collect();
        if roll < 30 && !keyed.is_empty() {
            let n = keyed[random.between(0, keyed.len() as u64) as usize];
            return op(
                Kind::Validate,
                "/v1/licenses/validate".into(),
                json!({"key": self.licenses[n].key}),
                Some(n),
                "",
            );
        }
        if roll < 40 {
            let open: Vec<usize> = (0..self.licenses.len())
                .filter(|&n| !self.licenses[n].revoked && !self.licenses[n].busy)
                .collect();
            if !open.is_empty() {
                let n = open[random.between(0, open.len() as u64) as usize];
                self.licenses[n].busy = true;
                return op(
                    Kind::Revoke,
                    format!("/v1/licenses/{}/revoke", self.licenses[n].id),
                    json!({"reason": format!("kill -9 test {key}")}),
                    Some(n),
                    "",
                );
            }
        }
        if roll < 55 {
            let open: Vec<usize> = (0..self.sessions.len())
                .filter(|&n| {
                    !self.sessions[n].busy
                        && matches!(self.sessions[n].status, "pending" | "active")
                })
                .collect();
            if !open.is_empty() {
                let n = open[random.between(0, open.len() as u64) as usize];
                let session = &mut self.sessions[n];
                session.busy = true;
                let to = if session.status == "pending" {
                    "active"
                } else {
                    "completed"
                };
                return op(
                    Kind::Transition,
                    format!("/v1/sessions/{}/transition", session.id),
                    json!({"to": to, "reason": key}),
                    Some(n),
                    to,
                );
            }
        }
        if roll < 70 {
            return op(
                Kind::CreateSession,
                "/v1/sessions".into(),
                json!({"agent_role": "kill-9", "metadata": {"op": key}}),
                None,
                "",
            );
        }
        op(
            Kind::Issue,
            "/v1/licenses".into(),
            json!({"owner": format!("kill-{key}"), "tier": "pro"}),
            None,
            "",
        )
    }

    /// Books an answer. `false`: the op is not done (no answer, or asked to retry).
    fn settle(&mut self, op: Op, answer: Answer) -> bool {
        if answer.is_success() {
            match op.kind {
                Kind::Issue => self.licenses.push(License {
                    id: answer.body["license_id"].as_str().unwrap().to_owned(),
                    key: answer.body["key"].as_str().map(str::to_owned),
                    revoked: false,
                    busy: false,
                }),
                Kind::CreateSession => self.sessions.push(Session {
                    id: answer.body["session_id"].as_str().unwrap().to_owned(),
                    status: "pending",
                    busy: false,
                }),
                Kind::Revoke => {
                    let license = &mut self.licenses[op.target.unwrap()];
                    license.revoked = true;
                    license.busy = false;
                }
                Kind::Transition => {
                    let session = &mut self.sessions[op.target.unwrap()];
                    session.status = op.to;
                    session.busy = false;
                }
                Kind::Validate => {}
            }
            self.acknowledged.push((op, answer));
            return true;
        }
        let retry = answer.status.is_none()
            || answer.is_unavailable_with_retry_after()
            || (answer.status == Some(409) && answer.code() == "BIZ_IDEMPOTENCY_IN_FLIGHT");
        if !retry {
            self.unexpected
                .push(format!("{:?} {}: {}", op.kind, op.path, answer.describe()));
        }
        self.pending.push(op);
        false
    }
}

async fn send(http: &reqwest::Client, service: &str, op: &Op, clock: Instant) -> Answer {
    call(
        http.post(format!("{service}{}", op.path))
            .header("idempotency-key", &op.key)
            .json(&op.body),
        clock,
    )
    .await
}

/// Sends every pending op again, at once; returns how many are still pending.
async fn retry_pending(
    world: &Arc<Mutex<World>>,
    http: &reqwest::Client,
    service: &Service,
    clock: Instant,
) -> usize {
    let pending = std::mem::take(&mut world.lock().unwrap().pending);
    let answers = futures::future::join_all(pending.iter().map(|op| {
        let address = service.address.clone();
        async move { send(http, &address, op, clock).await }
    }))
    .await;
    let mut world = world.lock().unwrap();
    for (mut op, answer) in pending.into_iter().zip(answers) {
        op.retried = true;
        world.settle(op, answer);
    }
    world.pending.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_repeats_nothing() {
    let postgres = OwnPostgres::start().await;
    let mut spec = ServiceSpec::new(&postgres.url());
    let http = admin_client(Duration::from_secs(60));
    let clock = Instant::now();
    let mut random = Random::new("kill -9");
    let world: Arc<Mutex<World>> = Arc::default();
    let mut restarts = Vec::new();

    let mut service = spec.start().await;
    for crash in 0..CRASHES {
        retry_pending(&world, &http, &service, clock).await;
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (world, http, stop) = (world.clone(), http.clone(), stop.clone());
                let address = service.address.clone();
                let mut random = random.fork();
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let op = world.lock().unwrap().next_op(&mut random);
                        let answer = send(&http, &address, &op, clock).await;
                        let dead = answer.status.is_none();
                        world.lock().unwrap().settle(op, answer);
                        if dead {
                            return;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(random.between(200, 1500))).await;
        service.kill_9();
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            worker.await.unwrap();
        }
        let started = Instant::now();
        if crash + 1 == CRASHES {
            // The last run only finishes the work: no request records or checkpoints of its
            // own, so that the log stays still once the test stops calling.
            spec.set("REQUEST_LOG_ENABLED", "false");
            spec.set("CHECKPOINT_INTERVAL", "1h");
        }
        service = spec.start().await;
        restarts.push(started.elapsed());
    }

    // Whatever was in flight at the last crash: retried until answered. A claim the crash
    // left behind is taken over once its lock (30 s) has run out.
    eventually(
        Duration::from_secs(90),
        "every command to be answered",
        || {
            let (world, http, service) = (&world, &http, &service);
            async move { (retry_pending(world, http, service, clock).await == 0).then_some(()) }
        },
    )
    .await;
    let world = std::mem::take(&mut *world.lock().unwrap());
    assert!(
        world.unexpected.is_empty(),
        "unexpected answers: {:#?}",
        world.unexpected
    );
    let retried = world
        .acknowledged
        .iter()
        .filter(|(op, _)| op.retried)
        .count();
    let replayed = world
        .acknowledged
        .iter()
        .filter(|(op, answer)| op.retried && answer.replayed)
        .count();
    assert!(retried > 0, "some commands were in flight at a crash");

    // Exactly one effect per Idempotency-Key, at the position its answer names.
    let database = postgres.connect().await;
    let mut effects: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for row in database
        .query(
            "SELECT metadata->>'idempotency_key', event_type, position FROM events \
             WHERE metadata->>'idempotency_key' LIKE 'k9-%' ORDER BY position",
            &[],
        )
        .await
        .unwrap()
    {
        effects
            .entry(row.get(0))
            .or_default()
            .push((row.get(1), row.get(2)));
    }
    for (op, answer) in &world.acknowledged {
        let found = effects.remove(&op.key).unwrap_or_default();
        assert_eq!(
            found,
            vec![(
                op.kind.event_type().to_owned(),
                answer.body["position"].as_i64().unwrap()
            )],
            "{:?} with Idempotency-Key {} (retried: {}, replayed: {}) has exactly one effect, \
             the one its answer names: {}",
            op.kind,
            op.key,
            op.retried,
            answer.replayed,
            answer.describe()
        );
    }
    assert!(
        effects.is_empty(),
        "events of keys never acknowledged: {effects:?}"
    );

    // Nothing acknowledged is lost: the read side shows every license and session as the
    // acknowledged commands left it, and every key validates accordingly.
    let head: i64 = database
        .query_one("SELECT max(position) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    for license in &world.licenses {
        let answer = call(
            http.get(service.url(&format!("/v1/licenses/{}", license.id)))
                .header("x-consistency-position", head.to_string()),
            clock,
        )
        .await;
        assert_eq!(answer.status, Some(200), "{}", answer.describe());
        let status = if license.revoked { "revoked" } else { "active" };
        assert_eq!(answer.body["status"], status, "license {}", license.id);
        if let Some(key) = &license.key {
            let validated = call(service.licenses(&http).validate(key), clock).await;
            let code = if license.revoked { "REVOKED" } else { "VALID" };
            assert_eq!(validated.body["code"], code, "{}", validated.describe());
        }
    }
    for session in &world.sessions {
        let answer = call(
            http.get(service.url(&format!("/v1/sessions/{}", session.id)))
                .header("x-consistency-position", head.to_string()),
            clock,
        )
        .await;
        assert_eq!(answer.status, Some(200), "{}", answer.describe());
        assert_eq!(
            answer.body["status"], session.status,
            "session {}",
            session.id
        );
    }

    // The read tables are what a rebuild from the log makes of it.
    eventually(
        Duration::from_secs(60),
        "every projection to reach the head",
        || {
            let (service, http) = (&service, &http);
            async move {
                let health = service.health(http).await?;
                let projections = health["components"]["projections"].as_array()?;
                (!projections.is_empty() && projections.iter().all(|p| p["lag"] == 0)).then_some(())
            }
        },
    )
    .await;
    let health = service.health(&http).await.unwrap();
    assert!(
        component(&health, "projections", "licenses").is_some(),
        "{health}"
    );
    service.assert_running();
    drop(service);
    let before = read_tables(&database).await;
    let replayed_out = keyledger_cli(&["replay"], &spec.database_url()).await;
    let after = read_tables(&database).await;
    for ((table, rows), (_, rebuilt)) in before.iter().zip(&after) {
        if let Some(n) = (0..rows.len().max(rebuilt.len())).find(|&n| rows.get(n) != rebuilt.get(n))
        {
            panic!(
                "{table} differs from its rebuild at row {n} of {}/{}: {:?} vs {:?}\n{replayed_out}",
                rows.len(),
                rebuilt.len(),
                rows.get(n),
                rebuilt.get(n)
            );
        }
    }
    let verified = keyledger_cli(&["verify"], &spec.database_url()).await;
    assert!(verified.starts_with("ok:"), "{verified}");

    let count = |kind: Kind| {
        world
            .acknowledged
            .iter()
            .filter(|(op, _)| op.kind == kind)
            .count()
    };
    restarts.sort();
    eprintln!(
        "[kill -9] {CRASHES} crashes; {} commands acknowledged ({} issues, {} validations, {} \
         revocations, {} sessions created, {} transitions); {retried} were in flight at a crash \
         and retried with their key after the restart ({replayed} of them had committed and \
         were replayed, the rest ran then); every key has exactly one event; {} licenses and \
         {} sessions read back as acknowledged; read tables equal their rebuild ({} rows); \
         restart to ready: median {:?}, max {:?}; {}",
        world.acknowledged.len(),
        count(Kind::Issue),
        count(Kind::Validate),
        count(Kind::Revoke),
        count(Kind::CreateSession),
        count(Kind::Transition),
        world.licenses.len(),
        world.sessions.len(),
        before.iter().map(|(_, rows)| rows.len()).sum::<usize>(),
        restarts[restarts.len() / 2],
        restarts[restarts.len() - 1],
        verified.trim()
    );
}

/// Every projection's read tables, each as its rows in a stable order.
async fn read_tables(database: &tokio_postgres::Client) -> Vec<(String, Vec<Value>)> {
    let mut tables = Vec::new();
    for projection in keyledger_projections::inline()
        .iter()
        .chain(keyledger_projections::asynchronous().iter())
    {
        for table in projection.tables() {
            let text: String = database
                .query_one(
                    &format!(
                        "SELECT coalesce(json_agg(t ORDER BY t::text), '[]')::text FROM {table} t"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
            tables.push(((*table).to_owned(), rows));
        }
    }
    tables
}
