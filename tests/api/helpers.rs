//! `spawn_app()` and friends: a fresh database per test (cloned from a migrated template), the
//! service bound to port 0, typed helpers for the API, and polling with a deadline.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::Utc;
use deadpool_postgres::Pool;
use keyledger::app::Application;
use keyledger::config::ServeArgs;
use keyledger_command::Clock;
use keyledger_events::db;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;
use uuid::Uuid;

mod client;
mod licenses;
mod log;
mod sessions;
mod users;
pub use client::*;
pub use licenses::*;
pub use log::*;
pub use sessions::*;
pub use users::*;

pub const SERVER: &str = "postgres://postgres@127.0.0.1:5432";
pub const NATS: &str = "nats://127.0.0.1:4222";

/// The bootstrap admin token every test service accepts (`KEYLEDGER_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "test-bootstrap-admin-token-000000000000";

/// A client that calls as the bootstrap admin (actor `admin_token`).
pub fn admin_client() -> reqwest::Client {
    client_with(&format!("Bearer {ADMIN_TOKEN}"))
}

/// The password of the users tests create.
pub const PASSWORD: &str = "correct horse battery staple";

/// Metadata of the service's own commands.
pub fn system() -> keyledger_events::Metadata {
    keyledger_events::Metadata {
        actor: Some("system".into()),
        ..keyledger_events::Metadata::default()
    }
}

/// Creates a user (password `PASSWORD`) through the same command the CLI runs.
pub async fn create_user(database_url: &str, email: &str, role: keyledger_api::Role) -> Uuid {
    let pool = db::pool(database_url, 2).unwrap();
    let (store, writer) = keyledger_events::PgEventStore::start(
        pool,
        keyledger_events::WriterConfig::default(),
        keyledger_projections::inline(),
        None,
        keyledger_events::Notifier::default(),
    );
    let id = keyledger_command::user::create_user(
        &store,
        email,
        PASSWORD.into(),
        role,
        false,
        &system(),
        Utc::now(),
    )
    .await
    .unwrap();
    writer.abort();
    id
}

/// A client that sends `authorization` on every request.
pub fn client_with(authorization: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(authorization).unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The template every test database is cloned from, named after the migrations it holds.
async fn template() -> String {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let digest = Sha256::digest(db::migration_names().join("\n").as_bytes());
            let name = format!("keyledger_tpl_{}", &hex::encode(digest)[..16]);
            build_template(&name, true).await;
            name
        })
        .await
        .clone()
}

/// Builds the template `name` unless it exists, dropping the templates of other migration sets
/// if `drop_stale`. Checkouts with other migration sets sharing the server drop it as stale, so
/// a test that finds it gone builds it again (and leaves theirs alone).
async fn build_template(name: &str, drop_stale: bool) {
    let (client, connection) = tokio_postgres::connect(&format!("{SERVER}/postgres"), NoTls)
        .await
        .expect("PostgreSQL must run at 127.0.0.1:5432 (see README)");
    let driver = tokio::spawn(connection);
    // Several test processes may start at once: one builds the template.
    client
        .batch_execute("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .is_some();
    if !exists {
        let building = format!("{name}_building");
        for statement in [
            format!("DROP DATABASE IF EXISTS {building}"),
            format!("CREATE DATABASE {building}"),
        ] {
            client.batch_execute(&statement).await.unwrap();
        }
        db::migrate(&format!("{SERVER}/{building}")).await.unwrap();
        client
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .await
            .unwrap();
        // Templates of earlier migration sets are of no use any more.
        let stale = if !drop_stale {
            Vec::new()
        } else {
            client
                .query(
                    "SELECT datname FROM pg_database \
                         WHERE datname LIKE 'keyledger_tpl_%' AND datname <> $1",
                    &[&name],
                )
                .await
                .unwrap()
        };
        for row in stale {
            let stale: String = row.get(0);
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {stale}"))
                .await;
        }
    }
    client
        .batch_execute("SELECT pg_advisory_unlock(4242)")
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
}

/// A new, migrated, empty database; dropped when the guard is.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let template = template().await;
        let name = format!("kl_test_{}", Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&format!("{SERVER}/postgres"), NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        let mut attempts = 0;
        while let Err(error) = client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
        {
            attempts += 1;
            let gone = error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_DATABASE);
            assert!(
                gone && attempts < 5,
                "cannot create a test database: {error}"
            );
            build_template(&template, false).await;
        }
        drop(client);
        let _ = driver.await;
        TestDatabase {
            url: format!("{SERVER}/{name}"),
            name,
        }
    }

    /// A new database with no migrations applied.
    pub async fn empty() -> TestDatabase {
        let name = format!("kl_test_{}", Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&format!("{SERVER}/postgres"), NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        drop(client);
        let _ = driver.await;
        TestDatabase {
            url: format!("{SERVER}/{name}"),
            name,
        }
    }

    /// An event store of the test's own on this database: no inline projections, no view.
    pub fn store(&self) -> keyledger_events::store::PgEventStore {
        keyledger_events::store::PgEventStore::start(
            self.pool(),
            keyledger_events::store::WriterConfig::default(),
            vec![],
            None,
            keyledger_events::Notifier::default(),
        )
        .0
    }

    pub fn pool(&self) -> Pool {
        db::pool(&self.url, 8).unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the blocking work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&format!("{SERVER}/postgres"), NoTls).await
                {
                    let driver = tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    drop(client);
                    let _ = driver.await;
                }
            });
        })
        .join();
    }
}

/// A clock the test moves by hand.
#[derive(Clone, Default)]
pub struct TestClock {
    offset_seconds: Arc<AtomicI64>,
}

impl TestClock {
    pub fn advance(&self, by: chrono::Duration) {
        self.offset_seconds
            .fetch_add(by.num_seconds(), Ordering::SeqCst);
    }

    pub fn clock(&self) -> Clock {
        let offset = self.offset_seconds.clone();
        Arc::new(move || Utc::now() + chrono::Duration::seconds(offset.load(Ordering::SeqCst)))
    }
}

pub struct TestApp {
    pub address: String,
    /// Calls as the bootstrap admin.
    pub http: reqwest::Client,
    /// Calls without credentials.
    pub anonymous: reqwest::Client,
    /// Every route the service serves.
    pub routes: Vec<keyledger_api::Route>,
    pub pool: Pool,
    pub clock: TestClock,
    pub database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    spawn_app_on(TestDatabase::create().await, configure).await
}

/// The service on a database the test prepared.
pub async fn spawn_app_on(
    database: TestDatabase,
    configure: impl FnOnce(&mut ServeArgs),
) -> TestApp {
    let mut args = ServeArgs::local(&database.url);
    args.database.db_pool_size = 8;
    args.admin_token = Some(keyledger_api::principal::AdminToken::parse(ADMIN_TOKEN).unwrap());
    configure(&mut args);
    let clock = TestClock::default();
    let app = Application::build(args, clock.clock()).await.unwrap();
    let address = format!("http://{}", app.address);
    let routes = app.routes.clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        http: admin_client(),
        anonymous: reqwest::Client::new(),
        routes,
        pool: database.pool(),
        clock,
        database,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// GET that waits for the projections to reach `position`.
    pub async fn get_at(&self, path: &str, position: i64) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("x-consistency-position", position.to_string())
            .send()
            .await
            .unwrap()
    }

    /// Issues a license to acme on the pro tier.
    pub async fn issue_license(&self) -> Issued {
        self.issue_license_with(NewLicense::new("acme", "pro"))
            .await
    }

    pub async fn issue_license_with(&self, license: NewLicense) -> Issued {
        self.licenses().issue(&license).await
    }

    /// Validates `key` (and nothing else).
    pub async fn validate(&self, key: &str) -> Validation {
        self.licenses().validate(&Validate::key(key)).await
    }

    pub async fn revoke(&self, license_id: impl ToString, reason: &str) -> Revoked {
        self.licenses().revoke(license_id, reason).await
    }

    pub async fn try_revoke(&self, license_id: impl ToString, reason: &str) -> reqwest::Response {
        self.licenses().try_revoke(license_id, reason).await
    }

    /// The actors of a stream's events (`admin_token`, `user:<id>`, …), in order.
    pub async fn actors(&self, stream_id: &str) -> Vec<String> {
        self.pool
            .get()
            .await
            .unwrap()
            .query(
                "SELECT metadata->>'actor' FROM events WHERE stream_id = $1 ORDER BY position",
                &[&stream_id],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// Events of the domain (the request log's own records left out).
    pub async fn event_count(&self) -> i64 {
        let client = self.pool.get().await.unwrap();
        client
            .query_one(
                "SELECT count(*) FROM events WHERE event_type <> 'ApiRequestRecorded'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub async fn head(&self) -> i64 {
        let client = self.pool.get().await.unwrap();
        keyledger_events::store::head_on(&client).await.unwrap()
    }

    /// Events of `event_type` in the whole log.
    pub async fn count_of(&self, event_type: &str) -> i64 {
        let client = self.pool.get().await.unwrap();
        client
            .query_one(
                "SELECT count(*) FROM events WHERE event_type = $1",
                &[&event_type],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub async fn events_of_type(&self, stream_id: &str, event_type: &str) -> i64 {
        let client = self.pool.get().await.unwrap();
        client
            .query_one(
                "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = $2",
                &[&stream_id, &event_type],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A problem+json response's body, after checking its media type and status.
pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["correlation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    body
}

/// A JetStream stream and subject prefix of the test's own.
pub struct TestStream {
    pub config: keyledger_events::relay::RelayConfig,
    pub client: async_nats::Client,
    pub context: async_nats::jetstream::Context,
}

impl TestStream {
    pub async fn create() -> TestStream {
        let id = Uuid::new_v4().simple().to_string();
        let config = keyledger_events::relay::RelayConfig {
            stream: format!("KL_TEST_{id}"),
            subject_prefix: format!("kltest.{id}"),
            head_subject: format!("kltest-head.{id}"),
            checkpoint_subject: format!("kltest-checkpoints.{id}"),
            ..Default::default()
        };
        let client = async_nats::connect(NATS)
            .await
            .expect("NATS must run at 127.0.0.1:4222 (see README)");
        let context = async_nats::jetstream::new(client.clone());
        TestStream {
            config,
            client,
            context,
        }
    }

    /// Every message in the stream, in stream order.
    pub async fn messages(&self) -> Vec<async_nats::jetstream::message::StreamMessage> {
        let mut stream = self.context.get_stream(&self.config.stream).await.unwrap();
        let count = stream.info().await.unwrap().state.messages;
        let mut messages = Vec::new();
        for sequence in 1..=count {
            messages.push(stream.get_raw_message(sequence).await.unwrap());
        }
        messages
    }

    pub async fn delete(self) {
        let _ = self.context.delete_stream(&self.config.stream).await;
        let _ = self
            .context
            .delete_stream(&self.config.checkpoint_stream())
            .await;
    }
}

pub async fn checkpoint(pool: &Pool, name: &str) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_opt("SELECT position FROM checkpoints WHERE name = $1", &[&name])
        .await
        .unwrap()
        .map_or(0, |row| row.get(0))
}

/// The real `keyledger serve` binary in a child process, its output in a log file.
pub struct ServiceProcess {
    pub child: std::process::Child,
    pub address: String,
    pub log: std::path::PathBuf,
}

impl ServiceProcess {
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> ServiceProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("keyledger-test-{}.log", Uuid::new_v4()));
        let file = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("BIND", format!("127.0.0.1:{port}"))
            .env_remove("NATS_URL")
            .env("KEYLEDGER_ADMIN_TOKEN", ADMIN_TOKEN)
            // Never a key file in the working tree (a test may name its own).
            .env(
                "JWT_KEY_FILE",
                std::env::temp_dir().join("keyledger-local-jwt.key"),
            )
            .env(
                "SIGNING_KEY_FILE",
                std::env::temp_dir().join("keyledger-local-signing.key"),
            )
            .envs(env.iter().copied())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let address = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let ready = format!("{address}/health/ready");
        eventually(Duration::from_secs(30), "the service to be ready", || {
            let request = http.get(&ready).send();
            async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
        ServiceProcess {
            child,
            address,
            log,
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A policy file whose tiers are the built-in ones with `edit` applied to the TOML text.
pub fn policy_file(edit: impl FnOnce(String) -> String) -> std::path::PathBuf {
    let text = edit(keyledger_command::license::policy::BUILT_IN.to_owned());
    let path = std::env::temp_dir().join(format!("keyledger-policy-{}.toml", Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    path
}
