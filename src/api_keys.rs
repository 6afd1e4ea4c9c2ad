//! `keyledger api-keys create|revoke`: API keys for services from the command line, through
//! the same aggregate and append path as the API. The new key is printed once, on standard
//! output, alone; what else is worth knowing goes to standard error.

use clap::{Args, Subcommand};
use keyledger_command::api_key::aggregate::ApiKeyError;
use keyledger_command::api_key::{create_api_key, parse_name, parse_scopes, revoke_api_key};
use keyledger_command::execute::CommandError;
use keyledger_events::{Metadata, Notifier, PgEventStore, WriterConfig, db};
use uuid::Uuid;

use crate::config::DatabaseArgs;

#[derive(Debug, Subcommand)]
pub enum ApiKeysCommand {
    /// Create a key and print it (it is shown this once; only its hash is kept).
    Create(CreateArgs),
    /// Revoke a key: it authenticates nothing any more.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// What the key is for (1 to 100 characters).
    #[arg(long)]
    pub name: String,
    /// A permission the key grants (`licenses:write`, `requests:write`, …); repeat for more.
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The key's id (as `GET /v1/api-keys` lists it).
    #[arg(long)]
    pub id: Uuid,
}

fn cli_metadata() -> Metadata {
    Metadata {
        correlation_id: Some(format!("cli-{}", Uuid::new_v4())),
        causation_id: None,
        actor: Some("system".into()),
        idempotency_key: None,
    }
}

pub async fn run(command: ApiKeysCommand) -> anyhow::Result<()> {
    match command {
        ApiKeysCommand::Create(args) => {
            // Bad input is refused before the database is touched.
            let name = parse_name(&args.name).map_err(|e| anyhow::anyhow!("--name {e}"))?;
            let scopes = parse_scopes(&args.scopes).map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
            let created = with_store(&args.database, async |store| {
                create_api_key(store, name, scopes, &cli_metadata(), chrono::Utc::now())
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot create the API key: {e:?}"))
            })
            .await?;
            let scopes: Vec<&str> = created.scopes.iter().map(|p| p.as_str()).collect();
            eprintln!(
                "API key {} ({}…) created with {}; it is shown this once",
                created.id,
                created.prefix,
                scopes.join(", ")
            );
            println!("{}", created.key.expose());
            Ok(())
        }
        ApiKeysCommand::Revoke(args) => {
            with_store(&args.database, async |store| {
                revoke_api_key(store, args.id, &cli_metadata(), chrono::Utc::now())
                    .await
                    .map_err(|e| match e {
                        CommandError::Domain(ApiKeyError::NotFound) => {
                            anyhow::anyhow!("no API key has the id {}", args.id)
                        }
                        other => anyhow::anyhow!("cannot revoke the API key: {other:?}"),
                    })
            })
            .await?;
            println!("{} revoked", args.id);
            Ok(())
        }
    }
}

/// Runs `work` with an event store on the migrated database, then stops its writer.
async fn with_store<T>(
    database: &DatabaseArgs,
    work: impl AsyncFnOnce(&PgEventStore) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    db::ensure_database(&database.database_url).await?;
    db::migrate(&database.database_url).await?;
    let pool = db::pool(&database.database_url, 2)?;
    let (store, writer) = PgEventStore::start(
        pool,
        WriterConfig::default(),
        keyledger_projections::inline(),
        None,
        Notifier::default(),
    );
    let result = work(&store).await;
    // Every append was answered: the writer has nothing left to do.
    writer.abort();
    result
}
