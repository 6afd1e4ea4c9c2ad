//! Running pgbench against the bench's PostgreSQL: connections, scratch databases and
//! scripts, and reading pgbench's figures.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};
use uuid::Uuid;

use super::BenchArgs;

/// pgbench worker threads (`-j`), capped at the client count.
pub(super) const PGBENCH_THREADS: u32 = 2;

pub(super) async fn connect(config: &Config) -> anyhow::Result<(Client, JoinHandle<()>)> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("Failed to connect to PostgreSQL")?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, driver))
}

pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Drops and re-creates `database`; returns the server's version.
pub(super) async fn recreate_database(config: &Config, database: &str) -> anyhow::Result<String> {
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

/// Runs one pgbench script; returns its transactions per second and failed transactions.
pub(super) async fn pgbench(
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
pub(super) fn parse_tps(output: &str) -> Option<f64> {
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
pub(super) fn parse_failed(output: &str) -> Option<u64> {
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
pub(super) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(super) fn create() -> anyhow::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!(
            "keyledger-bench-{}-{}",
            std::process::id(),
            Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("Failed to create {}", path.display()))?;
        Ok(ScratchDir(path))
    }

    pub(super) fn write(&self, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::write(&path, contents)
            .with_context(|| format!("Failed to write {}", path.display()))?;
        Ok(path)
    }

    pub(super) fn remove(self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            eprintln!("bench: could not remove {}: {error}", self.0.display());
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
}
