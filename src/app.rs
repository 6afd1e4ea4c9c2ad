//! `keyledger serve`: starts the pieces a role needs, the background workers under a
//! supervisor that restarts them; waits until the server or the writer stops or a worker keeps
//! failing, and says why.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::Request;
use axum::response::IntoResponse;
use deadpool_postgres::Pool;
use keyledger_api::body_limit::BodyLimits;
use keyledger_api::jwt::JwtKeys;
use keyledger_api::principal::Authenticator;
use keyledger_api::rate_limit::RateLimits;
use keyledger_api::request_log::{RequestLog, RequestLogConfig};
use keyledger_api::{ApiError, Code, REQUEST_ID_HEADER, Route, Routes};
use keyledger_command::auth::AuthState;
use keyledger_command::idempotency::IdempotencyConfig;
use keyledger_command::license::policy::Policy;
use keyledger_command::{Clock, CommandState};
use keyledger_events::relay::RelayConfig;
use keyledger_events::{HeadView, Notifier, PgEventStore, WriterConfig, db};
use keyledger_projections::license::view::ValidationView;
use keyledger_projections::runtime::RuntimeConfig;
use keyledger_query::QueryState;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_http::trace::TraceLayer;

use crate::config::{Role, ServeArgs};
use crate::health::{self, HealthState};
use crate::jobs;
use crate::supervise::{Supervisor, SupervisorConfig};
use keyledger_events::audit::SigningKey;

pub struct Application {
    pub address: SocketAddr,
    pub pool: Pool,
    pub notifier: Notifier,
    /// The background workers (projectors, relay, jobs); more may be added before running.
    pub supervisor: Supervisor,
    /// The rate limiters of this process (and the failed-login throttle).
    pub rate_limits: RateLimits,
    /// Every route this process serves (each is in the permission table).
    pub routes: Vec<Route>,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

/// The Prometheus recorder is process-wide; tests build many applications in one process.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

impl Application {
    /// Migrates, binds, and spawns every piece of `args.role`.
    pub async fn build(args: ServeArgs, clock: Clock) -> anyhow::Result<Application> {
        let policy = Arc::new(match &args.policy_file {
            Some(path) => Policy::load(path).map_err(anyhow::Error::msg)?,
            None => Policy::built_in(),
        });
        let url = &args.database.database_url;
        db::ensure_database(url).await?;
        db::migrate(url).await?;
        let settings = args.database.pool_settings();
        let pool = db::pool_with(url, &settings)?;
        let read_pool = match &args.read_database_url {
            Some(read_url) => db::pool_with(read_url, &settings)?,
            None => pool.clone(),
        };
        let supervisor = Supervisor::new(SupervisorConfig {
            max_failures: args.worker_max_failures,
            window: args.worker_failure_window,
            ..SupervisorConfig::default()
        });
        let notifier = Notifier::default();
        let runs = |role: Role| {
            args.role == Role::All
                || args.role == role
                || (args.role == Role::Api && matches!(role, Role::Command | Role::Query))
        };
        let mut tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)> = Vec::new();

        {
            let (url, notifier) = (url.clone(), notifier.clone());
            supervisor.spawn_forever("notification listener", move || {
                keyledger_events::notifier::listen(url.clone(), notifier.clone())
            });
        }

        let inline = keyledger_projections::inline();
        let projections = keyledger_projections::asynchronous();
        {
            // A rebuild may run long statements: it gets connections without the statement
            // timeout of the serving pool.
            let startup = db::pool_with(
                url,
                &db::PoolSettings {
                    statement_timeout: None,
                    ..settings.clone()
                },
            )?;
            keyledger_projections::runtime::prepare(&startup, &projections, &inline, &notifier)
                .await?;
        }

        let nats = match &args.nats_url {
            Some(nats_url) => Some(
                async_nats_connect(nats_url)
                    .await
                    .context("Failed to set up the NATS client")?,
            ),
            None => None,
        };
        if nats.is_none() && runs(Role::Relay) {
            tracing::warn!(
                "NATS_URL is not set: events are not published to NATS; projectors and \
                 consistency waits use the in-process notifier and PostgreSQL LISTEN/NOTIFY"
            );
        }

        if runs(Role::Projector) {
            let (pool, projections, notifier) =
                (pool.clone(), projections.clone(), notifier.clone());
            supervisor.spawn("projectors", move || {
                keyledger_projections::runtime::run_until_stopped(
                    pool.clone(),
                    projections.clone(),
                    notifier.clone(),
                    RuntimeConfig::default(),
                )
            });
        }

        let relay_config = RelayConfig {
            stream: args.nats_stream.clone(),
            subject_prefix: args.nats_subject_prefix.clone(),
            head_subject: args.nats_head_subject.clone(),
            checkpoint_subject: args.nats_checkpoint_subject.clone(),
            ..RelayConfig::default()
        };
        if let (Some(client), true) = (&nats, runs(Role::Relay)) {
            let (pool, client, config, notifier) = (
                pool.clone(),
                client.clone(),
                relay_config.clone(),
                notifier.clone(),
            );
            supervisor.spawn_forever("relay", move || {
                keyledger_events::relay::run_until_stopped(
                    pool.clone(),
                    client.clone(),
                    config.clone(),
                    notifier.clone(),
                )
            });
        }

        let mut router = Routes::new();
        // The MCP tools call routes through the finished router.
        let tools_router = crate::mcp::RouterCell::default();
        // Command nodes judge validations against the validation view, kept at the head by
        // their writer.
        let view = if runs(Role::Command) {
            Some(
                ValidationView::load(&pool)
                    .await
                    .context("Failed to load the validation view")?,
            )
        } else {
            None
        };
        // Nodes that serve the API append: commands, and request records on every node.
        let store: Option<Arc<dyn keyledger_events::EventStore>> =
            if runs(Role::Command) || runs(Role::Query) {
                let (store, writer) = PgEventStore::start(
                    pool.clone(),
                    WriterConfig {
                        max_batch_events: args.append_batch_max,
                        own_thread: Some({
                            let (url, settings) = (url.clone(), settings.clone());
                            Arc::new(move || {
                                // A connection per batch in flight, and one to spare.
                                db::pool_with(
                                    &url,
                                    &db::PoolSettings {
                                        size: WriterConfig::default().concurrent_batches + 1,
                                        ..settings.clone()
                                    },
                                )
                            })
                        }),
                        ..WriterConfig::default()
                    },
                    inline.clone(),
                    view.clone().map(|v| v as Arc<dyn HeadView>),
                    notifier.clone(),
                );
                tasks.push((
                    "append writer",
                    tokio::spawn(async move {
                        writer.await.context("the append writer panicked")?;
                        anyhow::bail!("the append writer stopped")
                    }),
                ));
                Some(Arc::new(store))
            } else {
                None
            };
        let rate_limits = RateLimits::new(&args.rate_limits());
        if store.is_some() {
            let (limits, interval) = (rate_limits.clone(), args.rate_limit_prune_interval);
            jobs::rate_limit_pruning(limits, interval).spawn(&supervisor);
        }
        // API nodes sign and check access tokens; worker roles serve no authenticated route.
        let authenticator = match &store {
            Some(store) => {
                let keys = Arc::new(load_jwt_keys(&args.jwt_key_file)?);
                let auth = AuthState {
                    store: store.clone(),
                    pool: pool.clone(),
                    clock: clock.clone(),
                    keys: keys.clone(),
                    limits: rate_limits.clone(),
                    secure_cookies: args.admin_cookie_secure,
                };
                router = router
                    .merge(keyledger_command::auth::router(auth.clone()))
                    .merge(keyledger_command::user::routes::router(auth))
                    .merge(crate::openapi::router())
                    .merge(crate::mcp::router(tools_router.clone()));
                if args.admin_token.is_some() {
                    tracing::info!(
                        "KEYLEDGER_ADMIN_TOKEN is set: it is accepted as an admin bearer token"
                    );
                }
                Some(Authenticator {
                    keys,
                    admin_token: args.admin_token.clone(),
                    pool: pool.clone(),
                    clock: clock.clone(),
                    key_usage: Default::default(),
                    license_keys: view.clone().map(|view| {
                        Arc::new(move |digest: &[u8; 32]| view.license_id(digest))
                            as keyledger_api::principal::LicenseKeys
                    }),
                })
            }
            None => None,
        };
        let request_log = match &store {
            Some(store) if args.request_log_enabled => {
                let (log, records) = RequestLog::new(RequestLogConfig {
                    enabled: true,
                    sample_rate: args.request_log_sample_rate,
                    body_limit: args.request_log_body_limit,
                    exclude: args.request_log_exclude.clone(),
                    ..RequestLogConfig::default()
                });
                // The queue outlives a writer that fails: each run drains it through a channel
                // of its own.
                let records = Arc::new(tokio::sync::Mutex::new(records));
                let store = store.clone();
                supervisor.spawn_forever("request log writer", move || {
                    let (records, store) = (records.clone(), store.clone());
                    async move {
                        let (forward, run_records) = tokio::sync::mpsc::channel(1024);
                        let pump = async move {
                            let mut records = records.lock().await;
                            while let Some(record) = records.recv().await {
                                if forward.send(record).await.is_err() {
                                    break;
                                }
                            }
                        };
                        futures::join!(
                            pump,
                            keyledger_api::request_log::run_writer(store, run_records)
                        );
                    }
                });
                Some(log)
            }
            _ => None,
        };
        if runs(Role::Projector) {
            jobs::request_log_retention(pool.clone(), args.request_log_retention)
                .spawn(&supervisor);
        }
        if let Some(view) = &view {
            let (view, pool, notifier) = (view.clone(), pool.clone(), notifier.clone());
            supervisor.spawn_forever("validation view follower", move || {
                view.clone().follow(pool.clone(), notifier.head())
            });
        }
        if let (Some(store), Some(view)) = (store.clone(), view) {
            let audit_key = Arc::new(keyledger_command::audit::AuditKey::new(load_signing_key(
                &args.signing_key_file,
            )?));
            for job in [
                jobs::checkpoint_signer(
                    store.clone(),
                    pool.clone(),
                    audit_key.clone(),
                    args.checkpoint_interval,
                ),
                jobs::idempotency_purge(pool.clone(), args.idempotency_purge_interval),
                jobs::session_retention(
                    store.clone(),
                    pool.clone(),
                    clock.clone(),
                    args.session_retention,
                    args.session_expiry_interval,
                ),
                jobs::heartbeat_timeouts(
                    store.clone(),
                    pool.clone(),
                    clock.clone(),
                    args.heartbeat_ttl,
                    args.heartbeat_check_interval,
                ),
            ] {
                job.spawn(&supervisor);
            }
            router = router.merge(keyledger_command::router(CommandState {
                audit_key,
                store,
                pool: pool.clone(),
                clock: clock.clone(),
                idempotency: IdempotencyConfig {
                    ttl: args.idempotency_ttl,
                    ..IdempotencyConfig::default()
                },
                policy: policy.clone(),
                view,
                heartbeat_ttl: args.heartbeat_ttl,
                request_body_limit: args.request_log_body_limit,
            }));
        }
        if runs(Role::Query) {
            router = router.merge(keyledger_query::router(QueryState {
                pool: read_pool.clone(),
                primary: pool.clone(),
                notifier: notifier.clone(),
                consistency_timeout: args.consistency_timeout(),
                read_replica: args.read_database_url.is_some(),
                heartbeat_ttl: args.heartbeat_ttl,
                clock: clock.clone(),
                api_description: crate::openapi::document(),
            }));
        }
        let health_state = HealthState {
            pool: pool.clone(),
            notifier: notifier.clone(),
            nats,
            projections: projections.iter().map(|p| p.name()).collect(),
            relay_checkpoint: args
                .nats_url
                .as_ref()
                .map(|_| relay_config.checkpoint_name()),
            metrics: metrics_handle(),
            supervisor: supervisor.clone(),
            stuck_after: args.projection_stuck_after,
        };
        if args.request_timeout() <= args.consistency_timeout() {
            tracing::warn!(
                request_timeout_ms = args.request_timeout_ms,
                consistency_timeout_ms = args.consistency_timeout_ms,
                "REQUEST_TIMEOUT_MS is not above CONSISTENCY_TIMEOUT_MS: consistency waits end \
                 as request timeouts (503) rather than as 504 SYS_CONSISTENCY_TIMEOUT"
            );
        }
        let (router, routes) = router.merge(health::router(health_state)).into_parts();
        let router = with_http_layers(
            router,
            request_log,
            rate_limits.clone(),
            args.request_timeout(),
            authenticator,
        );
        tools_router.set(router.clone());

        // Worker roles serve /health and /metrics only.
        let listener = TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("Failed to bind {}", args.bind))?;
        let address = listener.local_addr()?;
        tasks.push((
            "http server",
            tokio::spawn(async move {
                // The peer address keys the rate limits of anonymous callers.
                let service = router.into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(listener, service)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
                    .context("the HTTP server failed")
            }),
        ));
        tracing::info!(address = %address, role = ?args.role, "keyledger is serving");
        Ok(Application {
            address,
            pool,
            notifier,
            supervisor,
            rate_limits,
            routes,
            tasks,
        })
    }

    /// Waits until the server or the writer stops, or a worker is given up on; reports which
    /// and why. Every other piece is stopped before it returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let supervisor = self.supervisor;
        let (names, handles): (Vec<_>, Vec<_>) = self.tasks.into_iter().unzip();
        let stopped = tokio::select! {
            stopped = futures::future::select_all(handles) => stopped,
            error = supervisor.gave_up() => {
                supervisor.stop_all();
                tracing::error!(error = %format!("{error:#}"), "a worker cannot be restarted; stopping");
                return Err(error);
            }
        };
        supervisor.stop_all();
        let (result, index, rest) = stopped;
        for handle in rest {
            handle.abort();
        }
        let name = names[index];
        match result {
            Ok(Ok(())) => {
                tracing::info!(task = name, "stopped");
                Ok(())
            }
            Ok(Err(error)) => {
                tracing::error!(task = name, error = %format!("{error:#}"), "stopped with an error");
                Err(error)
            }
            Err(join) => {
                tracing::error!(task = name, error = %join, "panicked");
                Err(anyhow::anyhow!("{name} panicked: {join}"))
            }
        }
    }
}

/// Reads the audit signing key, creating it on first start (and saying where).
fn load_signing_key(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    let (key, created) = SigningKey::load_or_create(path)?;
    let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    if created {
        tracing::info!(
            path = %shown.display(),
            kid = key.kid(),
            "created a new signing key for the log's checkpoints (mode 0600); keep it"
        );
    } else {
        tracing::info!(path = %shown.display(), kid = key.kid(), "checkpoint signing key loaded");
    }
    Ok(key)
}

/// Reads the access-token signing key, creating it on first start (and saying where).
fn load_jwt_keys(path: &std::path::Path) -> anyhow::Result<JwtKeys> {
    let (keys, created) = JwtKeys::load_or_create(path)?;
    let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    if created {
        tracing::info!(
            path = %shown.display(),
            kid = keys.kid(),
            "created a new JWT signing key (mode 0600); keep it, and give every API node the same file"
        );
    } else {
        tracing::info!(path = %shown.display(), kid = keys.kid(), "JWT signing key loaded");
    }
    Ok(keys)
}

async fn async_nats_connect(url: &str) -> anyhow::Result<async_nats::Client> {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(url)
        .await?;
    Ok(client)
}

/// Every route takes at most a command's body; request ingestion takes a batch of records.
fn body_limits() -> BodyLimits {
    BodyLimits::new(keyledger_command::BODY_LIMIT).route(
        axum::http::Method::POST,
        "/v1/requests",
        keyledger_command::ingest::BODY_LIMIT,
    )
}

fn with_http_layers(
    router: Router,
    request_log: Option<RequestLog>,
    rate_limits: RateLimits,
    request_timeout: Duration,
    authenticator: Option<Authenticator>,
) -> Router {
    let router = router
        // Inside the route note, so a refused call is logged with its route.
        .route_layer(axum::middleware::from_fn(
            keyledger_api::permission::authorize,
        ))
        .route_layer(axum::middleware::from_fn(
            keyledger_api::request_log::note_route,
        ))
        .fallback(|| async { ApiError::not_found(Code::ResNotFound, "no such route") });
    let router = router
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            bound_request_time,
        ))
        // Before every handler (a refused request writes nothing), inside the request log (it
        // is still recorded) and inside `render_problems` (which logs the refusal).
        .layer(axum::middleware::from_fn_with_state(
            rate_limits,
            keyledger_api::rate_limit::layer,
        ));
    // The principal is settled outside the limiter, which then counts an authenticated caller
    // on its own budget, and inside the problem renderer, so a refused token is logged once and
    // answered as problem+json with the request's id.
    let router = match authenticator {
        Some(authenticator) => router.layer(axum::middleware::from_fn_with_state(
            authenticator,
            keyledger_api::principal::authenticate,
        )),
        None => router,
    };
    let router = router
        .layer(axum::middleware::from_fn(keyledger_api::render_problems))
        // Inside the request log, so that a refused body is still recorded (the log reads
        // only the part of a body it keeps).
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(body_limits()),
            keyledger_api::body_limit::limit_bodies,
        ));
    let router = match request_log {
        Some(log) => router.layer(axum::middleware::from_fn_with_state(
            log,
            keyledger_api::request_log::layer,
        )),
        None => router,
    };
    router
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!(
                    "http",
                    http.method = %request.method(),
                    http.path = %request.uri().path(),
                    request_id = %request_id,
                )
            }),
        )
        .layer(axum::middleware::from_fn(keyledger_api::request_id_layer))
}

/// Answers 503 `SYS_UNAVAILABLE` with `Retry-After` when the request takes longer than
/// `limit` (the work in flight is dropped; an append already handed to the writer may still
/// commit, which a retry with the same Idempotency-Key finds).
async fn bound_request_time(
    State(limit): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("keyledger_request_timeouts_total").increment(1);
            let mut error = ApiError::unavailable(format!(
                "the request did not finish within {} ms",
                limit.as_millis()
            ));
            error.detail = format!(
                "the request did not finish within {} ms; retry later",
                limit.as_millis()
            );
            error.into_response()
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
