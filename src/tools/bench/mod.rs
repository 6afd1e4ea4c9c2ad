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
//!
//! Against the in-process service it also measures the read side: how long a commit waits for
//! every asynchronous projection to catch up while a phase runs, and, once the phases are over,
//! how many events per second a rebuild of each asynchronous projection replays.

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

mod mcp;

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
    let ceiling = measure_ceiling(&args, &config, &database).await?;

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
    // The lag and the replay read the service's own database: only the in-process one is
    // known to be on --database-url.
    let probe = args.url.is_none().then(|| LagProbe::new(&config));

    eprintln!("bench: issue phase, {} s", args.seconds);
    let (issue, issue_lag) = with_lag(
        probe.as_ref(),
        run_phase(&target, &Workload::Issue, args.clients, duration),
    )
    .await?;
    eprintln!("bench: issuing {KEY_POOL} licenses for the validate phase");
    let keys = issue_key_pool(&target, args.clients).await?;
    eprintln!("bench: validate phase, {} s", args.seconds);
    let keys = Arc::new(keys);
    let (validate, validate_lag) = with_lag(
        probe.as_ref(),
        run_phase(
            &target,
            &Workload::Validate {
                keys: keys.clone(),
                in_header: false,
            },
            args.clients,
            duration,
        ),
    )
    .await?;
    eprintln!(
        "bench: validate phase, key as `Authorization: License`, {} s",
        args.seconds
    );
    let (validate_header, validate_header_lag) = with_lag(
        probe.as_ref(),
        run_phase(
            &target,
            &Workload::Validate {
                keys: keys.clone(),
                in_header: true,
            },
            args.clients,
            duration,
        ),
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
            let quiet = Target::new(
                &format!("http://{}", app.address),
                args.clients,
                token.clone(),
            )?;
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
    let mcp = match &token {
        Some(token) => {
            eprintln!("bench: every MCP tool over HTTP, one client");
            let alone = mcp::run(&base_url, token, 1).await?;
            eprintln!("bench: every MCP tool over HTTP, {} clients", args.clients);
            let loaded = mcp::run(&base_url, token, args.clients).await?;
            Some((alone, loaded))
        }
        None => None,
    };
    if let Some(server) = server {
        ensure_still_running(server).await?;
    }
    let replay = match &args.url {
        Some(_) => None,
        None => {
            eprintln!("bench: replaying the log into each asynchronous projection");
            Some(measure_replay(&args.database_url).await?)
        }
    };
    let view = match &args.url {
        Some(_) => None,
        None => Some(measure_view(&args.database_url).await?),
    };
    let export = match &args.url {
        Some(_) => None,
        None => {
            eprintln!("bench: exporting a log of {EXPORT_EVENTS} events over HTTP");
            Some(measure_export(&args.database_url, &base_url, &local_token).await?)
        }
    };

    print_report(&Report {
        args: &args,
        server_version: &server_version,
        service: &service,
        baseline: &baseline,
        ceiling: &ceiling,
        issue: &issue,
        validate: &validate,
        validate_header: &validate_header,
        unlogged: unlogged.as_ref(),
        lag: [
            ("issue license", issue_lag),
            ("validate, key in body", validate_lag),
            ("validate, License header", validate_header_lag),
        ],
        replay: replay.as_ref(),
        view: view.as_ref(),
        export: export.as_ref(),
        mcp: mcp
            .as_ref()
            .map(|(alone, loaded)| (alone.as_slice(), loaded.as_slice())),
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
            args.clients,
            config,
            database,
            &insert,
            &[("data", &data), ("metadata", &metadata)],
        )
        .await?;
        eprintln!("bench: pgbench lookup, {} s", args.seconds);
        let (lookup_tps, lookup_failed) =
            pgbench(args, args.clients, config, database, &lookup, &[]).await?;
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

/// pgbench clients replaying a validation's writes: the writer keeps two batches in flight,
/// and the projectors write beside it.
const CEILING_CLIENTS: u32 = 4;
/// Validations per transaction in the ceiling's runs: about what 32 clients give the writer,
/// and a batch large enough that the transaction's fixed cost no longer counts.
const CEILING_BATCHES: [u32; 2] = [16, 256];
/// Licenses whose day counts the ceiling's validations update.
const CEILING_LICENSES: i32 = 1000;

/// What the service writes for `:n` validations, as pgbench replays it: the append writer's
/// transaction (the lock, the head and the streams' versions, one usage event and one request
/// record per validation inserted like the writer does, the day's VALID counts, the
/// notification), then the transactions of the two projections that apply them, each with its
/// checkpoint. Hashes are computed in SQL here (the service computes them itself).
fn ceiling_script(batch: u32) -> String {
    format!(
        "\\set n {batch}\n\
BEGIN;\n\
SELECT pg_advisory_xact_lock({lock});\n\
SELECT (SELECT position FROM events ORDER BY position DESC LIMIT 1), \
(SELECT hash FROM events ORDER BY position DESC LIMIT 1), \
ARRAY(SELECT coalesce((SELECT max(e.version) FROM events e WHERE e.stream_id = s.id), 0) \
FROM (SELECT 'license_usage-' || gen_random_uuid() AS id FROM generate_series(1, 2 * :n)) s);\n\
INSERT INTO events (position, event_id, stream_id, version, event_type, schema_version, data, \
metadata, recorded_at, hash, hash_rule) \
SELECT h.p + g, gen_random_uuid(), \
CASE WHEN g % 2 = 0 THEN 'license_usage-' ELSE 'request-' END || gen_random_uuid(), 1, \
CASE WHEN g % 2 = 0 THEN 'LicenseValidated' ELSE 'ApiRequestRecorded' END, 1, \
(CASE WHEN g % 2 = 0 THEN :usage ELSE :record END)::json, :metadata::json, now(), \
sha256(convert_to(g::text || :usage, 'UTF8')), 2 \
FROM (SELECT coalesce(max(position), 0) AS p FROM events) h, generate_series(1, 2 * :n) g;\n\
INSERT INTO license_daily_usage (license_id, day, valid) \
SELECT license_id, current_date, count(*) FROM bench_licenses \
JOIN (SELECT (random() * {last})::int + 1 AS i FROM generate_series(1, :n)) r USING (i) \
GROUP BY license_id \
ON CONFLICT (license_id, day) DO UPDATE SET valid = license_daily_usage.valid + excluded.valid;\n\
SELECT pg_notify('keyledger_events', '0');\n\
COMMIT;\n\
{usage_projection}{request_projection}",
        lock = keyledger_events::writer::APPEND_LOCK_KEY,
        last = CEILING_LICENSES - 1,
        usage_projection = projector_transaction(
            "license_usage",
            "LicenseValidated",
            "INSERT INTO license_usage (license_id, position, validated_at, code, feature, \
             metadata, installation_id) \
             SELECT gen_random_uuid(), g, now(), 'VALID', NULL, '{}'::json, NULL \
             FROM generate_series(1, :n) g"
        ),
        request_projection = projector_transaction(
            "api_requests",
            "ApiRequestRecorded",
            "INSERT INTO api_requests (record_id, request_id, service, method, route, path, \
             query, caller, status, duration_ms, request_body, response_body, at, position) \
             SELECT gen_random_uuid(), gen_random_uuid()::text, 'keyledger', 'POST', \
             '/v1/licenses/validate', '/v1/licenses/validate', NULL, 'lic_7Hq3xKpZ', 200, 12.1, \
             '{\"key\":\"[REDACTED]\"}', :response, now(), g FROM generate_series(1, :n) g"
        ),
    )
}

/// One projector step over `:n` events of `event_type`, as the projector runtime makes it:
/// lock the checkpoint, read the events, write the rows (`insert`), move the checkpoint, notify.
fn projector_transaction(name: &str, event_type: &str, insert: &str) -> String {
    format!(
        "BEGIN;\n\
SELECT position FROM checkpoints WHERE name = '{name}' FOR UPDATE;\n\
SELECT position, event_id, stream_id, version, event_type, schema_version, data, metadata, \
recorded_at, hash FROM events WHERE event_type = '{event_type}' \
ORDER BY position DESC LIMIT :n;\n\
{insert};\n\
UPDATE checkpoints SET position = position + :n, updated_at = now() WHERE name = '{name}';\n\
SELECT pg_notify('keyledger_checkpoints', '{name}');\n\
COMMIT;\n"
    )
}

/// A validation's usage event, request record and metadata, as the service writes them.
fn ceiling_variables() -> anyhow::Result<[(&'static str, String); 4]> {
    let response = json!({
        "code": "VALID",
        "entitlements": ["api", "core", "export", "reports"],
        "expires_at": "2027-11-30T16:46:37.702008Z",
        "license_id": "20545385-5cb8-4805-88e5-e0f034a7d3e7",
        "position": 99963,
        "tier": "pro",
        "valid": true
    })
    .to_string();
    let usage = json!({
        "code": "VALID",
        "license_id": "157f064a-310f-40bb-a7f8-47606b872f3a",
        "metadata": {},
        "validated_at": "2026-11-30T16:46:37.722533Z"
    });
    let record = json!({
        "at": "2026-11-30T16:46:52.121697Z",
        "duration_ms": 12.148945,
        "method": "POST",
        "path": "/v1/licenses/validate",
        "record_id": "5af3d091-4290-433e-836b-aa932deb4abf",
        "request_body": "{\"key\":\"[REDACTED]\"}",
        "request_id": "1a2c744f-712f-4e80-806b-aae60e06f082",
        "response_body": response,
        "route": "/v1/licenses/validate",
        "service": "keyledger",
        "status": 200
    });
    let metadata = json!({
        "actor": "anonymous",
        "causation_id": "1f28edcb-cdc1-4ae9-9819-b511d67840d5",
        "correlation_id": "1f28edcb-cdc1-4ae9-9819-b511d67840d5"
    });
    Ok([
        ("usage", serde_json::to_string(&usage)?),
        ("record", serde_json::to_string(&record)?),
        ("metadata", serde_json::to_string(&metadata)?),
        ("response", response),
    ])
}

/// Replays a validation's writes with pgbench in a migrated database of its own (dropped
/// afterwards), in transactions of each of [`CEILING_BATCHES`] validations; returns the
/// validations per second of each.
async fn measure_ceiling(
    args: &BenchArgs,
    config: &Config,
    database: &str,
) -> anyhow::Result<Vec<(u32, f64)>> {
    let scratch = format!("{database}_writes");
    recreate_database(config, &scratch).await?;
    let mut scratch_config = config.clone();
    scratch_config.dbname(&scratch);
    keyledger_events::db::migrate_config_to(&scratch_config, None)
        .await
        .context("Failed to migrate the database of the writes' baseline")?;
    let measured = async {
        let (client, driver) = connect(&scratch_config)
            .await
            .with_context(|| format!("Failed to connect to the database `{scratch}`"))?;
        client
            .batch_execute(&format!(
                "CREATE TABLE bench_licenses AS \
                   SELECT g AS i, gen_random_uuid() AS license_id \
                   FROM generate_series(1, {CEILING_LICENSES}) AS g; \
                 ALTER TABLE bench_licenses ADD PRIMARY KEY (i); \
                 ANALYZE bench_licenses; \
                 INSERT INTO checkpoints (name, position, version) \
                   VALUES ('license_usage', 0, 0), ('api_requests', 0, 0)"
            ))
            .await
            .context("Failed to prepare the database of the writes' baseline")?;
        drop(client);
        driver.abort();
        let variables = ceiling_variables()?;
        let variables: Vec<(&str, &str)> = variables
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let scripts = ScratchDir::create()?;
        let mut results = Vec::new();
        for batch in CEILING_BATCHES {
            let script = scripts.write(&format!("writes-{batch}.sql"), &ceiling_script(batch));
            let script = match script {
                Ok(script) => script,
                Err(error) => {
                    scripts.remove();
                    return Err(error);
                }
            };
            eprintln!(
                "bench: pgbench, a validation's writes, {batch} a transaction, {} s",
                args.seconds
            );
            let run = pgbench(
                args,
                CEILING_CLIENTS,
                &scratch_config,
                &scratch,
                &script,
                &variables,
            )
            .await;
            match run {
                Ok((tps, _)) => results.push((batch, tps * f64::from(batch))),
                Err(error) => {
                    scripts.remove();
                    return Err(error);
                }
            }
        }
        scripts.remove();
        Ok::<_, anyhow::Error>(results)
    }
    .await;
    let mut admin = config.clone();
    admin.dbname("postgres");
    if let Ok((client, driver)) = connect(&admin).await {
        let _ = client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&scratch)
            ))
            .await;
        drop(client);
        driver.abort();
    }
    measured
}

/// Runs one pgbench script; returns its transactions per second and failed transactions.
async fn pgbench(
    args: &BenchArgs,
    clients: u32,
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
        .arg(clients.to_string())
        .arg("-j")
        .arg(PGBENCH_THREADS.min(clients).to_string())
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
    metrics_url: String,
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
            metrics_url: format!("{base_url}/metrics"),
            owners: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The service's append batches so far: (commands, transactions), from `/metrics`.
    async fn append_batches(&self) -> Option<(f64, f64)> {
        let text = self
            .client
            .get(&self.metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
        };
        Some((
            value("keyledger_append_batch_commands_sum")?,
            value("keyledger_append_batch_commands_count")?,
        ))
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
    /// Commands per append transaction during the phase (all of the service's appends,
    /// request records included).
    commands_per_batch: Option<f64>,
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
        percentile_ms(&self.latencies, percent)
    }
}

/// Nearest-rank percentile of `sorted`, in milliseconds.
fn percentile_ms(sorted: &[Duration], percent: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((percent / 100.0) * n as f64).ceil() as usize;
    let index = rank.clamp(1, n) - 1;
    Some(sorted[index].as_secs_f64() * 1000.0)
}

/// `clients` tasks send requests back to back until `duration` has passed.
async fn run_phase(
    target: &Target,
    workload: &Workload,
    clients: u32,
    duration: Duration,
) -> anyhow::Result<PhaseResult> {
    let batches_before = target.append_batches().await;
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
    // Before the first append the histogram is not exported yet: nothing committed so far.
    let (commands_before, batches_before) = batches_before.unwrap_or((0.0, 0.0));
    if let Some((commands, batches)) = target.append_batches().await
        && batches > batches_before
    {
        total.commands_per_batch = Some((commands - commands_before) / (batches - batches_before));
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Projection lag

/// How often the head of the log is sampled during a phase.
const LAG_SAMPLE_INTERVAL: Duration = Duration::from_millis(20);
/// How often the checkpoints are read while a sample waits for them.
const CHECKPOINT_POLL_INTERVAL: Duration = Duration::from_millis(2);
/// How long after its phase a sample may still wait for the checkpoints.
const LAG_GRACE: Duration = Duration::from_secs(5);

/// The lowest checkpoint of the projections named in `$1`: 0 while one of them has none.
const LOWEST_CHECKPOINT: &str = "SELECT CASE WHEN count(*) = cardinality($1::text[]) \
     THEN coalesce(min(position), 0) ELSE 0 END FROM checkpoints WHERE name = ANY($1)";

/// Where the lag is measured: the service's database and its asynchronous projections.
struct LagProbe {
    config: Config,
    names: Vec<String>,
}

/// The head of the log as one sample read it.
struct HeadSample {
    /// When the read was sent.
    at: Instant,
    head: i64,
    /// The head minus the lowest checkpoint, in the same snapshot.
    behind: i64,
}

/// The projection lag during one phase.
#[derive(Default)]
struct LagResult {
    /// For each sample, the time until every asynchronous projection's checkpoint reached its
    /// head; sorted.
    lags: Vec<Duration>,
    /// Samples not caught up with `LAG_GRACE` after the phase (in `lags` at the time waited).
    late: u64,
    /// The most events between the head and the lowest checkpoint in one sample.
    max_behind: i64,
}

/// Sampling in progress; dropping it stops the sampling.
struct LagSampler {
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::sync::oneshot::Receiver<anyhow::Result<LagResult>>,
}

impl LagProbe {
    fn new(config: &Config) -> LagProbe {
        LagProbe {
            config: config.clone(),
            names: keyledger_projections::asynchronous()
                .iter()
                .map(|projection| projection.name().to_owned())
                .collect(),
        }
    }

    /// Starts sampling on a thread and a runtime of its own, so that its reads do not queue
    /// behind the tasks of the service and of the clients, which would add to the lag measured.
    fn start(&self) -> anyhow::Result<LagSampler> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (report, done) = tokio::sync::oneshot::channel();
        let config = self.config.clone();
        let names = self.names.clone();
        std::thread::Builder::new()
            .name("bench-lag".to_owned())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("Failed to start the lag sampler's runtime")
                    .and_then(|runtime| runtime.block_on(sample_lag(config, names, stopped)));
                let _ = report.send(result);
            })
            .context("Failed to start the lag sampler's thread")?;
        Ok(LagSampler { stop, done })
    }
}

impl LagSampler {
    /// Stops sampling and waits for the samples taken to be caught up with (or given up on).
    async fn finish(self) -> anyhow::Result<LagResult> {
        let _ = self.stop.send(true);
        self.done
            .await
            .context("the lag sampler's thread ended without a result")?
    }
}

/// Runs `phase`; with a probe, samples the projection lag meanwhile.
async fn with_lag<T>(
    probe: Option<&LagProbe>,
    phase: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Option<LagResult>)> {
    let Some(probe) = probe else {
        return Ok((phase.await?, None));
    };
    let sampler = probe.start()?;
    let result = phase.await?;
    let lag = sampler.finish().await?;
    Ok((result, Some(lag)))
}

/// Samples the lag until told to stop, on two connections of its own (outside the service's
/// pool): one reads the head, the other watches the checkpoints.
async fn sample_lag(
    config: Config,
    names: Vec<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<LagResult> {
    let (heads, _) = connect(&config)
        .await
        .context("Failed to connect the head sampler")?;
    let (checkpoints, _) = connect(&config)
        .await
        .context("Failed to connect the checkpoint watcher")?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let ((), lag) = futures::try_join!(
        sample_heads(heads, &names, stop, sender),
        watch_checkpoints(checkpoints, &names, receiver),
    )?;
    Ok(lag)
}

/// Reads the head and the lowest checkpoint every `LAG_SAMPLE_INTERVAL` until told to stop.
async fn sample_heads(
    client: Client,
    names: &[String],
    mut stop: tokio::sync::watch::Receiver<bool>,
    samples: tokio::sync::mpsc::UnboundedSender<HeadSample>,
) -> anyhow::Result<()> {
    let statement = client
        .prepare(&format!(
            "SELECT (SELECT coalesce(max(position), 0) FROM events), ({LOWEST_CHECKPOINT})"
        ))
        .await
        .context("Failed to prepare the head sample")?;
    let mut ticks = tokio::time::interval(LAG_SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => break,
        }
        let at = Instant::now();
        let row = client
            .query_one(&statement, &[&names])
            .await
            .context("Failed to sample the head of the log")?;
        let (head, lowest): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let sample = HeadSample {
            at,
            head,
            behind: head - lowest,
        };
        if samples.send(sample).is_err() {
            break;
        }
    }
    Ok(())
}

/// Reads the lowest checkpoint every `CHECKPOINT_POLL_INTERVAL` while samples wait for it; a
/// sample's lag ends at the first read that shows every checkpoint at or past its head.
async fn watch_checkpoints(
    client: Client,
    names: &[String],
    mut samples: tokio::sync::mpsc::UnboundedReceiver<HeadSample>,
) -> anyhow::Result<LagResult> {
    use tokio::sync::mpsc::error::TryRecvError;

    let statement = client
        .prepare(LOWEST_CHECKPOINT)
        .await
        .context("Failed to prepare the checkpoint read")?;
    let mut result = LagResult::default();
    let mut pending: Vec<HeadSample> = Vec::new();
    let mut give_up_at: Option<Instant> = None;
    let mut ticks = tokio::time::interval(CHECKPOINT_POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // Only samples taken before this read are judged by it.
        loop {
            match samples.try_recv() {
                Ok(sample) => {
                    result.max_behind = result.max_behind.max(sample.behind);
                    pending.push(sample);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    give_up_at.get_or_insert_with(|| Instant::now() + LAG_GRACE);
                    break;
                }
            }
        }
        if let Some(deadline) = give_up_at {
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                result.late = pending.len() as u64;
                result
                    .lags
                    .extend(pending.drain(..).map(|sample| sample.at.elapsed()));
                break;
            }
        }
        if pending.is_empty() {
            continue;
        }
        let lowest: i64 = client
            .query_one(&statement, &[&names])
            .await
            .context("Failed to read the checkpoints")?
            .try_get(0)?;
        let seen = Instant::now();
        pending.retain(|sample| {
            let caught_up = sample.head <= lowest;
            if caught_up {
                result.lags.push(seen.saturating_duration_since(sample.at));
            }
            !caught_up
        });
    }
    result.lags.sort_unstable();
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Replay

/// The run's log replayed after the phases.
struct ReplayResult {
    /// Events in the log.
    events: i64,
    /// Reading and decoding the whole log in the rebuild's batches, applying nothing.
    read: Duration,
    /// Each asynchronous projection's rebuild from position 0.
    rebuilds: Vec<(&'static str, Duration)>,
}

impl ReplayResult {
    fn total(&self) -> Duration {
        self.rebuilds.iter().map(|(_, took)| *took).sum()
    }

    fn per_second(&self, took: Duration) -> f64 {
        let seconds = took.as_secs_f64();
        if seconds > 0.0 {
            self.events as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Times a plain read of the log, then a rebuild of each asynchronous projection from position
/// 0 as `keyledger projections rebuild` does it, on a connection of its own (the service is
/// idle by then).
async fn measure_replay(database_url: &str) -> anyhow::Result<ReplayResult> {
    let pool = keyledger_events::db::pool(database_url, 1)?;
    let read = {
        let client = pool
            .get()
            .await
            .context("Failed to connect to replay the log")?;
        let started = Instant::now();
        read_log(&client).await?;
        started.elapsed()
    };
    let events: i64 = pool
        .get()
        .await
        .context("Failed to connect to replay the log")?
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .context("Failed to count the events")?
        .try_get(0)?;
    let notifier = keyledger_events::Notifier::default();
    let mut rebuilds = Vec::new();
    for projection in keyledger_projections::asynchronous() {
        let started = Instant::now();
        keyledger_projections::rebuild::rebuild(&pool, projection.as_ref(), false, &notifier)
            .await
            .with_context(|| format!("Failed to rebuild {}", projection.name()))?;
        rebuilds.push((projection.name(), started.elapsed()));
    }
    Ok(ReplayResult {
        events,
        read,
        rebuilds,
    })
}

/// Events in the log when the export is measured.
const EXPORT_EVENTS: i64 = 1_000_000;

/// `GET /v1/events/export` of a log of [`EXPORT_EVENTS`] events.
struct ExportResult {
    events: u64,
    bytes: u64,
    took: Duration,
    /// The process's resident high-water mark during the export over its resident size
    /// before it (`None` where /proc cannot tell).
    peak_growth: Option<u64>,
}

/// Tops the log up to [`EXPORT_EVENTS`] with copies of its events under a type no projection
/// reads (under the append lock, as a writer would), then streams the export from the service
/// over HTTP, counting lines and bytes, with the process's peak memory reset before it.
async fn measure_export(
    database_url: &str,
    base_url: &str,
    token: &str,
) -> anyhow::Result<ExportResult> {
    let pool = keyledger_events::db::pool(database_url, 1)?;
    let mut client = pool
        .get()
        .await
        .context("Failed to connect to fill the log")?;
    let count: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .try_get(0)?;
    // In transactions of at most 20k rows: each holds the append lock well under the writers
    // lock timeout.
    let mut count = count;
    while count < EXPORT_EVENTS {
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&keyledger_events::writer::APPEND_LOCK_KEY],
        )
        .await?;
        let missing = (EXPORT_EVENTS - count).min(20_000);
        // Copies of the log's first events, positions after the head.
        let inserted = tx
            .execute(
                "INSERT INTO events (position, event_id, stream_id, version, event_type, \
                                     schema_version, data, metadata, recorded_at, hash, \
                                     hash_rule) \
                 SELECT h.p + n, gen_random_uuid(), 'bench_export-' || gen_random_uuid(), 1, \
                        'BenchFiller', e.schema_version, e.data, e.metadata, e.recorded_at, \
                        e.hash, e.hash_rule \
                 FROM (SELECT max(position) AS p FROM events) h, \
                      generate_series(1, $1::bigint) AS n \
                 JOIN events e ON e.position = 1 + (n - 1) % (SELECT count(*) FROM events)",
                &[&missing],
            )
            .await
            .context("Failed to fill the log for the export")?;
        tx.commit().await?;
        anyhow::ensure!(inserted > 0, "the log could not be filled for the export");
        count += i64::try_from(inserted).unwrap_or(i64::MAX);
    }
    drop(client);

    let http = reqwest::Client::builder()
        .build()
        .context("Failed to build the HTTP client")?;
    let rss_before = proc_status_kib("VmRSS");
    // Writing 5 to clear_refs resets the peak resident size (Linux 4.0 and later).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let started = Instant::now();
    let mut response = http
        .get(format!("{base_url}/v1/events/export"))
        .bearer_auth(token)
        .send()
        .await
        .context("Failed to start the export")?;
    anyhow::ensure!(
        response.status().is_success(),
        "the export answered {}",
        response.status()
    );
    let (mut events, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = response.chunk().await.context("The export broke off")? {
        bytes += chunk.len() as u64;
        events += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let took = started.elapsed();
    let peak_growth = match (reset, rss_before, proc_status_kib("VmHWM")) {
        (true, Some(before), Some(peak)) => Some(peak.saturating_sub(before) * 1024),
        _ => None,
    };
    Ok(ExportResult {
        events,
        bytes,
        took,
        peak_growth,
    })
}

/// A `kB` line of /proc/self/status.
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .trim_start_matches(':')
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

fn print_mcp(alone: &[mcp::ToolLatency], loaded: &[mcp::ToolLatency], clients: u32) {
    println!(
        "{:<LABEL$}{:>9}{:>8}{:>8}{:>9}{:>8}{:>8}",
        "MCP tool over HTTP", "1 client", "p50 ms", "p95 ms", "clients", "p50 ms", "p95 ms"
    );
    for (one, many) in alone.iter().zip(loaded) {
        let refusals = [one, many]
            .iter()
            .filter_map(|t| {
                t.first_refusal
                    .as_ref()
                    .map(|why| format!("{} refused, first: {why}", t.refused))
            })
            .collect::<Vec<_>>()
            .join("; ");
        println!(
            "  {:<width$}{:>9}{:>8}{:>8}{:>9}{:>8}{:>8}{}",
            one.tool,
            one.calls,
            ms(one.p50_ms),
            ms(one.p95_ms),
            clients,
            ms(many.p50_ms),
            ms(many.p95_ms),
            if refusals.is_empty() {
                String::new()
            } else {
                format!("  {refusals}")
            },
            width = LABEL - 2
        );
    }
}

fn print_export(export: &ExportResult) {
    let seconds = export.took.as_secs_f64().max(f64::EPSILON);
    println!(
        "{:<LABEL$}{:>9}{:>8}{:>8}{:>10}",
        format!("export, {} events", export.events),
        "events/s",
        "MB/s",
        "seconds",
        "peak MiB"
    );
    println!(
        "  {:<width$}{:>9.0}{:>8.1}{:>8.2}{:>10}",
        "GET /v1/events/export",
        export.events as f64 / seconds,
        export.bytes as f64 / 1e6 / seconds,
        seconds,
        export.peak_growth.map_or("?".to_owned(), |b| format!(
            "+{:.1}",
            b as f64 / f64::from(1u32 << 20)
        )),
        width = LABEL - 2
    );
}

/// Reads the whole log in the rebuild's batches, decoding each event.
async fn read_log(client: &impl deadpool_postgres::GenericClient) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let (events, unreadable) = keyledger_events::store::read_all_until_unreadable(
            client,
            after,
            keyledger_projections::rebuild::BATCH,
        )
        .await
        .context("Failed to read the log")?;
        after = match (events.last(), unreadable) {
            (Some(last), _) => last.position,
            (None, Some(unreadable)) => unreadable.position,
            (None, None) => return Ok(()),
        };
    }
}

// ---------------------------------------------------------------------------------------------
// The report

struct Report<'a> {
    args: &'a BenchArgs,
    server_version: &'a str,
    service: &'a str,
    baseline: &'a Baseline,
    /// A validation's writes replayed by pgbench, without HTTP or the service.
    ceiling: &'a [(u32, f64)],
    issue: &'a PhaseResult,
    validate: &'a PhaseResult,
    /// Validation with the key as `Authorization: License <key>`.
    validate_header: &'a PhaseResult,
    /// The validate phase against a service with the request log off.
    unlogged: Option<&'a PhaseResult>,
    /// The projection lag during each phase of the in-process service.
    lag: [(&'static str, Option<LagResult>); 3],
    /// The log replayed into each asynchronous projection (in-process runs).
    replay: Option<&'a ReplayResult>,
    /// The log exported over HTTP (in-process runs).
    export: Option<&'a ExportResult>,
    /// The validation view loaded from the bench's database (in-process runs).
    view: Option<&'a ViewResult>,
    /// Each MCP tool's latency over HTTP: one client alone, and the bench's clients at once.
    mcp: Option<(&'a [mcp::ToolLatency], &'a [mcp::ToolLatency])>,
}

/// The validation view as a node loads it at start.
struct ViewResult {
    licenses: usize,
    bytes: usize,
    load: Duration,
}

impl ViewResult {
    fn bytes_per_license(&self) -> f64 {
        if self.licenses == 0 {
            0.0
        } else {
            self.bytes as f64 / self.licenses as f64
        }
    }
}

/// Loads the validation view from the bench's database, as a command node does at start.
async fn measure_view(database_url: &str) -> anyhow::Result<ViewResult> {
    let pool = keyledger_events::db::pool(database_url, 1)
        .context("Failed to connect to load the validation view")?;
    let started = Instant::now();
    let view = keyledger_projections::license::view::ValidationView::load(&pool)
        .await
        .context("Failed to load the validation view")?;
    Ok(ViewResult {
        licenses: view.len(),
        bytes: view.memory_bytes(),
        load: started.elapsed(),
    })
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
        "  {label:<width$}{:>9.1}{:>8}{:>8}{:>8}{:>8}{:>7}  {} × pgbench {against}",
        phase.per_second(),
        ms(phase.percentile_ms(50.0)),
        ms(phase.percentile_ms(95.0)),
        ms(phase.percentile_ms(99.0)),
        phase.errors,
        phase
            .commands_per_batch
            .map_or_else(|| "-".to_owned(), |b| format!("{b:.1}")),
        ratio(phase.per_second(), baseline),
        width = LABEL - 2,
    )
}

/// The design's bound on the projection lag's p99.
const LAG_TARGET_MS: f64 = 50.0;
/// The design's floor for replay speed.
const REPLAY_TARGET_PER_SECOND: f64 = 100_000.0;

fn lag_header() -> String {
    format!(
        "{:<LABEL$}{:>9}{:>8}{:>8}{:>8}{:>8}",
        "projection lag", "samples", "p50 ms", "p99 ms", "max ms", "behind"
    )
}

fn replay_header(events: i64) -> String {
    format!(
        "{:<LABEL$}{:>9}{:>8}",
        format!("replay, {events} events"),
        "events/s",
        "seconds"
    )
}

fn lag_line(label: &str, lag: &LagResult) -> String {
    let p99 = percentile_ms(&lag.lags, 99.0);
    format!(
        "  {label:<width$}{:>9}{:>8}{:>8}{:>8}{:>8}  {}",
        lag.lags.len(),
        ms(percentile_ms(&lag.lags, 50.0)),
        ms(p99),
        ms(percentile_ms(&lag.lags, 100.0)),
        lag.max_behind,
        match p99 {
            Some(p99) if p99 < LAG_TARGET_MS => "p99 under the 50 ms target",
            Some(_) => "p99 OVER the 50 ms target",
            None => "no samples",
        },
        width = LABEL - 2,
    )
}

fn replay_line(label: &str, replay: &ReplayResult, took: Duration) -> String {
    format!(
        "  {label:<width$}{:>9.0}{:>8.2}",
        replay.per_second(took),
        took.as_secs_f64(),
        width = LABEL - 2,
    )
}

fn print_lag(lag: &[(&'static str, Option<LagResult>)]) {
    if lag.iter().all(|(_, result)| result.is_none()) {
        return;
    }
    println!("{}", lag_header());
    for (label, result) in lag {
        if let Some(result) = result {
            println!("{}", lag_line(label, result));
        }
    }
}

fn print_replay(replay: &ReplayResult) {
    println!("{}", replay_header(replay.events));
    println!("{}", replay_line("read the log only", replay, replay.read));
    for (name, took) in &replay.rebuilds {
        println!("{}", replay_line(&format!("rebuild {name}"), replay, *took));
    }
    let total = replay.total();
    println!(
        "{}  {}",
        replay_line("all of them, in turn", replay, total),
        if replay.per_second(total) >= REPLAY_TARGET_PER_SECOND {
            "at or over the 100k events/s target"
        } else {
            "UNDER the 100k events/s target"
        }
    );
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
        "{:<LABEL$}{:>9}  ratio",
        "a validation's writes alone", "valid./s"
    );
    for (batch, per_second) in report.ceiling {
        println!(
            "  {:<width$}{:>9.1}  {} × pgbench lookup",
            format!("{batch} a transaction"),
            per_second,
            ratio(*per_second, baseline.lookup_tps),
            width = LABEL - 2
        );
    }
    println!(
        "{:<LABEL$}{:>9}{:>8}{:>8}{:>8}{:>8}{:>7}  ratio",
        "service (HTTP)", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "batch"
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
    if let Some(unlogged) = report.unlogged {
        let (on, off) = (report.validate.per_second(), unlogged.per_second());
        if off > 0.0 {
            println!(
                "  {:<width$}{:>8.1} %  validations/s with it on against off (target: under 15 %)",
                "request log's cost",
                (1.0 - on / off) * 100.0,
                width = LABEL - 2
            );
        }
    }
    print_lag(&report.lag);
    if let Some(replay) = report.replay {
        print_replay(replay);
    }
    if let Some(export) = report.export {
        print_export(export);
    }
    if let Some((alone, loaded)) = report.mcp {
        print_mcp(alone, loaded, report.args.clients);
    }
    if let Some(view) = report.view {
        println!(
            "{:<LABEL$}{:>9}{:>8}{:>8}",
            "validation view", "licenses", "B each", "load ms"
        );
        println!(
            "  {:<width$}{:>9}{:>8.0}{:>8.1}  ≈ {:.1} GiB at 10 M licenses",
            "in memory, per node",
            view.licenses,
            view.bytes_per_license(),
            view.load.as_secs_f64() * 1000.0,
            view.bytes_per_license() * 10e6 / f64::from(1u32 << 30),
            width = LABEL - 2
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
    println!(
        "a validation's writes alone: what the service writes for each validation (its usage \
         event and its request record, inserted with the append writer's statements under the \
         append lock, the day's VALID count, the license_usage and api_requests rows the \
         projectors add, each projection in a transaction with its checkpoint), N validations \
         a transaction, by pgbench with {CEILING_CLIENTS} clients in a database of its own: \
         what this PostgreSQL can take before HTTP, the service or the load generator cost \
         anything"
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
    if report.lag.iter().any(|(_, result)| result.is_some()) {
        println!(
            "projection lag: every {} ms of a phase the head of the log is read; a sample's lag \
             is the time until the checkpoint of every asynchronous projection ({}) reached \
             that head, read every {} ms; behind: the most events from the lowest checkpoint to \
             the head in one sample; both read on a thread and connections of the bench's own",
            LAG_SAMPLE_INTERVAL.as_millis(),
            keyledger_projections::asynchronous()
                .iter()
                .map(|projection| projection.name())
                .collect::<Vec<_>>()
                .join(", "),
            CHECKPOINT_POLL_INTERVAL.as_millis(),
        );
    }
    for (label, result) in &report.lag {
        if let Some(result) = result.as_ref().filter(|result| result.late > 0) {
            println!(
                "projection lag, {label}: {} samples not caught up with {} s after the phase, \
                 counted at the time waited",
                result.late,
                LAG_GRACE.as_secs()
            );
        }
    }
    if report.export.is_some() {
        println!(
            "export: the log topped up to {EXPORT_EVENTS} events with copies of its own under a \
             type no projection reads, then streamed from the in-process service over HTTP and \
             counted; peak MiB: the bench process's resident high-water mark during the export \
             (reset before it) over its resident size before it, service and client together"
        );
    }
    if report.replay.is_some() {
        println!(
            "replay: after the phases, with the service idle, each asynchronous projection rebuilt \
             from position 0 into shadow tables and swapped in (`keyledger projections rebuild`); \
             events/s: the events in the log over the seconds it took (a rebuild reads only its \
             projection's event types); read the log only: every event, {} a batch, read and \
             decoded, nothing applied",
            keyledger_projections::rebuild::BATCH
        );
    }
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

    /// Each column after the label, `widths` wide, ends on a figure in `line` as in `header`.
    fn assert_columns_line_up(header: &str, line: &str, widths: &[usize]) {
        let mut end = LABEL;
        for width in widths {
            end += width;
            for text in [header, line] {
                let column = text.get(end - width..end).unwrap_or_default();
                assert!(
                    column.starts_with(' ') && !column.ends_with(' '),
                    "the column ending at {end} does not line up:\n{header}\n{line}"
                );
            }
        }
    }

    #[test]
    fn lag_and_replay_lines_line_up_with_their_headers() {
        let lag = LagResult {
            lags: (1..=200).map(Duration::from_millis).collect(),
            late: 0,
            max_behind: 42,
        };
        let line = lag_line("validate, License header", &lag);
        assert_columns_line_up(&lag_header(), &line, &[9, 8, 8, 8, 8]);
        assert!(line.contains(" 100.00 "), "{line}");
        assert!(line.ends_with("OVER the 50 ms target"), "{line}");

        let replay = ReplayResult {
            events: 150_000,
            read: Duration::from_millis(500),
            rebuilds: vec![
                ("licenses", Duration::from_secs(1)),
                ("api_requests", Duration::from_secs(2)),
            ],
        };
        assert_eq!(replay.total(), Duration::from_secs(3));
        assert!((replay.per_second(replay.read) - 300_000.0).abs() < 1e-6);
        let line = replay_line("rebuild licenses", &replay, Duration::from_secs(1));
        assert_columns_line_up(&replay_header(replay.events), &line, &[9, 8]);
        assert!(line.ends_with(" 150000    1.00"), "{line}");
    }
}
