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
use futures::future::BoxFuture;
use keyledger_api::body_limit::BodyLimits;
use keyledger_api::jwt::JwtKeys;
use keyledger_api::principal::Authenticator;
use keyledger_api::rate_limit::RateLimits;
use keyledger_api::request_log::{RequestLog, RequestLogConfig};
use keyledger_api::{ApiError, Code, REQUEST_ID_HEADER, Route, Routes};
use keyledger_command::audit::AuditKey;
use keyledger_command::auth::AuthState;
use keyledger_command::idempotency::IdempotencyConfig;
use keyledger_command::license::policy::Policy;
use keyledger_command::{Clock, CommandState};
use keyledger_events::relay::RelayConfig;
use keyledger_events::{
    EventStore, HeadView, Notifier, PgEventStore, Projection, WriterConfig, db,
};
use keyledger_projections::license::view::ValidationView;
use keyledger_projections::runtime::RuntimeConfig;
use keyledger_query::QueryState;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_http::trace::TraceLayer;

use crate::config::Role::{self, All, Api, Command, Projector, Query, Relay};
use crate::config::ServeArgs;
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

/// What a component's start returns: it is done starting (its workers and tasks spawned).
type Started<'a> = BoxFuture<'a, anyhow::Result<()>>;

/// A piece of the service: the roles that run it, and how it starts.
struct Component {
    name: &'static str,
    roles: &'static [Role],
    start: fn(&mut Wiring) -> Started<'_>,
}

/// Every role.
const EVERY: &[Role] = &[All, Api, Command, Query, Projector, Relay];

/// What each role runs, in the order the components start; a component finds what an earlier
/// one made (the writer's store, the validation view) in the [`Wiring`]. `api` is `command`
/// and `query` together; `all` runs everything.
#[rustfmt::skip]
const COMPONENTS: &[Component] = &[
    component("notification listener",    EVERY,                        notification_listener),
    component("projection tables",        EVERY,                        projection_tables),
    component("NATS client",              EVERY,                        nats_client),
    component("projectors",               &[All, Projector],            projectors),
    component("relay",                    &[All, Relay],                relay),
    component("validation view",          &[All, Api, Command],         validation_view),
    component("append writer",            &[All, Api, Command, Query],  append_writer),
    component("rate limit pruning",       &[All, Api, Command, Query],  rate_limit_pruning),
    component("auth, OpenAPI and MCP",    &[All, Api, Command, Query],  accounts),
    component("request log writer",       &[All, Api, Command, Query],  request_log_writer),
    component("request log retention",    &[All, Projector],            request_log_retention),
    component("validation view follower", &[All, Api, Command],         view_follower),
    component("command API",              &[All, Api, Command],         command_api),
    component("checkpoint signer",        &[All, Api, Command],         checkpoint_signer),
    component("idempotency purge",        &[All, Api, Command],         idempotency_purge),
    component("session retention",        &[All, Api, Command],         session_retention),
    component("heartbeat timeouts",       &[All, Api, Command],         heartbeat_timeouts),
    component("query API",                &[All, Api, Query],           query_api),
    component("HTTP server",              EVERY,                        http_server),
];

const fn component(
    name: &'static str,
    roles: &'static [Role],
    start: fn(&mut Wiring) -> Started<'_>,
) -> Component {
    Component { name, roles, start }
}

/// What the components of one process share while they start.
struct Wiring {
    args: ServeArgs,
    clock: Clock,
    policy: Arc<Policy>,
    pool: Pool,
    read_pool: Pool,
    settings: db::PoolSettings,
    supervisor: Supervisor,
    notifier: Notifier,
    inline: Vec<Arc<dyn Projection>>,
    projections: Vec<Arc<dyn Projection>>,
    relay_config: RelayConfig,
    rate_limits: RateLimits,
    /// The MCP tools call routes through the finished router.
    tools_router: crate::mcp::RouterCell,
    router: Routes,
    nats: Option<async_nats::Client>,
    view: Option<Arc<ValidationView>>,
    store: Option<Arc<dyn EventStore>>,
    audit_key: Option<Arc<AuditKey>>,
    authenticator: Option<Authenticator>,
    request_log: Option<RequestLog>,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    /// Set by the HTTP server.
    served: Option<(SocketAddr, Vec<Route>)>,
}

impl Wiring {
    /// The writer's store (components of the roles that serve the API).
    fn store(&self) -> anyhow::Result<Arc<dyn EventStore>> {
        self.store
            .clone()
            .context("a component needs the append writer, which starts before it")
    }

    /// The validation view (components of the command roles).
    fn view(&self) -> anyhow::Result<Arc<ValidationView>> {
        self.view
            .clone()
            .context("a component needs the validation view, which starts before it")
    }

    fn merge(&mut self, routes: Routes) {
        self.router = std::mem::take(&mut self.router).merge(routes);
    }

    /// Runs `job` under the supervisor (or fails to start, if it could not be made).
    fn spawn_job(&self, job: anyhow::Result<jobs::Job>) -> Started<'static> {
        Box::pin(std::future::ready(
            job.map(|job| job.spawn(&self.supervisor)),
        ))
    }
}

/// A component that started without waiting on anything.
fn started() -> Started<'static> {
    Box::pin(std::future::ready(Ok(())))
}

fn notification_listener(w: &mut Wiring) -> Started<'_> {
    let (url, notifier) = (w.args.database.database_url.clone(), w.notifier.clone());
    w.supervisor
        .spawn_forever("notification listener", move || {
            keyledger_events::notifier::listen(url.clone(), notifier.clone())
        });
    started()
}

fn projection_tables(w: &mut Wiring) -> Started<'_> {
    Box::pin(async move {
        // A rebuild may run long statements: it gets connections without the statement
        // timeout of the serving pool.
        let startup = db::pool_with(
            &w.args.database.database_url,
            &db::PoolSettings {
                statement_timeout: None,
                ..w.settings.clone()
            },
        )?;
        keyledger_projections::runtime::prepare(&startup, &w.projections, &w.inline, &w.notifier)
            .await
    })
}

fn nats_client(w: &mut Wiring) -> Started<'_> {
    Box::pin(async move {
        if let Some(nats_url) = &w.args.nats_url {
            w.nats = Some(
                async_nats_connect(nats_url)
                    .await
                    .context("Failed to set up the NATS client")?,
            );
        }
        Ok(())
    })
}

fn projectors(w: &mut Wiring) -> Started<'_> {
    let (pool, projections, notifier) = (w.pool.clone(), w.projections.clone(), w.notifier.clone());
    w.supervisor.spawn("projectors", move || {
        keyledger_projections::runtime::run_until_stopped(
            pool.clone(),
            projections.clone(),
            notifier.clone(),
            RuntimeConfig::default(),
        )
    });
    started()
}

fn relay(w: &mut Wiring) -> Started<'_> {
    let Some(client) = w.nats.clone() else {
        tracing::warn!(
            "NATS_URL is not set: events are not published to NATS; projectors and \
             consistency waits use the in-process notifier and PostgreSQL LISTEN/NOTIFY"
        );
        return started();
    };
    let (pool, config, notifier) = (w.pool.clone(), w.relay_config.clone(), w.notifier.clone());
    w.supervisor.spawn_forever("relay", move || {
        keyledger_events::relay::run_until_stopped(
            pool.clone(),
            client.clone(),
            config.clone(),
            notifier.clone(),
        )
    });
    started()
}

/// Command nodes judge validations against the validation view, kept at the head by their
/// writer.
fn validation_view(w: &mut Wiring) -> Started<'_> {
    Box::pin(async move {
        w.view = Some(
            ValidationView::load(&w.pool)
                .await
                .context("Failed to load the validation view")?,
        );
        Ok(())
    })
}

fn append_writer(w: &mut Wiring) -> Started<'_> {
    let (url, settings) = (w.args.database.database_url.clone(), w.settings.clone());
    let (store, writer) = PgEventStore::start(
        w.pool.clone(),
        WriterConfig {
            max_batch_events: w.args.append_batch_max,
            own_thread: Some(Arc::new(move || {
                // A connection per batch in flight, and one to spare.
                db::pool_with(
                    &url,
                    &db::PoolSettings {
                        size: WriterConfig::default().concurrent_batches + 1,
                        ..settings.clone()
                    },
                )
            })),
            ..WriterConfig::default()
        },
        w.inline.clone(),
        w.view.clone().map(|v| v as Arc<dyn HeadView>),
        w.notifier.clone(),
    );
    w.tasks.push((
        "append writer",
        tokio::spawn(async move {
            writer.await.context("the append writer panicked")?;
            anyhow::bail!("the append writer stopped")
        }),
    ));
    w.store = Some(Arc::new(store));
    started()
}

fn rate_limit_pruning(w: &mut Wiring) -> Started<'_> {
    w.spawn_job(Ok(jobs::rate_limit_pruning(
        w.rate_limits.clone(),
        w.args.rate_limit_prune_interval,
    )))
}

/// Sign-in, users, the OpenAPI document and the MCP tools; API nodes sign and check access
/// tokens (worker roles serve no authenticated route).
fn accounts(w: &mut Wiring) -> Started<'_> {
    Box::pin(async move {
        let keys = Arc::new(load_jwt_keys(&w.args.jwt_key_file)?);
        let auth = AuthState {
            store: w.store()?,
            pool: w.pool.clone(),
            clock: w.clock.clone(),
            keys: keys.clone(),
            limits: w.rate_limits.clone(),
            secure_cookies: w.args.admin_cookie_secure,
        };
        let routes = keyledger_command::auth::router(auth.clone())
            .merge(keyledger_command::user::routes::router(auth))
            .merge(crate::openapi::router())
            .merge(crate::mcp::router(w.tools_router.clone()));
        w.merge(routes);
        if w.args.admin_token.is_some() {
            tracing::info!("KEYLEDGER_ADMIN_TOKEN is set: it is accepted as an admin bearer token");
        }
        w.authenticator = Some(Authenticator {
            keys,
            admin_token: w.args.admin_token.clone(),
            pool: w.pool.clone(),
            clock: w.clock.clone(),
            key_usage: Default::default(),
            license_keys: w.view.clone().map(|view| {
                Arc::new(move |digest: &[u8; 32]| view.license_id(digest))
                    as keyledger_api::principal::LicenseKeys
            }),
        });
        Ok(())
    })
}

fn request_log_writer(w: &mut Wiring) -> Started<'_> {
    Box::pin(async move {
        if !w.args.request_log_enabled {
            return Ok(());
        }
        let store = w.store()?;
        let (log, records) = RequestLog::new(RequestLogConfig {
            enabled: true,
            sample_rate: w.args.request_log_sample_rate,
            body_limit: w.args.request_log_body_limit,
            exclude: w.args.request_log_exclude.clone(),
            ..RequestLogConfig::default()
        });
        // The queue outlives a writer that fails: each run drains it through a channel of its
        // own.
        let records = Arc::new(tokio::sync::Mutex::new(records));
        w.supervisor.spawn_forever("request log writer", move || {
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
        w.request_log = Some(log);
        Ok(())
    })
}

fn request_log_retention(w: &mut Wiring) -> Started<'_> {
    w.spawn_job(Ok(jobs::request_log_retention(
        w.pool.clone(),
        w.args.request_log_retention,
    )))
}

fn view_follower(w: &mut Wiring) -> Started<'_> {
    Box::pin(async move {
        let (view, pool, notifier) = (w.view()?, w.pool.clone(), w.notifier.clone());
        w.supervisor
            .spawn_forever("validation view follower", move || {
                view.clone().follow(pool.clone(), notifier.head())
            });
        Ok(())
    })
}

fn command_api(w: &mut Wiring) -> Started<'_> {
    Box::pin(async move {
        let audit_key = Arc::new(AuditKey::new(load_signing_key(&w.args.signing_key_file)?));
        w.audit_key = Some(audit_key.clone());
        let routes = keyledger_command::router(CommandState {
            audit_key,
            store: w.store()?,
            pool: w.pool.clone(),
            clock: w.clock.clone(),
            idempotency: IdempotencyConfig {
                ttl: w.args.idempotency_ttl,
                ..IdempotencyConfig::default()
            },
            policy: w.policy.clone(),
            view: w.view()?,
            heartbeat_ttl: w.args.heartbeat_ttl,
            request_body_limit: w.args.request_log_body_limit,
        });
        w.merge(routes);
        Ok(())
    })
}

fn checkpoint_signer(w: &mut Wiring) -> Started<'_> {
    let audit_key = w
        .audit_key
        .clone()
        .context("the checkpoint signer needs the command API's signing key");
    w.spawn_job(audit_key.and_then(|audit_key| {
        Ok(jobs::checkpoint_signer(
            w.store()?,
            w.pool.clone(),
            audit_key,
            w.args.checkpoint_interval,
        ))
    }))
}

fn idempotency_purge(w: &mut Wiring) -> Started<'_> {
    w.spawn_job(Ok(jobs::idempotency_purge(
        w.pool.clone(),
        w.args.idempotency_purge_interval,
    )))
}

fn session_retention(w: &mut Wiring) -> Started<'_> {
    w.spawn_job(w.store().map(|store| {
        jobs::session_retention(
            store,
            w.pool.clone(),
            w.clock.clone(),
            w.args.session_retention,
            w.args.session_expiry_interval,
        )
    }))
}

fn heartbeat_timeouts(w: &mut Wiring) -> Started<'_> {
    w.spawn_job(w.store().map(|store| {
        jobs::heartbeat_timeouts(
            store,
            w.pool.clone(),
            w.clock.clone(),
            w.args.heartbeat_ttl,
            w.args.heartbeat_check_interval,
        )
    }))
}

fn query_api(w: &mut Wiring) -> Started<'_> {
    let routes = keyledger_query::router(QueryState {
        pool: w.read_pool.clone(),
        primary: w.pool.clone(),
        notifier: w.notifier.clone(),
        consistency_timeout: w.args.consistency_timeout(),
        read_replica: w.args.read_database_url.is_some(),
        heartbeat_ttl: w.args.heartbeat_ttl,
        clock: w.clock.clone(),
        api_description: crate::openapi::document(),
    });
    w.merge(routes);
    started()
}

/// Every role serves `/health` and `/metrics`; worker roles serve nothing else.
fn http_server(w: &mut Wiring) -> Started<'_> {
    Box::pin(async move {
        let args = &w.args;
        let health_state = HealthState {
            pool: w.pool.clone(),
            notifier: w.notifier.clone(),
            nats: w.nats.clone(),
            projections: w.projections.iter().map(|p| p.name()).collect(),
            relay_checkpoint: args
                .nats_url
                .as_ref()
                .map(|_| w.relay_config.checkpoint_name()),
            metrics: metrics_handle(),
            supervisor: w.supervisor.clone(),
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
        let (router, routes) = std::mem::take(&mut w.router)
            .merge(health::router(health_state))
            .into_parts();
        let router = with_http_layers(
            router,
            w.request_log.take(),
            w.rate_limits.clone(),
            args.request_timeout(),
            w.authenticator.take(),
        );
        w.tools_router.set(router.clone());
        let listener = TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("Failed to bind {}", args.bind))?;
        let address = listener.local_addr()?;
        w.tasks.push((
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
        w.served = Some((address, routes));
        Ok(())
    })
}

impl Application {
    /// Migrates, then starts every component of `args.role` ([`COMPONENTS`]).
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
        let relay_config = RelayConfig {
            stream: args.nats_stream.clone(),
            subject_prefix: args.nats_subject_prefix.clone(),
            head_subject: args.nats_head_subject.clone(),
            checkpoint_subject: args.nats_checkpoint_subject.clone(),
            ..RelayConfig::default()
        };
        let rate_limits = RateLimits::new(&args.rate_limits());
        let mut wiring = Wiring {
            clock,
            policy,
            pool,
            read_pool,
            settings,
            supervisor,
            notifier: Notifier::default(),
            inline: keyledger_projections::inline(),
            projections: keyledger_projections::asynchronous(),
            relay_config,
            rate_limits,
            tools_router: crate::mcp::RouterCell::default(),
            router: Routes::new(),
            nats: None,
            view: None,
            store: None,
            audit_key: None,
            authenticator: None,
            request_log: None,
            tasks: Vec::new(),
            served: None,
            args,
        };
        let role = wiring.args.role;
        for component in COMPONENTS.iter().filter(|c| c.roles.contains(&role)) {
            tracing::debug!(component = component.name, "starting");
            (component.start)(&mut wiring).await?;
        }
        let (address, routes) = wiring.served.context("every role runs the HTTP server")?;
        tracing::info!(address = %address, role = ?role, "keyledger is serving");
        Ok(Application {
            address,
            pool: wiring.pool,
            notifier: wiring.notifier,
            supervisor: wiring.supervisor,
            rate_limits: wiring.rate_limits,
            routes,
            tasks: wiring.tasks,
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
                    http.path = %keyledger_api::redact_text(request.uri().path()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(role: Role) -> Vec<&'static str> {
        COMPONENTS
            .iter()
            .filter(|c| c.roles.contains(&role))
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn each_role_runs_its_components() {
        let every = ["notification listener", "projection tables", "NATS client"];
        let writes = [
            "append writer",
            "rate limit pruning",
            "auth, OpenAPI and MCP",
            "request log writer",
        ];
        let commands = [
            "command API",
            "checkpoint signer",
            "idempotency purge",
            "session retention",
            "heartbeat timeouts",
        ];
        let command: Vec<&str> = [&every[..], &["validation view"], &writes]
            .concat()
            .into_iter()
            .chain(["validation view follower"])
            .chain(commands)
            .chain(["HTTP server"])
            .collect();
        assert_eq!(runs(Role::Command), command);
        let query: Vec<&str> = [&every[..], &writes, &["query API", "HTTP server"]].concat();
        assert_eq!(runs(Role::Query), query);
        let projector: Vec<&str> = [
            &every[..],
            &["projectors", "request log retention", "HTTP server"],
        ]
        .concat();
        assert_eq!(runs(Role::Projector), projector);
        assert_eq!(
            runs(Role::Relay),
            [&every[..], &["relay", "HTTP server"]].concat()
        );
    }

    #[test]
    fn api_is_command_and_query_together_and_all_runs_everything() {
        for component in COMPONENTS {
            assert_eq!(
                component.roles.contains(&Role::Api),
                component.roles.contains(&Role::Command) || component.roles.contains(&Role::Query),
                "{}",
                component.name
            );
            assert!(component.roles.contains(&Role::All), "{}", component.name);
        }
    }
}
