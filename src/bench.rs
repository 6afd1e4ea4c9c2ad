//! `keyledger bench`: the service's throughput over HTTP next to pgbench on the same PostgreSQL.
//!
//! One run drops and re-creates the bench database, measures two pgbench baselines (one
//! event-sized INSERT per transaction; one primary-key lookup), then drives the service
//! (in-process unless `--url` is given) from `--clients` concurrent HTTP clients, issuing
//! licenses and then validating keys, and prints both side by side with the ratios.
//!
//! Authentication is on as in production: licenses are issued with a bearer token, and keys
//! are validated both ways clients send them: in the body (a public call) and as
//! `Authorization: License <key>` (the license holder authenticated, which costs a lookup).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::{JoinHandle, JoinSet};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};
use uuid::Uuid;

use crate::app::Application;
use crate::config::ServeArgs;

pub const DEFAULT_BENCH_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/keyledger_bench";

/// Rows of the pgbench lookup table.
const LOOKUP_ROWS: u32 = 100_000;
/// Licenses issued before the validate phase; each validation picks one of their keys.
const KEY_POOL: usize = 1000;
/// pgbench worker threads (`-j`), capped at the client count.
const PGBENCH_THREADS: u32 = 2;
/// A request slower than this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Concurrent clients, for pgbench and for the HTTP phases alike.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,

    /// Length of each measured phase, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,

    /// PostgreSQL database of the run. It is DROPPED and re-created first, so each run starts
    /// empty; its name must contain "bench".
    #[arg(long, default_value = DEFAULT_BENCH_DATABASE_URL)]
    pub database_url: String,

    /// Base URL of an already running service (e.g. http://127.0.0.1:8080) to benchmark
    /// instead of starting one in-process on --database-url.
    #[arg(long)]
    pub url: Option<String>,

    /// Bearer token with `licenses:write` for the issue phase against `--url` (an API key, an
    /// access token, or the bootstrap token). In-process runs make a bootstrap token of their
    /// own.
    #[arg(long, env = "KEYLEDGER_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config: Config = args
        .database_url
        .parse()
        .context("Failed to parse --database-url")?;
    let database = config
        .get_dbname()
        .context("--database-url names no database")?
        .to_owned();
    if !database.contains("bench") {
        anyhow::bail!(
            "refusing to drop and re-create the database `{database}`: `keyledger bench` \
             empties --database-url, so its name must contain \"bench\""
        );
    }

    eprintln!("bench: re-creating the database `{database}`");
    let server_version = recreate_database(&config, &database).await?;
    let baseline = pgbench_baseline(&args, &config, &database).await?;

    let local_token =
        hex::encode(Uuid::new_v4().as_bytes()) + &hex::encode(Uuid::new_v4().as_bytes());
    let serve_args = |request_log: bool| -> anyhow::Result<ServeArgs> {
        let mut serve = ServeArgs::local(&args.database_url);
        serve.request_log_enabled = request_log;
        serve.admin_token = Some(
            keyledger_api::principal::AdminToken::parse(&local_token)
                .map_err(anyhow::Error::msg)?,
        );
        Ok(serve)
    };
    let token = match &args.url {
        Some(_) => args.token.clone(),
        None => Some(local_token.clone()),
    };
    let (base_url, service, server) = match &args.url {
        Some(url) => (
            url.trim_end_matches('/').to_owned(),
            format!("running at {url}"),
            None,
        ),
        None => {
            let app = Application::build(serve_args(true)?, keyledger_command::system_clock())
                .await
                .context("Failed to start the service in-process")?;
            let base_url = format!("http://{}", app.address);
            let service = format!("in-process at {base_url}, database `{database}`");
            (
                base_url,
                service,
                Some(tokio::spawn(app.run_until_stopped())),
            )
        }
    };
    let target = Target::new(&base_url, args.clients, token.clone())?;
    let duration = Duration::from_secs(args.seconds);

    eprintln!("bench: issue phase, {} s", args.seconds);
    let issue = run_phase(&target, &Workload::Issue, args.clients, duration).await?;
    eprintln!("bench: issuing {KEY_POOL} licenses for the validate phase");
    let keys = issue_key_pool(&target, args.clients).await?;
    eprintln!("bench: validate phase, {} s", args.seconds);
    let keys = Arc::new(keys);
    let validate = run_phase(
        &target,
        &Workload::Validate {
            keys: keys.clone(),
            in_header: false,
        },
        args.clients,
        duration,
    )
    .await?;
    eprintln!(
        "bench: validate phase, key as `Authorization: License`, {} s",
        args.seconds
    );
    let validate_header = run_phase(
        &target,
        &Workload::Validate {
            keys: keys.clone(),
            in_header: true,
        },
        args.clients,
        duration,
    )
    .await?;
    // The same validations against a second in-process service on the same database with the
    // request log switched off: what recording every request costs.
    let unlogged = match &args.url {
        Some(_) => None,
        None => {
            let app = Application::build(serve_args(false)?, keyledger_command::system_clock())
                .await
                .context("Failed to start the service without request logging")?;
            let quiet = Target::new(&format!("http://{}", app.address), args.clients, token)?;
            tokio::spawn(app.run_until_stopped());
            eprintln!(
                "bench: validate phase without the request log, {} s",
                args.seconds
            );
            Some(
                run_phase(
                    &quiet,
                    &Workload::Validate {
                        keys: keys.clone(),
                        in_header: false,
                    },
                    args.clients,
                    duration,
                )
                .await?,
            )
        }
    };
    if let Some(server) = server {
        ensure_still_running(server).await?;
    }

    print_report(&Report {
        args: &args,
        server_version: &server_version,
        service: &service,
        baseline: &baseline,
        issue: &issue,
        validate: &validate,
        validate_header: &validate_header,
        unlogged: unlogged.as_ref(),
    });
    Ok(())
}

/// The in-process service must have served the whole run.
async fn ensure_still_running(server: JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    if !server.is_finished() {
        server.abort();
        return Ok(());
    }
    match server.await {
        Ok(Ok(())) => anyhow::bail!("the in-process service stopped during the bench"),
        Ok(Err(error)) => Err(error.context("the in-process service stopped during the bench")),
        Err(join) => anyhow::bail!("the in-process service panicked during the bench: {join}"),
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL and pgbench

async fn connect(config: &Config) -> anyhow::Result<(Client, JoinHandle<()>)> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("Failed to connect to PostgreSQL")?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, driver))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Drops and re-creates `database`; returns the server's version.
async fn recreate_database(config: &Config, database: &str) -> anyhow::Result<String> {
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, driver) = connect(&admin)
        .await
        .context("Failed to connect to the `postgres` database")?;
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .context("Failed to read the server version")?
        .try_get(0)
        .context("Failed to read the server version")?;
    let quoted = quote_ident(database);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .await
        .with_context(|| format!("Failed to drop the database `{database}`"))?;
    client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
        .with_context(|| format!("Failed to create the database `{database}`"))?;
    drop(client);
    driver.abort();
    Ok(version)
}

/// Scratch tables shaped like `events` (migrations/V1, V6) and `license_validation` (V2).
const SCRATCH_SETUP: &str = r"
CREATE TABLE bench_events (
    position       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL CHECK (version >= 1),
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL,
    data           json        NOT NULL,
    metadata       json        NOT NULL,
    recorded_at    timestamptz NOT NULL,
    hash           bytea       NOT NULL,
    hash_rule      smallint    NOT NULL DEFAULT 2,
    UNIQUE (stream_id, version)
);
CREATE INDEX bench_events_event_type_idx ON bench_events (event_type, position);
CREATE TABLE bench_lookup (
    key_hash   text        PRIMARY KEY,
    license_id uuid        NOT NULL UNIQUE,
    tier       text        NOT NULL,
    status     text        NOT NULL,
    expires_at timestamptz NOT NULL
);
";

const SCRATCH_TEARDOWN: &str = "DROP TABLE IF EXISTS bench_events, bench_lookup";

/// One event per transaction, its data and metadata sent as parameters like the writer's.
const INSERT_SCRIPT: &str = "\
INSERT INTO bench_events (event_id, stream_id, version, event_type, schema_version, data, \
metadata, recorded_at, hash) VALUES (gen_random_uuid(), 'license-' || gen_random_uuid(), 1, \
'LicenseIssued', 1, :data::json, :metadata::json, now(), sha256(uuid_send(gen_random_uuid())));
";

/// The validation lookup: a random existing row by its 64-hex-character key hash.
fn lookup_script() -> String {
    format!(
        "\\set id random(1, {LOOKUP_ROWS})\n\
         SELECT license_id, tier, status, expires_at FROM bench_lookup \
         WHERE key_hash = encode(sha256(convert_to('key-' || :id, 'UTF8')), 'hex');\n"
    )
}

/// The data of a `LicenseIssued` event as the service stores it (about 300 bytes of JSON).
fn event_data() -> Value {
    json!({
        "license_id": "0b6f3e52-9a1d-4c47-8f2e-3d5a7c9e1b24",
        "key_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "key_prefix": "lic_7Hq3xKpZ",
        "owner": "bench-1234",
        "tier": "pro",
        "issued_at": "2026-11-22T10:00:00.123456Z",
        "expires_at": "2027-11-22T10:00:00.123456Z",
        "metadata": {}
    })
}

fn event_metadata() -> Value {
    json!({
        "correlation_id": "5c2e8f0a-7d41-4b9e-a3c6-1f8d2e4b6a90",
        "actor": "api"
    })
}

struct Baseline {
    insert_tps: f64,
    lookup_tps: f64,
    failed_transactions: u64,
}

async fn pgbench_baseline(
    args: &BenchArgs,
    config: &Config,
    database: &str,
) -> anyhow::Result<Baseline> {
    let (client, driver) = connect(config)
        .await
        .with_context(|| format!("Failed to connect to the database `{database}`"))?;
    client
        .batch_execute(SCRATCH_SETUP)
        .await
        .context("Failed to create the pgbench scratch tables")?;
    eprintln!("bench: filling the lookup table with {LOOKUP_ROWS} rows");
    client
        .execute(
            "INSERT INTO bench_lookup \
             SELECT encode(sha256(convert_to('key-' || g, 'UTF8')), 'hex'), gen_random_uuid(), \
                    'pro', 'active', now() + interval '365 days' \
             FROM generate_series(1, $1::integer) AS g",
            &[&i32::try_from(LOOKUP_ROWS).context("Failed to size the lookup table")?],
        )
        .await
        .context("Failed to fill the pgbench lookup table")?;
    client
        .batch_execute("VACUUM ANALYZE bench_lookup")
        .await
        .context("Failed to vacuum the pgbench lookup table")?;
    // Flush the setup's writes now rather than during the measurements (needs superuser or
    // pg_checkpoint; skipped without).
    if let Err(error) = client.batch_execute("CHECKPOINT").await {
        eprintln!("bench: skipping CHECKPOINT: {error}");
    }

    let scripts = ScratchDir::create()?;
    let measured = async {
        let insert = scripts.write("insert.sql", INSERT_SCRIPT)?;
        let lookup = scripts.write("lookup.sql", &lookup_script())?;
        let data = serde_json::to_string(&event_data()).context("Failed to encode event data")?;
        let metadata =
            serde_json::to_string(&event_metadata()).context("Failed to encode event metadata")?;
        eprintln!("bench: pgbench insert, {} s", args.seconds);
        let (insert_tps, insert_failed) = pgbench(
            args,
            config,
            database,
            &insert,
            &[("data", &data), ("metadata", &metadata)],
        )
        .await?;
        eprintln!("bench: pgbench lookup, {} s", args.seconds);
        let (lookup_tps, lookup_failed) = pgbench(args, config, database, &lookup, &[]).await?;
        Ok::<_, anyhow::Error>(Baseline {
            insert_tps,
            lookup_tps,
            failed_transactions: insert_failed + lookup_failed,
        })
    }
    .await;

    scripts.remove();
    let dropped = client
        .batch_execute(SCRATCH_TEARDOWN)
        .await
        .context("Failed to drop the pgbench scratch tables");
    drop(client);
    driver.abort();
    let baseline = measured?;
    dropped?;
    Ok(baseline)
}

/// Runs one pgbench script; returns its transactions per second and failed transactions.
async fn pgbench(
    args: &BenchArgs,
    config: &Config,
    database: &str,
    script: &Path,
    variables: &[(&str, &str)],
) -> anyhow::Result<(f64, u64)> {
    let mut command = tokio::process::Command::new("pgbench");
    match config.get_hosts().first() {
        Some(Host::Tcp(host)) => {
            command.arg("-h").arg(host);
        }
        #[cfg(unix)]
        Some(Host::Unix(path)) => {
            command.arg("-h").arg(path);
        }
        None => {}
    }
    if let Some(port) = config.get_ports().first() {
        command.arg("-p").arg(port.to_string());
    }
    if let Some(user) = config.get_user() {
        command.arg("-U").arg(user);
    }
    if let Some(password) = config.get_password() {
        command.env("PGPASSWORD", String::from_utf8_lossy(password).as_ref());
    }
    command
        .args(["-n", "-M", "prepared"])
        .arg("-c")
        .arg(args.clients.to_string())
        .arg("-j")
        .arg(PGBENCH_THREADS.min(args.clients).to_string())
        .arg("-T")
        .arg(args.seconds.to_string())
        .arg("-f")
        .arg(script);
    for (name, value) in variables {
        command.arg("-D").arg(format!("{name}={value}"));
    }
    command.arg(database).kill_on_drop(true);
    let output = command
        .output()
        .await
        .context("Failed to run pgbench (is it installed and on PATH?)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!(
            "pgbench failed ({}) on {}: {}{}",
            output.status,
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim(),
            stdout.trim()
        );
    }
    let tps = parse_tps(&stdout)
        .with_context(|| format!("Failed to find \"tps = …\" in pgbench's output:\n{stdout}"))?;
    Ok((tps, parse_failed(&stdout).unwrap_or(0)))
}

/// `tps = 1234.567890 (without initial connection time)`
fn parse_tps(output: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        line.trim()
            .strip_prefix("tps = ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// `number of failed transactions: 0 (0.000%)` (PostgreSQL 15 and later)
fn parse_failed(output: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        line.trim()
            .strip_prefix("number of failed transactions:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// A temporary directory for the pgbench scripts.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> anyhow::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!(
            "keyledger-bench-{}-{}",
            std::process::id(),
            Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("Failed to create {}", path.display()))?;
        Ok(ScratchDir(path))
    }

    fn write(&self, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::write(&path, contents)
            .with_context(|| format!("Failed to write {}", path.display()))?;
        Ok(path)
    }

    fn remove(self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            eprintln!("bench: could not remove {}: {error}", self.0.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP phases

#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    /// `Authorization` of the issue calls.
    authorization: Option<String>,
    issue_url: String,
    validate_url: String,
    owners: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Workload {
    Issue,
    /// Validate keys drawn at random from these, sent in the body or as `Authorization:
    /// License <key>`.
    Validate {
        keys: Arc<Vec<String>>,
        in_header: bool,
    },
}

impl Target {
    fn new(base_url: &str, clients: u32, token: Option<String>) -> anyhow::Result<Target> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::try_from(clients).unwrap_or(usize::MAX))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("Failed to build the HTTP client")?;
        Ok(Target {
            client,
            authorization: token.map(|token| format!("Bearer {token}")),
            issue_url: format!("{base_url}/v1/licenses"),
            validate_url: format!("{base_url}/v1/licenses/validate"),
            owners: Arc::new(AtomicU64::new(0)),
        })
    }

    /// POST /v1/licenses → 201 with the new key.
    async fn issue(&self) -> Result<String, String> {
        let owner = format!("bench-{}", self.owners.fetch_add(1, Ordering::Relaxed));
        let body = self
            .post(
                &self.issue_url,
                self.authorization.as_deref(),
                &json!({"owner": owner, "tier": "pro"}),
                StatusCode::CREATED,
            )
            .await?;
        body.get("key")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("201 from POST /v1/licenses without a key: {body}"))
    }

    /// POST /v1/licenses/validate → 200 with `"valid": true`.
    async fn validate(&self, key: &str, in_header: bool) -> Result<(), String> {
        let body = if in_header {
            let authorization = format!("License {key}");
            self.post(
                &self.validate_url,
                Some(&authorization),
                &json!({}),
                StatusCode::OK,
            )
            .await?
        } else {
            self.post(
                &self.validate_url,
                None,
                &json!({"key": key}),
                StatusCode::OK,
            )
            .await?
        };
        if body.get("valid") == Some(&Value::Bool(true)) {
            Ok(())
        } else {
            Err(format!(
                "200 from POST /v1/licenses/validate, not valid: {body}"
            ))
        }
    }

    async fn post(
        &self,
        url: &str,
        authorization: Option<&str>,
        body: &Value,
        expected: StatusCode,
    ) -> Result<Value, String> {
        let mut request = self.client.post(url).json(body);
        if let Some(authorization) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("POST {url}: reading the body: {e}"))?;
        if status != expected {
            let text = String::from_utf8_lossy(&bytes);
            return Err(format!(
                "POST {url}: {status} (expected {expected}): {}",
                text.chars().take(300).collect::<String>()
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("POST {url}: body is not JSON: {e}"))
    }
}

/// Issues the validate phase's licenses, `clients` at a time; any failure stops the bench.
async fn issue_key_pool(target: &Target, clients: u32) -> anyhow::Result<Vec<String>> {
    let results: Vec<Result<String, String>> = futures::stream::iter(0..KEY_POOL)
        .map(|_| target.issue())
        .buffer_unordered(usize::try_from(clients).unwrap_or(1))
        .collect()
        .await;
    results
        .into_iter()
        .collect::<Result<Vec<_>, String>>()
        .map_err(anyhow::Error::msg)
        .context("Failed to issue the licenses for the validate phase")
}

#[derive(Default)]
struct PhaseResult {
    /// Latencies of the requests answered as expected, sorted.
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl PhaseResult {
    fn per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.latencies.len() as f64 / seconds
        } else {
            0.0
        }
    }

    /// Nearest-rank percentile, in milliseconds.
    fn percentile_ms(&self, percent: f64) -> Option<f64> {
        let n = self.latencies.len();
        if n == 0 {
            return None;
        }
        let rank = ((percent / 100.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        Some(self.latencies[index].as_secs_f64() * 1000.0)
    }
}

/// `clients` tasks send requests back to back until `duration` has passed.
async fn run_phase(
    target: &Target,
    workload: &Workload,
    clients: u32,
    duration: Duration,
) -> anyhow::Result<PhaseResult> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let target = target.clone();
        let workload = workload.clone();
        tasks.spawn(async move {
            let mut result = PhaseResult::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = match &workload {
                    Workload::Issue => target.issue().await.map(drop),
                    Workload::Validate { keys, in_header } => {
                        let pick = (Uuid::new_v4().as_u128() % keys.len().max(1) as u128) as usize;
                        match keys.get(pick) {
                            Some(key) => target.validate(key, *in_header).await,
                            None => Err("no keys to validate".to_owned()),
                        }
                    }
                };
                let latency = sent.elapsed();
                match outcome {
                    Ok(()) => result.latencies.push(latency),
                    Err(error) => {
                        result.errors += 1;
                        result.first_error.get_or_insert(error);
                    }
                }
            }
            result
        });
    }
    let mut total = PhaseResult::default();
    while let Some(joined) = tasks.join_next().await {
        let result = joined.context("Failed to join a benchmark client task")?;
        total.latencies.extend(result.latencies);
        total.errors += result.errors;
        if total.first_error.is_none() {
            total.first_error = result.first_error;
        }
    }
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// The report

struct Report<'a> {
    args: &'a BenchArgs,
    server_version: &'a str,
    service: &'a str,
    baseline: &'a Baseline,
    issue: &'a PhaseResult,
    validate: &'a PhaseResult,
    /// Validation with the key as `Authorization: License <key>`.
    validate_header: &'a PhaseResult,
    /// The validate phase against a service with the request log off.
    unlogged: Option<&'a PhaseResult>,
}

const LABEL: usize = 30;

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn ratio(service: f64, baseline: f64) -> String {
    if baseline > 0.0 {
        format!("{:.2}", service / baseline)
    } else {
        "-".to_owned()
    }
}

fn service_line(label: &str, phase: &PhaseResult, baseline: f64, against: &str) -> String {
    format!(
        "  {label:<width$}{:>9.1}{:>8}{:>8}{:>8}{:>8}  {} × pgbench {against}",
        phase.per_second(),
        ms(phase.percentile_ms(50.0)),
        ms(phase.percentile_ms(95.0)),
        ms(phase.percentile_ms(99.0)),
        phase.errors,
        ratio(phase.per_second(), baseline),
        width = LABEL - 2,
    )
}

fn print_report(report: &Report<'_>) {
    let args = report.args;
    let baseline = report.baseline;
    println!(
        "keyledger bench: {} clients, {} s per phase, PostgreSQL {}",
        args.clients, args.seconds, report.server_version
    );
    println!("{:<LABEL$}{:>9}", "baseline (pgbench)", "tps");
    println!(
        "  {:<width$}{:>9.1}",
        "insert one event-sized row",
        baseline.insert_tps,
        width = LABEL - 2
    );
    println!(
        "  {:<width$}{:>9.1}",
        "primary-key lookup",
        baseline.lookup_tps,
        width = LABEL - 2
    );
    println!(
        "{:<LABEL$}{:>9}{:>8}{:>8}{:>8}{:>8}  ratio",
        "service (HTTP)", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"
    );
    println!(
        "{}",
        service_line("issue license", report.issue, baseline.insert_tps, "insert")
    );
    println!(
        "{}",
        service_line(
            "validate, key in body",
            report.validate,
            baseline.lookup_tps,
            "lookup"
        )
    );
    println!(
        "{}",
        service_line(
            "validate, License header",
            report.validate_header,
            baseline.lookup_tps,
            "lookup"
        )
    );
    if let Some(unlogged) = report.unlogged {
        println!(
            "{}",
            service_line(
                "validate, request log off",
                unlogged,
                baseline.lookup_tps,
                "lookup"
            )
        );
    }
    println!();
    println!(
        "pgbench: -n -M prepared -c {} -j {} -T {}{}",
        args.clients,
        PGBENCH_THREADS.min(args.clients),
        args.seconds,
        if baseline.failed_transactions > 0 {
            format!(", {} failed transactions", baseline.failed_transactions)
        } else {
            String::new()
        }
    );
    println!("service: {}", report.service);
    println!(
        "req/s counts the expected answers (201, 200 with \"valid\": true); each validation \
         picks one of {KEY_POOL} keys issued before its phase"
    );
    println!("ratio: the service's requests/s over pgbench's transactions/s");
    println!(
        "authentication on: licenses are issued with a bearer token; a key in the body is a \
         public call, a License header authenticates its holder first"
    );
    for (name, phase) in [
        ("issue", report.issue),
        ("validate", report.validate),
        ("validate (License header)", report.validate_header),
    ] {
        if let Some(error) = &phase.first_error {
            println!("first {name} error: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_output_is_parsed() {
        let output = "\
transaction type: insert.sql
number of transactions actually processed: 12345
number of failed transactions: 3 (0.024%)
latency average = 25.9 ms
initial connection time = 12.3 ms
tps = 1234.567890 (without initial connection time)
";
        assert_eq!(parse_tps(output), Some(1234.56789));
        assert_eq!(parse_failed(output), Some(3));
        assert_eq!(parse_tps("no figures"), None);
    }

    #[test]
    fn the_insert_row_is_event_sized() {
        let data = serde_json::to_string(&event_data()).unwrap();
        assert!((280..=320).contains(&data.len()), "{} bytes", data.len());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let phase = PhaseResult {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            elapsed: Duration::from_secs(2),
            ..PhaseResult::default()
        };
        assert_eq!(phase.percentile_ms(50.0), Some(50.0));
        assert_eq!(phase.percentile_ms(99.0), Some(99.0));
        assert!((phase.per_second() - 50.0).abs() < 1e-9);
        assert_eq!(PhaseResult::default().percentile_ms(50.0), None);
    }
}
