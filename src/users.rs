//! `keyledger users create|disable`: manage operators from the command line, through the same
//! aggregate and append path as the API (the first admin is created this way).

use std::io::{BufRead, IsTerminal};

use anyhow::Context;
use clap::{Args, Subcommand};
use keyledger_api::Role;
use keyledger_command::user::{CreateUserError, create_user, disable_user, unless_last_admin};

use crate::cli::{cli_metadata, with_store};
use crate::config::DatabaseArgs;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is read from standard input (one line) or, on a terminal,
    /// prompted for without echo. Prints the new user's id.
    Create(CreateArgs),
    /// Disable a user: no more logins, refreshes or access tokens (their logins are revoked).
    Disable(DisableArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[arg(long)]
    pub email: String,
    /// admin, operator, auditor or viewer.
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
}

#[derive(Debug, Args)]
pub struct DisableArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[arg(long)]
    pub email: String,
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| "one of admin, operator, auditor, viewer".to_owned())
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first =
            rpassword::prompt_password("Password: ").context("Failed to read the password")?;
        let again = rpassword::prompt_password("Password again: ")
            .context("Failed to read the password")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("Failed to read the password from standard input")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

pub async fn run(command: UsersCommand) -> anyhow::Result<()> {
    let database_url = match &command {
        UsersCommand::Create(args) => &args.database,
        UsersCommand::Disable(args) => &args.database,
    }
    .database_url
    .clone();
    with_store(&database_url, 2, async |store| {
        let pool = store.pool();
        let client = pool.get().await.context("Failed to connect")?;
        match command {
            UsersCommand::Create(args) => {
                let password = read_password()?;
                let email = args.email.trim().to_lowercase();
                let taken = keyledger_projections::user::user_by_email(&client, &email)
                    .await?
                    .is_some();
                drop(client);
                let user_id = create_user(
                    store,
                    &args.email,
                    password,
                    args.role,
                    taken,
                    &cli_metadata(),
                    chrono::Utc::now(),
                )
                .await
                .map_err(|e| match e {
                    CreateUserError::Store(cause) => {
                        anyhow::anyhow!("cannot create the user: {cause}")
                    }
                    other => anyhow::anyhow!("{other}"),
                })?;
                println!("{user_id}");
                Ok(())
            }
            UsersCommand::Disable(args) => {
                let email = args.email.trim().to_lowercase();
                let user = keyledger_projections::user::user_by_email(&client, &email)
                    .await?
                    .with_context(|| format!("no user has the email {email}"))?;
                drop(client);
                // The last enabled admin stays, as over the API: create another admin first.
                unless_last_admin(pool, user.user_id, async || {
                    disable_user(
                        store,
                        pool,
                        user.user_id,
                        &cli_metadata(),
                        chrono::Utc::now(),
                    )
                    .await
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot disable the user: {e}"))?;
                println!("{} disabled", user.user_id);
                Ok(())
            }
        }
    })
    .await
}
