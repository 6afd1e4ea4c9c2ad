//! `keyledger api-keys create|revoke`: API keys for services from the command line, through
//! the same aggregate and append path as the API. The new key is printed once, on standard
//! output, alone; what else is worth knowing goes to standard error.

use clap::{Args, Subcommand};
use keyledger_command::api_key::aggregate::ApiKeyError;
use keyledger_command::api_key::{create_api_key, parse_name, parse_scopes, revoke_api_key};
use keyledger_command::execute::CommandError;

use uuid::Uuid;

use crate::cli::{cli_metadata, with_store};
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

pub async fn run(command: ApiKeysCommand) -> anyhow::Result<()> {
    match command {
        ApiKeysCommand::Create(args) => {
            // Bad input is refused before the database is touched.
            let name = parse_name(&args.name).map_err(|e| anyhow::anyhow!("--name {e}"))?;
            let scopes = parse_scopes(&args.scopes).map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
            let created = with_store(&args.database.database_url, 2, async |store| {
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
            with_store(&args.database.database_url, 2, async |store| {
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
