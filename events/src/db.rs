//! Connecting to PostgreSQL: the pool, creating the database if missing, and migrations.

use anyhow::Context;
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{Config, NoTls};

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// How the pool connects and how long anything waits for it.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections open at once.
    pub size: usize,
    /// Longest wait for a free connection (and for creating or recycling one); past it,
    /// `get()` fails with a timeout instead of waiting for good.
    pub wait_timeout: Duration,
    /// Longest wait for PostgreSQL to accept a new connection.
    pub connect_timeout: Duration,
    /// Set as `statement_timeout` on every connection of the pool; `None` leaves the server's.
    pub statement_timeout: Option<Duration>,
}

impl PoolSettings {
    /// `size` connections with the default timeouts and no statement timeout.
    pub fn new(size: usize) -> PoolSettings {
        PoolSettings {
            size,
            wait_timeout: DEFAULT_POOL_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: None,
        }
    }
}

/// Default longest wait for a pooled connection.
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default longest wait for PostgreSQL to accept a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a pool of `size` connections to `url` with the default timeouts.
pub fn pool(url: &str, size: usize) -> anyhow::Result<Pool> {
    pool_with(url, &PoolSettings::new(size))
}

/// Builds a pool to `url` as `settings` say.
pub fn pool_with(url: &str, settings: &PoolSettings) -> anyhow::Result<Pool> {
    let mut config: Config = url.parse().context("Failed to parse the database URL")?;
    config.connect_timeout(settings.connect_timeout);
    if let Some(timeout) = settings.statement_timeout {
        let option = format!("-c statement_timeout={}", timeout.as_millis());
        let options = match config.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {option}"),
            _ => option,
        };
        config.options(&options);
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.wait_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.wait_timeout))
        .build()
        .context("Failed to build the connection pool")
}

/// A connection of its own to the pool's database, with the pool's settings, that never
/// counts against the pool's size (leases hold one for as long as they live).
pub async fn dedicated_connection(pool: &Pool) -> anyhow::Result<ClientWrapper> {
    use deadpool::managed::Manager as _;
    let create = pool.manager().create();
    let mut client = match pool.timeouts().create {
        Some(limit) => tokio::time::timeout(limit, create)
            .await
            .context("Timed out opening a dedicated connection")?,
        None => create.await,
    }
    .context("Failed to open a dedicated connection")?;
    // It never goes back to the pool: keep it out of the pool's statement cache registry.
    pool.manager().detach(&mut client);
    Ok(client)
}

/// Creates the database named in `url` when it does not exist yet, connecting to the
/// server's `postgres` database to do so.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let config: Config = url.parse().context("Failed to parse the database URL")?;
    let Some(name) = config.get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    if try_connect(&config).await.is_ok() {
        return Ok(());
    }
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, connection) = admin
        .connect(NoTls)
        .await
        .context("Failed to connect to the `postgres` database to create the service's database")?;
    let driver = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .context("Failed to look up the database")?
        .is_some();
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match client.batch_execute(&sql).await {
            Ok(()) => tracing::info!(database = %name, "created the database"),
            // Another process created it in the meantime.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e).context("Failed to create the database"),
        }
    }
    drop(client);
    driver.abort();
    Ok(())
}

async fn try_connect(config: &Config) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// Applies the forward-only migrations in `migrations/`.
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    migrate_to(url, None).await
}

/// Applies the migrations up to `version` (all with `None`): tests of an upgrade start from a
/// database as an older release left it.
pub async fn migrate_to(url: &str, version: Option<i32>) -> anyhow::Result<()> {
    let config: Config = url.parse().context("Failed to parse the database URL")?;
    migrate_config_to(&config, version).await
}

/// [`migrate_to`] for a parsed connection configuration.
pub async fn migrate_config_to(config: &Config, version: Option<i32>) -> anyhow::Result<()> {
    let (mut client, connection) = config
        .connect(NoTls)
        .await
        .context("Failed to connect to PostgreSQL to migrate")?;
    let driver = tokio::spawn(connection);
    // Two processes starting at once: the advisory lock lets one migrate while the other waits.
    client
        .batch_execute("SELECT pg_advisory_lock(7180351244719271936)")
        .await
        .context("Failed to take the migration lock")?;
    let target = version.map_or(refinery::Target::Latest, refinery::Target::Version);
    let report = embedded::migrations::runner()
        .set_target(target)
        .run_async(&mut client)
        .await
        .context("Failed to apply migrations");
    let _ = client
        .batch_execute("SELECT pg_advisory_unlock(7180351244719271936)")
        .await;
    let report = report?;
    for migration in report.applied_migrations() {
        tracing::info!(migration = %migration, "applied migration");
    }
    drop(client);
    driver.abort();
    Ok(())
}

/// The names of the embedded migrations, in order (used to key test template databases).
pub fn migration_names() -> Vec<String> {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| format!("{m}:{}", m.checksum()))
        .collect()
}
