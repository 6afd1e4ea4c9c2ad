//! Servers of the test's own, which it may stop and start: a PostgreSQL cluster (`initdb` into
//! a temporary directory, run as the `postgres` user), a `nats-server` with JetStream, and the
//! real `keyledger serve` binary as a child process. Each listens on a port of its own and is
//! stopped and removed on drop. Plus the client side: calls that record what the client saw
//! and how long it waited, and polling with a deadline.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

/// PostgreSQL's server binaries: `PG_BIN`, or the newest version under `/usr/lib/postgresql`.
fn pg_bin() -> String {
    if let Ok(bin) = std::env::var("PG_BIN") {
        return bin;
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's binaries in /usr/lib/postgresql (or PG_BIN)")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .expect("a PostgreSQL version under /usr/lib/postgresql");
    format!("/usr/lib/postgresql/{newest}/bin")
}
const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// The bootstrap admin token every service of the suite accepts (`KEYLEDGER_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "faults-bootstrap-admin-token-00000000000";

/// A port free right now, below the ephemeral range: a port the kernel may hand out to an
/// outgoing connection could be taken (or self-connected to) while its server is stopped.
pub fn free_port() -> u16 {
    let seed = Uuid::new_v4().as_u128();
    for attempt in 0..2000u128 {
        let port = 20_000 + ((seed.wrapping_add(attempt * 7919)) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("keyledger-faults-{what}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `program` to completion and fails the test, with its output, when it fails.
async fn run(program: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{text}",
        output.status
    );
    text
}

/// Runs a PostgreSQL program as the `postgres` user (initdb and postgres refuse root).
async fn as_postgres(program: &str, args: &[&str]) -> String {
    let program = format!("{}/{program}", pg_bin());
    let mut all = vec!["-u", "postgres", "--", program.as_str()];
    all.extend_from_slice(args);
    run("runuser", &all).await
}

#[derive(Debug, Clone, Copy)]
pub enum StopMode {
    /// `pg_ctl stop -m immediate`: every backend is killed, as in a crash; recovery on start.
    Immediate,
    /// `pg_ctl stop -m fast`: clients are disconnected, then a clean shutdown.
    Fast,
}

/// A PostgreSQL 15 cluster of the test's own (trust auth, 127.0.0.1 and a port of its own,
/// its socket in its own directory).
pub struct OwnPostgres {
    dir: TempDir,
    port: u16,
    running: bool,
    frozen: bool,
}

impl OwnPostgres {
    pub async fn start() -> OwnPostgres {
        let dir = TempDir::new("pg");
        let port = free_port();
        // The cluster and its socket belong to `postgres`.
        run(
            "chown",
            &["-R", "postgres:postgres", &dir.path().to_string_lossy()],
        )
        .await;
        let data = dir.path().join("data");
        as_postgres(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )
        .await;
        // fsync off: the tests stop PostgreSQL and kill processes, never the machine, so what
        // a commit wrote to the kernel survives; synchronous_commit stays on (an immediate
        // stop must not lose an acknowledged commit).
        let settings = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nmax_connections = 200\nshared_buffers = 32MB\n",
            dir.path().display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&settings);
        std::fs::write(&conf, text).unwrap();
        let mut postgres = OwnPostgres {
            dir,
            port,
            running: false,
            frozen: false,
        };
        postgres.start_again().await;
        postgres
    }

    /// The service's database (created by the service when missing).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/keyledger", self.port)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    fn log(&self) -> String {
        self.dir
            .path()
            .join("postgres.log")
            .to_string_lossy()
            .into_owned()
    }

    /// Starts the stopped cluster on the same port and data; returns once it accepts
    /// connections.
    pub async fn start_again(&mut self) {
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &self.log(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .await;
        self.running = true;
    }

    pub async fn stop(&mut self, mode: StopMode) {
        let mode = match mode {
            StopMode::Immediate => "immediate",
            StopMode::Fast => "fast",
        };
        as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", mode, "-w", "-t", "60", "stop"],
        )
        .await;
        self.running = false;
    }

    pub async fn restart(&mut self, mode: StopMode) {
        self.stop(mode).await;
        self.start_again().await;
    }

    /// SIGSTOP to the postmaster and every backend: a hung server (a stuck disk, a frozen VM).
    /// Connections are still accepted by the kernel; nothing answers, and no server-side
    /// timeout (statement, lock) can fire.
    pub async fn freeze(&mut self) {
        // The postmaster first: stopped, it forks no backend that the list below would miss.
        let pids = self.pids();
        if let Some(postmaster) = pids.last() {
            run("kill", &["-STOP", postmaster]).await;
        }
        self.signal_all("-STOP").await;
        self.frozen = true;
    }

    pub async fn thaw(&mut self) {
        self.signal_all("-CONT").await;
        self.frozen = false;
    }

    fn pids(&self) -> Vec<String> {
        let pid_file = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .unwrap_or_default();
        let Some(postmaster) = pid_file.lines().next().map(str::trim) else {
            return Vec::new();
        };
        let children = std::process::Command::new("pgrep")
            .args(["-P", postmaster])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut pids: Vec<String> = children.split_whitespace().map(str::to_owned).collect();
        pids.push(postmaster.to_owned());
        pids
    }

    async fn signal_all(&self, signal: &str) {
        let pids = self.pids();
        let mut args = vec![signal];
        args.extend(pids.iter().map(String::as_str));
        run("kill", &args).await;
    }

    /// A connection of the test's own to the service's database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.frozen {
            let _ = std::process::Command::new("kill")
                .arg("-CONT")
                .args(self.pids())
                .status();
        }
        if self.running {
            let program = format!("{}/pg_ctl", pg_bin());
            let _ = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--", &program, "-D", &self.data()])
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A `nats-server -js` of the test's own; stop and start keep its port and store directory.
pub struct OwnNats {
    dir: TempDir,
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnNats {
    pub async fn start() -> OwnNats {
        let mut nats = OwnNats {
            dir: TempDir::new("nats"),
            port: free_port(),
            child: None,
        };
        nats.start_again().await;
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the stopped server on the same port and store; returns once it is ready.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "nats-server is running already");
        let log = self.dir.path().join("nats.log");
        let _ = std::fs::remove_file(&log);
        let store = self.dir.path().join("jetstream");
        let port = self.port.to_string();
        let child = std::process::Command::new(NATS_SERVER)
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(&store)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        eventually(Duration::from_secs(30), "nats-server to be ready", || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .ok()
                    .filter(|text| text.contains("Server is ready"))
                    .map(|_| ())
            }
        })
        .await;
    }

    /// `kill -9`: no goodbye to its clients, nothing flushed beyond what it wrote already.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How to run `keyledger serve`: its environment and a directory of its own (the key files),
/// the same for every start so that a restarted service is the same service.
pub struct ServiceSpec {
    dir: TempDir,
    env: Vec<(String, String)>,
    starts: usize,
}

impl ServiceSpec {
    pub fn new(database_url: &str) -> ServiceSpec {
        let dir = TempDir::new("service");
        let env = vec![
            ("DATABASE_URL".to_owned(), database_url.to_owned()),
            ("KEYLEDGER_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
            (
                "JWT_KEY_FILE".to_owned(),
                dir.path().join("jwt.key").to_string_lossy().into_owned(),
            ),
            (
                "SIGNING_KEY_FILE".to_owned(),
                dir.path()
                    .join("signing.key")
                    .to_string_lossy()
                    .into_owned(),
            ),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ];
        ServiceSpec {
            dir,
            env,
            starts: 0,
        }
    }

    /// Sets (or replaces) an environment variable of the next starts.
    pub fn env(mut self, name: &str, value: &str) -> ServiceSpec {
        self.set(name, value);
        self
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    pub fn database_url(&self) -> String {
        self.env
            .iter()
            .find(|(n, _)| n == "DATABASE_URL")
            .map(|(_, v)| v.clone())
            .unwrap()
    }

    /// Starts the service on a new port; returns once `/health/ready` answers 200.
    pub async fn start(&mut self) -> Service {
        self.starts += 1;
        let port = free_port();
        let log = self.dir.path().join(format!("service-{}.log", self.starts));
        let file = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
            .arg("serve")
            .env_remove("NATS_URL")
            .envs(self.env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .env("BIND", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut service = Service {
            child,
            address: format!("http://127.0.0.1:{port}"),
            log,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let ready = service.url("/health/ready");
        let started = Instant::now();
        loop {
            if let Some(status) = service.child.try_wait().unwrap() {
                panic!(
                    "keyledger serve exited ({status}) before it was ready:\n{}",
                    service.log_tail(60)
                );
            }
            if let Ok(response) = http.get(&ready).send().await
                && response.status() == 200
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "keyledger serve was not ready within 60 s:\n{}",
                service.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        service
    }
}

/// The real `keyledger serve` in a child process, its output in a log file.
pub struct Service {
    child: std::process::Child,
    pub address: String,
    log: PathBuf,
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Fails the test, with the end of its log, when the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("keyledger serve exited ({status}):\n{}", self.log_tail(80));
        }
    }

    /// The process's peak resident set size (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `/health` as JSON (whatever its status).
    pub async fn health(&self, http: &reqwest::Client) -> Option<Value> {
        http.get(self.url("/health"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- end of the service's log ({}) ---\n{}",
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}

/// Runs `keyledger <args>` (an operator command) against `database_url`; fails the test with
/// its output unless it succeeds, else returns its standard output.
pub async fn keyledger_cli(args: &[&str], database_url: &str) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "keyledger {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A client that calls as the bootstrap admin, giving up on an answer after `timeout` (far
/// beyond any bound a test asserts: a hang shows as a slow answer, not a stuck test).
pub fn admin_client(timeout: Duration) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {ADMIN_TOKEN}")).unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(timeout)
        .build()
        .unwrap()
}

/// What a client saw of one call.
#[derive(Debug, Clone)]
pub struct Answer {
    /// When it was sent and answered, since the test's clock started.
    pub sent: Duration,
    pub took: Duration,
    /// `None`: no HTTP answer (refused, reset, timed out).
    pub status: Option<u16>,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub replayed: bool,
    pub body: Value,
    pub error: Option<String>,
}

impl Answer {
    pub fn answered(&self) -> Duration {
        self.sent + self.took
    }

    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// A 503 `SYS_UNAVAILABLE` problem with a `Retry-After` of whole seconds.
    pub fn is_unavailable_with_retry_after(&self) -> bool {
        self.status == Some(503)
            && self.content_type == "application/problem+json"
            && self.code() == "SYS_UNAVAILABLE"
            && self.body["status"] == 503
            && self
                .retry_after
                .as_deref()
                .is_some_and(|r| r.parse::<u64>().is_ok())
    }

    pub fn describe(&self) -> String {
        format!(
            "{} after {:?} (sent at {:?}): {}{}",
            self.status
                .map_or("no answer".to_owned(), |s| s.to_string()),
            self.took,
            self.sent,
            self.error.clone().unwrap_or_default(),
            self.body
        )
    }
}

/// Sends `request` and records the answer; `clock` is the test's start.
pub async fn call(request: reqwest::RequestBuilder, clock: Instant) -> Answer {
    let sent = clock.elapsed();
    let started = Instant::now();
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let content_type = header("content-type").unwrap_or_default();
            let retry_after = header("retry-after");
            let replayed = header("idempotent-replayed").is_some_and(|v| v == "true");
            let (body, error) = match response.bytes().await {
                Ok(bytes) => (
                    serde_json::from_slice(&bytes).unwrap_or_else(
                        |_| json!({"text": String::from_utf8_lossy(&bytes).into_owned()}),
                    ),
                    None,
                ),
                Err(e) => (Value::Null, Some(format!("body: {e}"))),
            };
            Answer {
                sent,
                took: started.elapsed(),
                status: Some(status),
                content_type,
                retry_after,
                replayed,
                body,
                error,
            }
        }
        Err(error) => Answer {
            sent,
            took: started.elapsed(),
            status: None,
            content_type: String::new(),
            retry_after: None,
            replayed: false,
            body: Value::Null,
            error: Some(error.to_string()),
        },
    }
}

/// The license routes a load calls, as requests for `call`: `Service::licenses(&http)`.
#[derive(Clone)]
pub struct Licenses {
    http: reqwest::Client,
    address: String,
}

impl Service {
    pub fn licenses(&self, http: &reqwest::Client) -> Licenses {
        Licenses {
            http: http.clone(),
            address: self.address.clone(),
        }
    }
}

impl Licenses {
    /// `POST /v1/licenses` with `{owner, tier}`.
    pub fn issue(&self, owner: &str, tier: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/licenses", self.address))
            .json(&json!({"owner": owner, "tier": tier}))
    }

    /// `POST /v1/licenses/validate` with `{key}`.
    pub fn validate(&self, key: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/licenses/validate", self.address))
            .json(&json!({"key": key}))
    }

    /// Issues a license on the pro tier that must be acknowledged; its id and key.
    pub async fn seed(&self, owner: &str, clock: Instant) -> (String, String) {
        let answer = call(self.issue(owner, "pro"), clock).await;
        assert_eq!(answer.status, Some(201), "{}", answer.describe());
        answer.issued().unwrap()
    }

    /// Validates every acknowledged `(license id, key)`: each must be `VALID` as its license.
    pub async fn assert_all_valid(&self, acknowledged: &[(String, String)], clock: Instant) {
        for (license_id, key) in acknowledged {
            let answer = call(self.validate(key), clock).await;
            assert_eq!(answer.status, Some(200), "{}", answer.describe());
            assert_eq!(answer.body["code"], "VALID", "license {license_id}");
            assert_eq!(
                answer.body["license_id"].as_str(),
                Some(license_id.as_str())
            );
        }
    }
}

impl Answer {
    /// The license id and key of an acknowledged issue (a 201).
    pub fn issued(&self) -> Option<(String, String)> {
        (self.status == Some(201)).then(|| {
            (
                self.body["license_id"].as_str().unwrap().to_owned(),
                self.body["key"].as_str().unwrap().to_owned(),
            )
        })
    }
}

/// Clients calling on tasks of their own until the load is stopped.
#[derive(Default)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// A client that runs `step(n)` for n = 1, 2, …, `pause` apart, until the load stops.
    pub fn client<F, Fut>(&mut self, pause: Duration, mut step: F)
    where
        F: FnMut(usize) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                step(n).await;
                tokio::time::sleep(pause).await;
            }
        }));
    }

    /// Stops every client and waits for its last call.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A component of `/health` (`projections`, `workers`) by name.
pub fn component<'a>(health: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    health["components"][list]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// Percentile `p` (0–100) of `durations`.
pub fn percentile(durations: &[Duration], p: usize) -> Duration {
    let mut sorted = durations.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) * p) / 100]
}

/// A small deterministic random source (xorshift), seeded from the clock: the seed is
/// printed, so a failing run can be repeated with `FAULTS_SEED`.
pub struct Random(u64);

impl Random {
    pub fn new(what: &str) -> Random {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| (Uuid::new_v4().as_u128() as u64) | 1);
        eprintln!("[{what}] random seed {seed} (set FAULTS_SEED={seed} to repeat)");
        Random(seed)
    }

    /// A source of its own, seeded from this one (and so repeated with it).
    pub fn fork(&mut self) -> Random {
        Random(self.next() | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `range`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }
}
