//! The operator commands behind `src/main.rs`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyledger_events::audit::{KeySet, SignedCheckpoint};
use keyledger_events::verify::{self, Head};
use keyledger_events::{Notifier, db};

use crate::app::Application;
use crate::config::{DatabaseArgs, ServeArgs};
use crate::telemetry;
use crate::tools::bench::BenchArgs;

#[derive(Debug, Parser)]
#[command(
    name = "keyledger",
    version,
    about = "Event-sourced license keys, sessions and request logs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (migrations, API, writer, projectors, relay).
    Serve(Box<ServeArgs>),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Rebuild every projection from position 0 (the service may keep running).
    Replay(DatabaseArgs),
    /// Recompute the hash chain and report the first altered position: of the database's log,
    /// or of an export (`--file`, no database needed).
    Verify {
        #[command(flatten)]
        database: DatabaseArgs,
        /// An auditor's copy of a head, `<position>:<hex hash>`, to detect a cut-off tail.
        #[arg(long)]
        expect_head: Option<Head>,
        /// Verify this export (`keyledger export`, `GET /v1/events/export`, from position 1)
        /// instead of the database's log.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// The published signing keys (`GET /.well-known/keyledger-keys.json`): every signed
        /// checkpoint in the log is checked against them and against the chain.
        #[arg(long)]
        keys: Option<std::path::PathBuf>,
        /// A signed checkpoint an auditor kept (`GET /v1/checkpoints/latest`, or a message of
        /// the `keyledger.checkpoints` subject): checked with `--keys`, and the log must reach
        /// it, so a cut-off tail is detected.
        #[arg(long, requires = "keys", conflicts_with = "expect_head")]
        expect_checkpoint: Option<std::path::PathBuf>,
    },
    /// Write the log (or the part after `--after`, up to `--until`) as NDJSON, one event a
    /// line with every field the hash chain covers.
    Export {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The file to write.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Export the events after this position (default: from the first).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Up to and including this position (default: the head when the export starts).
        #[arg(long)]
        until: Option<i64>,
    },
    /// Import the legacy service's SQLite database (idempotent; `--dry-run` writes nothing).
    ImportLegacy(crate::tools::import::ImportArgs),
    /// Projection checkpoints and rebuilds.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Operators: `users create --email … --role admin` (password on stdin or prompted),
    /// `users disable --email …`.
    Users {
        #[command(subcommand)]
        command: crate::users::UsersCommand,
    },
    /// API keys for services: `api-keys create --name ci --scope licenses:write` (prints the
    /// key, once), `api-keys revoke --id …`.
    ApiKeys {
        #[command(subcommand)]
        command: crate::api_keys::ApiKeysCommand,
    },
    /// Print which permission each route needs (the README's table).
    Permissions,
    /// Print the OpenAPI 3.1 description of the HTTP API (what `GET /openapi.json` serves).
    Openapi,
    /// The MCP tools over stdio, for a local agent: forwards to a running service's `/mcp`
    /// with the agent's token.
    Mcp {
        /// The service's base URL.
        #[arg(long, env = "KEYLEDGER_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A bearer token or API key (`klk_…`) the tools act as.
        #[arg(long, env = "KEYLEDGER_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// License certificates: `certificate verify FILE --keys keys.json` checks one offline.
    Certificate {
        #[command(subcommand)]
        command: CertificateCommand,
    },
    /// Throughput of the service over HTTP next to pgbench on the same PostgreSQL (drops and
    /// re-creates --database-url first).
    Bench(BenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Check a certificate's signature with the published keys (no service, no database) and
    /// print what it states; fails for a bad signature or a certificate past `valid_until`.
    Verify {
        /// The certificate (the `certificate` of `POST /v1/licenses/{id}/certificate`).
        file: std::path::PathBuf,
        /// The published keys (`GET /.well-known/keyledger-keys.json`).
        #[arg(long)]
        keys: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's checkpoint and lag.
    Status(DatabaseArgs),
    /// Rebuild one projection from position 0.
    Rebuild {
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init_subscriber(telemetry::get_subscriber(
        telemetry::DEFAULT_FILTER,
        telemetry::json_requested(),
        std::io::stderr,
    ));
    match cli.command {
        Command::Serve(args) => {
            let app = Application::build(*args, keyledger_command::system_clock()).await?;
            app.run_until_stopped().await
        }
        Command::Bench(args) => crate::tools::bench::run(args).await,
        Command::ImportLegacy(args) => crate::tools::import::run(args).await,
        Command::Users { command } => crate::users::run(command).await,
        Command::ApiKeys { command } => crate::api_keys::run(command).await,
        Command::Certificate {
            command: CertificateCommand::Verify { file, keys },
        } => {
            let keys: KeySet = read_json(&keys, "a JWK set of signing keys")?;
            let certificate = std::fs::read_to_string(&file)
                .with_context(|| format!("Failed to read {}", file.display()))?;
            match keyledger_events::audit::verify_certificate(&certificate, &keys) {
                Ok(claims) if claims.valid_until > chrono::Utc::now() => {
                    println!(
                        "ok: certificate {} of license {} (tier {}, entitlements {}), {}, valid until {}",
                        claims.certificate_id,
                        claims.license_id,
                        claims.tier,
                        claims.entitlements.join(", "),
                        claims
                            .installation_id
                            .map_or("any installation".to_owned(), |id| format!(
                                "installation {id}"
                            )),
                        claims.valid_until.to_rfc3339(),
                    );
                    Ok(())
                }
                Ok(claims) => {
                    println!(
                        "FAILED: certificate {} of license {} expired at {}",
                        claims.certificate_id,
                        claims.license_id,
                        claims.valid_until.to_rfc3339()
                    );
                    std::process::exit(1);
                }
                Err(error) => {
                    println!("FAILED: {error}");
                    std::process::exit(1);
                }
            }
        }
        Command::Mcp { url, token } => crate::mcp::bridge::run(&url, &token).await,
        Command::Openapi => write_out(&format!("{}\n", crate::openapi::json())),
        Command::Permissions => write_out(&keyledger_api::permission::markdown_table()),
        Command::Migrate(database) => {
            db::ensure_database(&database.database_url).await?;
            db::migrate(&database.database_url).await
        }
        Command::Replay(database) => {
            let pool = prepared_pool(&database).await?;
            let notifier = Notifier::default();
            for projection in keyledger_projections::inline() {
                let position = keyledger_projections::rebuild::rebuild(
                    &pool,
                    projection.as_ref(),
                    true,
                    &notifier,
                )
                .await?;
                println!("{:<24} rebuilt to position {position}", projection.name());
            }
            for projection in keyledger_projections::asynchronous() {
                let position = keyledger_projections::rebuild::rebuild(
                    &pool,
                    projection.as_ref(),
                    false,
                    &notifier,
                )
                .await?;
                println!("{:<24} rebuilt to position {position}", projection.name());
            }
            Ok(())
        }
        Command::Export {
            database,
            out,
            after,
            until,
        } => export(&database, &out, after, until).await,
        Command::Verify {
            database,
            expect_head,
            file,
            keys,
            expect_checkpoint,
        } => {
            let keys: Option<KeySet> = keys
                .map(|path| read_json(&path, "a JWK set of signing keys"))
                .transpose()?;
            let expect_head = match (&expect_checkpoint, &keys) {
                (Some(path), Some(keys)) => {
                    let signed: SignedCheckpoint = read_json(path, "a signed checkpoint")?;
                    if let Err(error) = signed.verify(keys) {
                        println!("FAILED: the expected checkpoint does not verify: {error}");
                        std::process::exit(1);
                    }
                    Some(Head {
                        position: signed.checkpoint.position,
                        hash: hex::decode(&signed.checkpoint.hash)
                            .context("The expected checkpoint's hash is not hex")?,
                    })
                }
                _ => expect_head,
            };
            let mut chain = verify::Chain::new(expect_head.as_ref());
            if let Some(keys) = &keys {
                chain = chain.with_keys(keys);
            }
            let report = match file {
                Some(file) => {
                    let reader = std::fs::File::open(&file)
                        .with_context(|| format!("Failed to open {}", file.display()))?;
                    verify::verify_export(std::io::BufReader::new(reader), chain)
                        .with_context(|| format!("Failed to read {}", file.display()))?
                }
                None => {
                    let pool = prepared_pool(&database).await?;
                    let client = pool.get().await.context("Failed to connect")?;
                    verify::verify(&client, chain)
                        .await
                        .context("Failed to read the event log")?
                }
            };
            let checkpoints = match report.checkpoints {
                Some(n) => format!(", signed checkpoints verified: {n}"),
                None => String::new(),
            };
            match (&report.finding, &report.head) {
                (None, Some(head)) => {
                    println!(
                        "ok: {} events, the hash chain holds{checkpoints}; head {head}",
                        report.events
                    );
                    Ok(())
                }
                (None, None) => {
                    println!("ok: the event log is empty");
                    Ok(())
                }
                (Some(finding), _) => {
                    println!("FAILED after {} good events: {finding}", report.events);
                    std::process::exit(1);
                }
            }
        }
        Command::Projections { command } => match command {
            ProjectionsCommand::Status(database) => {
                let pool = prepared_pool(&database).await?;
                let client = pool.get().await.context("Failed to connect")?;
                let head = keyledger_events::store::head_on(&client).await?;
                println!("head position {head}");
                let inline = keyledger_projections::inline();
                let inline: Vec<&str> = inline.iter().map(|p| p.name()).collect();
                for row in client
                    .query(
                        "SELECT name, position, version FROM checkpoints ORDER BY name",
                        &[],
                    )
                    .await?
                {
                    let (name, position, version): (String, i64, i32) =
                        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                    // An inline projection is applied in every append's transaction: it is
                    // never behind, and its checkpoint moves only when it is rebuilt.
                    if inline.contains(&name.as_str()) {
                        println!("{name:<28} v{version:<3} inline: applied with every append");
                        continue;
                    }
                    println!(
                        "{name:<28} v{version:<3} position {position:<10} lag {}",
                        head - position
                    );
                }
                Ok(())
            }
            ProjectionsCommand::Rebuild { name, database } => {
                let pool = prepared_pool(&database).await?;
                let notifier = Notifier::default();
                let inline = keyledger_projections::inline();
                let found = inline
                    .iter()
                    .map(|p| (p, true))
                    .chain(
                        keyledger_projections::asynchronous()
                            .iter()
                            .map(|p| (p, false))
                            .collect::<Vec<_>>(),
                    )
                    .find(|(p, _)| p.name() == name)
                    .map(|(p, is_inline)| (p.clone(), is_inline));
                let Some((projection, is_inline)) = found else {
                    anyhow::bail!("no projection is named {name}");
                };
                let position = keyledger_projections::rebuild::rebuild(
                    &pool,
                    projection.as_ref(),
                    is_inline,
                    &notifier,
                )
                .await?;
                println!("{name} rebuilt to position {position}");
                Ok(())
            }
        },
    }
}

/// `keyledger export`: pages of the log written to `out` as they are read.
async fn export(
    database: &DatabaseArgs,
    out: &std::path::Path,
    after: i64,
    until: Option<i64>,
) -> anyhow::Result<()> {
    use std::io::Write;

    anyhow::ensure!(after >= 0, "--after must be 0 or more");
    if let Some(until) = until {
        anyhow::ensure!(until >= after, "--until must not be before --after");
    }
    let pool = prepared_pool(database).await?;
    let client = pool.get().await.context("Failed to connect")?;
    let until = match until {
        Some(until) => until,
        None => keyledger_events::store::head_on(&client).await?,
    };
    let file = std::fs::File::create(out)
        .with_context(|| format!("Failed to create {}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let (mut position, mut events) = (after, 0u64);
    while position < until {
        let page = verify::read_stored(&client, position, until, 5_000)
            .await
            .context("Failed to read the event log")?;
        let Some(last) = page.last() else {
            break;
        };
        position = last.position;
        for event in &page {
            serde_json::to_writer(&mut writer, event)?;
            writer.write_all(b"\n")?;
        }
        events += page.len() as u64;
    }
    writer
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|file| file.sync_all())
        .with_context(|| format!("Failed to write {}", out.display()))?;
    println!(
        "exported {events} events after position {after} up to {position} to {}",
        out.display()
    );
    Ok(())
}

/// Reads a JSON file an auditor passes in.
fn read_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    what: &str,
) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("Failed to read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} does not hold {what}", path.display()))
}

async fn prepared_pool(database: &DatabaseArgs) -> anyhow::Result<deadpool_postgres::Pool> {
    db::ensure_database(&database.database_url).await?;
    db::migrate(&database.database_url).await?;
    db::pool(&database.database_url, 4)
}

/// Writes a document to stdout; a reader that stops early (`| head`) ends it quietly.
fn write_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// The metadata of the events an operator command appends: actor `system`, a `cli-` correlation
/// id of its own.
pub(crate) fn cli_metadata() -> keyledger_events::Metadata {
    keyledger_events::Metadata {
        correlation_id: Some(format!("cli-{}", uuid::Uuid::new_v4())),
        causation_id: None,
        actor: Some("system".into()),
        idempotency_key: None,
    }
}

/// Runs `work` with an event store on the database at `database_url` (created and migrated if
/// needed), with `connections` pooled connections, then stops its writer.
pub(crate) async fn with_store<T>(
    database_url: &str,
    connections: usize,
    work: impl AsyncFnOnce(&keyledger_events::PgEventStore) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    db::ensure_database(database_url).await?;
    db::migrate(database_url).await?;
    let pool = db::pool(database_url, connections)?;
    let (store, writer) = keyledger_events::PgEventStore::start(
        pool,
        keyledger_events::WriterConfig::default(),
        keyledger_projections::inline(),
        None,
        Notifier::default(),
    );
    let result = work(&store).await;
    // Every append was answered: the writer has nothing left to do.
    writer.abort();
    result
}
