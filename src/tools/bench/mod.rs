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

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::task::JoinHandle;
use tokio_postgres::Config;
use uuid::Uuid;

mod baseline;
mod ceiling;
mod export;
mod http;
mod lag;
mod mcp;
mod pgbench;
mod replay;
mod report;
mod view;

use crate::app::Application;
use crate::config::ServeArgs;
use baseline::pgbench_baseline;
use ceiling::measure_ceiling;
use export::{EXPORT_EVENTS, measure_export};
use http::{KEY_POOL, Target, Workload, issue_key_pool, run_phase};
use lag::{LagProbe, with_lag};
use pgbench::recreate_database;
use replay::measure_replay;
use report::{Report, print_report};
use view::measure_view;

pub const DEFAULT_BENCH_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/keyledger_bench";

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
