//! The operator commands behind `src/main.rs`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyledger_events::verify::{self, Head};
use keyledger_events::{Notifier, db};

use crate::app::Application;
use crate::bench::BenchArgs;
use crate::config::{DatabaseArgs, ServeArgs};
use crate::telemetry;

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
    /// Recompute the hash chain and report the first altered position.
    Verify {
        #[command(flatten)]
        database: DatabaseArgs,
        /// An auditor's copy of a head, `<position>:<hex hash>`, to detect a cut-off tail.
        #[arg(long)]
        expect_head: Option<Head>,
    },
    /// Import the legacy service's SQLite database (idempotent; `--dry-run` writes nothing).
    ImportLegacy(crate::import::ImportArgs),
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
    /// Throughput of the service over HTTP next to pgbench on the same PostgreSQL (drops and
    /// re-creates --database-url first).
    Bench(BenchArgs),
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
        "info",
        telemetry::json_requested(),
        std::io::stderr,
    ));
    match cli.command {
        Command::Serve(args) => {
            let app = Application::build(*args, keyledger_command::system_clock()).await?;
            app.run_until_stopped().await
        }
        Command::Bench(args) => crate::bench::run(args).await,
        Command::ImportLegacy(args) => crate::import::run(args).await,
        Command::Users { command } => crate::users::run(command).await,
        Command::ApiKeys { command } => crate::api_keys::run(command).await,
        Command::Permissions => {
            print!("{}", keyledger_api::permission::markdown_table());
            Ok(())
        }
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
        Command::Verify {
            database,
            expect_head,
        } => {
            let pool = prepared_pool(&database).await?;
            let client = pool.get().await.context("Failed to connect")?;
            let report = verify::verify(&client, expect_head.as_ref())
                .await
                .context("Failed to read the event log")?;
            match (&report.finding, &report.head) {
                (None, Some(head)) => {
                    println!(
                        "ok: {} events, the hash chain holds; head {head}",
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
                for row in client
                    .query(
                        "SELECT name, position, version FROM checkpoints ORDER BY name",
                        &[],
                    )
                    .await?
                {
                    let (name, position, version): (String, i64, i32) =
                        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
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

async fn prepared_pool(database: &DatabaseArgs) -> anyhow::Result<deadpool_postgres::Pool> {
    db::ensure_database(&database.database_url).await?;
    db::migrate(&database.database_url).await?;
    db::pool(&database.database_url, 4)
}
