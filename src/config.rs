//! Configuration from the environment (each setting also has a flag).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use keyledger_api::rate_limit::{Rate, RateLimitConfig};

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/keyledger";

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL holding the event log (the database is created if missing).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Connections in the pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,

    /// Longest wait for a pooled connection, in milliseconds; past it the request answers 503.
    #[arg(long, env = "DB_POOL_TIMEOUT_MS", default_value_t = 5000)]
    pub db_pool_timeout_ms: u64,

    /// Longest wait for PostgreSQL to accept a new connection, in milliseconds.
    #[arg(long, env = "DB_CONNECT_TIMEOUT_MS", default_value_t = 5000)]
    pub db_connect_timeout_ms: u64,

    /// `statement_timeout` of the service's pooled connections, in milliseconds (0: none).
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_MS", default_value_t = 10000)]
    pub db_statement_timeout_ms: u64,
}

impl DatabaseArgs {
    /// The settings of the service's pool (with the statement timeout).
    pub fn pool_settings(&self) -> keyledger_events::db::PoolSettings {
        keyledger_events::db::PoolSettings {
            size: self.db_pool_size,
            wait_timeout: Duration::from_millis(self.db_pool_timeout_ms),
            connect_timeout: Duration::from_millis(self.db_connect_timeout_ms),
            statement_timeout: (self.db_statement_timeout_ms > 0)
                .then(|| Duration::from_millis(self.db_statement_timeout_ms)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Everything in one process.
    All,
    /// The command and query APIs with the admin hub, and no workers.
    Api,
    /// The command API and the append writer.
    Command,
    /// The query API.
    Query,
    /// The projector workers.
    Projector,
    /// The NATS relay.
    Relay,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Which part of the service this process runs.
    #[arg(long, env = "ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,

    /// Address of the HTTP API.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Queries read here when set (e.g. a read replica); defaults to DATABASE_URL.
    #[arg(long, env = "READ_DATABASE_URL")]
    pub read_database_url: Option<String>,

    /// NATS server; unset runs an in-process notifier and publishes nothing.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,

    /// JetStream stream the relay publishes to.
    #[arg(long, env = "NATS_STREAM", default_value = "KEYLEDGER_EVENTS")]
    pub nats_stream: String,

    /// Subject prefix: events go to `<prefix>.<category>.<EventType>`.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "keyledger.events")]
    pub nats_subject_prefix: String,

    /// Core NATS subject where the relay publishes the log's head (position and hash).
    #[arg(long, env = "NATS_HEAD_SUBJECT", default_value = "keyledger.head")]
    pub nats_head_subject: String,

    /// Subject the relay publishes the signed checkpoints on, kept in the JetStream stream
    /// `<NATS_STREAM>_CHECKPOINTS`.
    #[arg(
        long,
        env = "NATS_CHECKPOINT_SUBJECT",
        default_value = "keyledger.checkpoints"
    )]
    pub nats_checkpoint_subject: String,

    /// Longest wait of a query for `X-Consistency-Position`, in milliseconds.
    #[arg(long, env = "CONSISTENCY_TIMEOUT_MS", default_value_t = 5000)]
    pub consistency_timeout_ms: u64,

    /// Most events the writer commits in one transaction.
    #[arg(long, env = "APPEND_BATCH_MAX", default_value_t = 1000)]
    pub append_batch_max: usize,

    /// How long an Idempotency-Key is remembered (e.g. `24h`, `90m`, `30s`).
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,

    /// Sessions still pending or active this long after creation are expired.
    #[arg(long, env = "SESSION_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub session_retention: Duration,

    /// How often the session retention job runs.
    #[arg(long, env = "SESSION_EXPIRY_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub session_expiry_interval: Duration,

    /// The license policy (tiers, entitlements, limits, quotas); the built-in one when unset.
    #[arg(long, env = "POLICY_FILE")]
    pub policy_file: Option<std::path::PathBuf>,

    /// An installation without a heartbeat this long is dead and loses its seat.
    #[arg(long, env = "HEARTBEAT_TTL", default_value = "10m", value_parser = parse_duration)]
    pub heartbeat_ttl: Duration,

    /// How often dead installations are looked for.
    #[arg(long, env = "HEARTBEAT_CHECK_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_check_interval: Duration,

    /// Record every API request as an event (for the request viewer).
    #[arg(long, env = "REQUEST_LOG_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub request_log_enabled: bool,

    /// Share of requests recorded, 0.0 to 1.0.
    #[arg(long, env = "REQUEST_LOG_SAMPLE_RATE", default_value_t = 1.0)]
    pub request_log_sample_rate: f64,

    /// Characters kept of each request and response body.
    #[arg(long, env = "REQUEST_LOG_BODY_LIMIT", default_value_t = 2000)]
    pub request_log_body_limit: usize,

    /// Comma-separated path prefixes not recorded (besides /health, /metrics, admin assets and
    /// the MCP transport, whose tool calls are recorded as `mcp:<tool>`).
    #[arg(long, env = "REQUEST_LOG_EXCLUDE", value_delimiter = ',')]
    pub request_log_exclude: Vec<String>,

    /// How long the request viewer keeps records (the event log keeps them for good).
    #[arg(long, env = "REQUEST_LOG_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub request_log_retention: Duration,

    /// How often expired Idempotency-Keys are purged.
    #[arg(long, env = "IDEMPOTENCY_PURGE_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub idempotency_purge_interval: Duration,

    /// Longest time a request may take, in milliseconds; past it the answer is 503.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 30000)]
    pub request_timeout_ms: u64,

    /// A projection behind the log whose checkpoint has not moved this long is stuck.
    #[arg(long, env = "PROJECTION_STUCK_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub projection_stuck_after: Duration,

    /// A worker that stops this many times within WORKER_FAILURE_WINDOW stops the process.
    #[arg(long, env = "WORKER_MAX_FAILURES", default_value_t = 5)]
    pub worker_max_failures: usize,

    /// The window WORKER_MAX_FAILURES counts in; a restarted worker is reported degraded in
    /// `/health` for this long after its last failure.
    #[arg(long, env = "WORKER_FAILURE_WINDOW", default_value = "5m", value_parser = parse_duration)]
    pub worker_failure_window: Duration,

    /// Validations and by-key lookups per client (`N/sec|min|hour`, or `off`).
    #[arg(long, env = "RATE_LIMIT_VALIDATE", default_value = "100000/min", value_parser = parse_rate)]
    pub rate_limit_validate: Rate,

    /// Logins and token refreshes per client (`N/sec|min|hour`, or `off`).
    #[arg(long, env = "RATE_LIMIT_LOGIN", default_value = "60/min", value_parser = parse_rate)]
    pub rate_limit_login: Rate,

    /// Other POST, PATCH, PUT and DELETE requests per client (`N/sec|min|hour`, or `off`).
    #[arg(long, env = "RATE_LIMIT_COMMANDS", default_value = "100000/min", value_parser = parse_rate)]
    pub rate_limit_commands: Rate,

    /// GET requests per client (`N/sec|min|hour`, or `off`).
    #[arg(long, env = "RATE_LIMIT_READS", default_value = "100000/min", value_parser = parse_rate)]
    pub rate_limit_reads: Rate,

    /// Failed logins per account before it is locked until the budget refills.
    #[arg(long, env = "RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT", default_value = "10/hour", value_parser = parse_rate)]
    pub rate_limit_login_failures_per_account: Rate,

    /// Failed logins per client address before it is locked until the budget refills.
    #[arg(long, env = "RATE_LIMIT_LOGIN_FAILURES_PER_IP", default_value = "100/hour", value_parser = parse_rate)]
    pub rate_limit_login_failures_per_ip: Rate,

    /// How often the limiters forget clients whose budget is full again.
    #[arg(long, env = "RATE_LIMIT_PRUNE_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub rate_limit_prune_interval: Duration,

    /// Take the client's address from the first `X-Forwarded-For` hop (only behind a proxy
    /// that sets it; otherwise clients could pick their own address).
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded_for: bool,

    /// The Ed25519 key access tokens are signed with (PKCS#8 PEM); created with mode 0600 when
    /// missing. Every API node of a deployment must read the same file.
    #[arg(long, env = "JWT_KEY_FILE", default_value = "keyledger-jwt.key")]
    pub jwt_key_file: std::path::PathBuf,

    /// The Ed25519 key the log's checkpoints are signed with (PKCS#8 PEM); created with mode
    /// 0600 when missing. Its public half is recorded in the log and published at
    /// `/.well-known/keyledger-keys.json`.
    #[arg(
        long,
        env = "SIGNING_KEY_FILE",
        default_value = "keyledger-signing.key"
    )]
    pub signing_key_file: std::path::PathBuf,

    /// How often the log's head is signed (only when the log moved since the last checkpoint).
    #[arg(long, env = "CHECKPOINT_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,

    /// Always mark the admin hub's session cookie `Secure`. Unset, it is `Secure` only on
    /// requests a proxy marks `X-Forwarded-Proto: https`; set it when the service is reached
    /// over https only.
    #[arg(long, env = "ADMIN_COOKIE_SECURE", default_value_t = false, action = clap::ArgAction::Set)]
    pub admin_cookie_secure: bool,

    /// A bearer token (at least 32 characters) accepted as an admin, for automation and the
    /// first setup. Unset: there is no such token.
    #[arg(long, env = "KEYLEDGER_ADMIN_TOKEN", hide_env_values = true,
          value_parser = keyledger_api::principal::AdminToken::parse)]
    pub admin_token: Option<keyledger_api::principal::AdminToken>,
}

/// `N/sec`, `N/min`, `N/hour`, or `off` (`0`).
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    text.parse()
}

/// `<number><unit>` with unit `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` needs a unit: ms, s, m, h or d"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        other => return Err(format!("unknown unit `{other}` (use ms, s, m, h or d)")),
    };
    Ok(Duration::from_secs(seconds))
}

impl ServeArgs {
    pub fn consistency_timeout(&self) -> Duration {
        Duration::from_millis(self.consistency_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn rate_limits(&self) -> RateLimitConfig {
        RateLimitConfig {
            validate: self.rate_limit_validate,
            login: self.rate_limit_login,
            commands: self.rate_limit_commands,
            reads: self.rate_limit_reads,
            trust_forwarded_for: self.trust_forwarded_for,
            login_failures_per_account: self.rate_limit_login_failures_per_account,
            login_failures_per_ip: self.rate_limit_login_failures_per_ip,
        }
    }

    /// Settings for an in-process instance (tests, benchmarks).
    pub fn local(database_url: &str) -> ServeArgs {
        let generous = RateLimitConfig::generous();
        ServeArgs {
            database: DatabaseArgs {
                database_url: database_url.to_owned(),
                db_pool_size: 16,
                db_pool_timeout_ms: 5000,
                db_connect_timeout_ms: 5000,
                db_statement_timeout_ms: 10000,
            },
            role: Role::All,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            read_database_url: None,
            nats_url: None,
            nats_stream: "KEYLEDGER_EVENTS".into(),
            nats_subject_prefix: "keyledger.events".into(),
            nats_head_subject: "keyledger.head".into(),
            nats_checkpoint_subject: "keyledger.checkpoints".into(),
            consistency_timeout_ms: 5000,
            append_batch_max: 1000,
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            session_retention: Duration::from_secs(7 * 24 * 60 * 60),
            policy_file: None,
            heartbeat_ttl: Duration::from_secs(600),
            heartbeat_check_interval: Duration::from_secs(30),
            request_log_enabled: true,
            request_log_sample_rate: 1.0,
            request_log_body_limit: 2000,
            request_log_exclude: Vec::new(),
            request_log_retention: Duration::from_secs(30 * 86_400),
            session_expiry_interval: Duration::from_secs(60),
            idempotency_purge_interval: Duration::from_secs(600),
            request_timeout_ms: 30000,
            projection_stuck_after: Duration::from_secs(30),
            worker_max_failures: 5,
            worker_failure_window: Duration::from_secs(300),
            // Limits no test or benchmark reaches; a test sets its own.
            rate_limit_validate: generous.validate,
            rate_limit_login: generous.login,
            rate_limit_commands: generous.commands,
            rate_limit_reads: generous.reads,
            rate_limit_login_failures_per_account: generous.login_failures_per_account,
            rate_limit_login_failures_per_ip: generous.login_failures_per_ip,
            rate_limit_prune_interval: Duration::from_secs(60),
            trust_forwarded_for: generous.trust_forwarded_for,
            // Shared by every in-process instance on the machine; never in the working tree.
            jwt_key_file: std::env::temp_dir().join("keyledger-local-jwt.key"),
            signing_key_file: std::env::temp_dir().join("keyledger-local-signing.key"),
            checkpoint_interval: Duration::from_secs(60),
            admin_token: None,
            admin_cookie_secure: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10w").is_err());
    }

    #[test]
    fn the_rate_limit_defaults_are_generous_and_a_setting_can_turn_a_class_off() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let defaults = Cli::try_parse_from(["keyledger"]).map(|c| c.serve.rate_limits());
        let defaults = defaults.map_err(|e| e.to_string());
        let Ok(limits) = defaults else {
            panic!("the defaults parse: {defaults:?}");
        };
        assert_eq!(limits.validate.to_string(), "100000/min");
        assert_eq!(limits.reads.to_string(), "100000/min");
        assert!(!limits.trust_forwarded_for);
        let off = Cli::try_parse_from(["keyledger", "--rate-limit-reads", "off"])
            .map(|c| c.serve.rate_limit_reads);
        assert!(matches!(off, Ok(Rate::Off)));
        let bad = Cli::try_parse_from(["keyledger", "--rate-limit-reads", "lots"]);
        let message = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("N/sec"), "{message}");
    }
}
