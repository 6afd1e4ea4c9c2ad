//! `/health/live`, `/health/ready`, `/health` (components, readers' lags and stuck readers,
//! supervised workers) and `/metrics`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use deadpool_postgres::Pool;
use keyledger_api::Routes;
use keyledger_events::Notifier;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::supervise::{Supervisor, WorkerReport};

/// The probes' and the metrics' part of the OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(live, startup, ready, health, metrics),
    components(schemas(
        ProbeStatus,
        ReadyUnavailable,
        HealthReport,
        HealthUnavailable,
        HealthComponents,
        UnavailableComponents,
        UpStatus,
        DownStatus,
        NatsStatus,
        Consumer,
        WorkerReport,
    ))
)]
pub struct HealthApi;

/// `{"status": "ok"}`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ProbeStatus {
    #[schema(pattern = "^ok$", example = "ok")]
    status: String,
}

/// PostgreSQL does not answer.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ReadyUnavailable {
    #[schema(pattern = "^unavailable$", example = "unavailable")]
    status: String,
    /// Why PostgreSQL cannot be reached.
    postgres: String,
}

/// The service's health: each component, the readers of the log and the workers.
#[derive(ToSchema)]
#[allow(dead_code)]
struct HealthReport {
    /// `degraded` when a reader or a worker is not well (`degraded` says which).
    #[schema(pattern = "^(ok|degraded)$", example = "ok")]
    status: String,
    /// The log's head position.
    head: i64,
    /// What is not well, one line each (empty when `status` is `ok`).
    degraded: Vec<String>,
    components: HealthComponents,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct HealthComponents {
    postgres: UpStatus,
    nats: NatsStatus,
    /// The projections, by name.
    projections: Vec<Consumer>,
    /// The relay to NATS; `null` when this process runs none.
    #[schema(required = true)]
    relay: Option<Consumer>,
    workers: Vec<WorkerReport>,
}

/// PostgreSQL does not answer: the rest is not read.
#[derive(ToSchema)]
#[allow(dead_code)]
struct HealthUnavailable {
    #[schema(pattern = "^unavailable$", example = "unavailable")]
    status: String,
    components: UnavailableComponents,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct UnavailableComponents {
    postgres: DownStatus,
    nats: NatsStatus,
    workers: Vec<WorkerReport>,
}

/// `{"status": "up"}`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct UpStatus {
    #[schema(pattern = "^up$", example = "up")]
    status: String,
}

/// `{"status": "down"}`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct DownStatus {
    #[schema(pattern = "^down$", example = "down")]
    status: String,
}

/// The NATS connection.
#[derive(ToSchema)]
#[allow(dead_code)]
struct NatsStatus {
    /// `not_configured` (the in-process notifier), `up` or `down`.
    #[schema(pattern = "^(not_configured|up|down)$", example = "up")]
    status: String,
    /// Why, when it is not `up`.
    detail: Option<String>,
}

#[derive(Clone)]
pub struct HealthState {
    pub pool: Pool,
    pub notifier: Notifier,
    pub nats: Option<async_nats::Client>,
    pub projections: Vec<&'static str>,
    pub relay_checkpoint: Option<String>,
    pub metrics: PrometheusHandle,
    /// The background workers of this process.
    pub supervisor: Supervisor,
    /// A reader behind the log whose checkpoint has not moved this long is stuck.
    pub stuck_after: Duration,
}

pub fn router(state: HealthState) -> Routes {
    Routes::new()
        .get("/health/live", live)
        .get("/health/startup", startup)
        .get("/health/ready", ready)
        .get("/health", health)
        .get("/metrics", metrics)
        .with_state(state)
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    responses((status = 200, description = "Alive.", body = ProbeStatus)),
)]
async fn live() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: PostgreSQL answers (migrations ran before the server started).
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready.", body = ProbeStatus),
        (status = 503, description = "PostgreSQL does not answer.", body = ReadyUnavailable),
    ),
)]
async fn ready(State(state): State<HealthState>) -> impl IntoResponse {
    match postgres_head(&state.pool).await {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "postgres": error})),
        ),
    }
}

/// Startup: the same check as readiness, for the orchestrator's startup probe.
#[utoipa::path(
    get,
    path = "/health/startup",
    tag = "health",
    responses(
        (status = 200, description = "Started.", body = ProbeStatus),
        (status = 503, description = "PostgreSQL does not answer.", body = ReadyUnavailable),
    ),
)]
async fn startup(state: State<HealthState>) -> impl IntoResponse {
    ready(state).await
}

async fn postgres_head(pool: &Pool) -> Result<i64, String> {
    bounded(pool, async {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        keyledger_events::store::head_on(&client)
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

/// A probe answers within the pool's wait timeout: a PostgreSQL that hangs (its connections
/// open, its answers never coming) reads as down, not as a probe that never returns.
async fn bounded<T>(
    pool: &Pool,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let bound = pool.timeouts().wait.unwrap_or(Duration::from_secs(5));
    tokio::time::timeout(bound, work)
        .await
        .unwrap_or_else(|_| Err(format!("PostgreSQL did not answer within {bound:?}")))
}

/// One reader of the log (a projection or the relay), as its checkpoint row says: read from
/// the database, so any node shows every reader whichever process runs it.
#[derive(Serialize, ToSchema)]
struct Consumer {
    name: String,
    /// `ok`; `failing` while its steps fail (`last_error`); `stuck`: behind the log with a
    /// checkpoint that has not moved for longer than `PROJECTION_STUCK_AFTER`; `degraded`:
    /// working, but it went past events it could not handle (`parked_positions`).
    #[schema(value_type = String, pattern = "^(ok|failing|stuck|degraded)$", example = "ok")]
    status: &'static str,
    position: i64,
    head: i64,
    /// Events committed but not yet applied (or published).
    lag: i64,
    /// When the checkpoint last moved, and how many seconds ago.
    updated_at: Option<String>,
    checkpoint_age_seconds: Option<f64>,
    /// How long the oldest event past the checkpoint has waited, in seconds.
    behind_seconds: Option<f64>,
    /// Since when its steps fail (absent once one succeeds), and the last failure.
    failing_since: Option<chrono::DateTime<chrono::Utc>>,
    last_error: Option<String>,
    last_error_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Events it could not handle and went on past (`projection_parked`), newest first (at
    /// most 10 listed); `keyledger projections rebuild` tries them again.
    parked: i64,
    parked_positions: Vec<i64>,
}

/// The checkpoints of `$1`, with the age of each and of the oldest event past it, and what
/// each set aside.
const CHECKPOINTS: &str = "SELECT c.name, c.position, c.updated_at, \
            extract(epoch FROM now() - c.updated_at)::float8 AS age, \
            extract(epoch FROM now() - ( \
              SELECT e.recorded_at FROM events e WHERE e.position > c.position \
              ORDER BY e.position LIMIT 1))::float8 AS behind, \
            c.failing_since, c.last_error, c.last_error_at, \
            (SELECT count(*) FROM projection_parked p WHERE p.projection = c.name), \
            ARRAY(SELECT p.position FROM projection_parked p WHERE p.projection = c.name \
                  ORDER BY p.position DESC LIMIT 10) \
     FROM checkpoints c WHERE c.name = ANY($1)";

async fn consumers(
    pool: &Pool,
    names: &[String],
    head: i64,
    stuck_after: Duration,
) -> Result<Vec<Consumer>, String> {
    let rows = bounded(pool, async {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        client
            .query(CHECKPOINTS, &[&names])
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    let stuck_after = stuck_after.as_secs_f64();
    let mut consumers = Vec::with_capacity(names.len());
    for name in names {
        let row = rows
            .iter()
            .find(|r| r.try_get::<_, String>(0).is_ok_and(|n| &n == name));
        let position = row.and_then(|r| r.try_get::<_, i64>(1).ok()).unwrap_or(0);
        let updated_at: Option<chrono::DateTime<chrono::Utc>> = row.and_then(|r| r.try_get(2).ok());
        let age: Option<f64> = row.and_then(|r| r.try_get(3).ok());
        let behind: Option<f64> = row.and_then(|r| r.try_get(4).ok());
        let failing_since: Option<chrono::DateTime<chrono::Utc>> =
            row.and_then(|r| r.try_get(5).ok());
        let parked: i64 = row.and_then(|r| r.try_get(8).ok()).unwrap_or(0);
        let lag = (head - position).max(0);
        let stuck = lag > 0
            && age.is_some_and(|a| a > stuck_after)
            && behind.is_some_and(|b| b > stuck_after);
        let status = if failing_since.is_some() {
            "failing"
        } else if stuck {
            "stuck"
        } else if parked > 0 {
            "degraded"
        } else {
            "ok"
        };
        consumers.push(Consumer {
            name: name.clone(),
            status,
            position,
            head,
            lag,
            updated_at: updated_at.map(|at| at.to_rfc3339()),
            checkpoint_age_seconds: age,
            behind_seconds: behind,
            failing_since,
            last_error: row.and_then(|r| r.try_get(6).ok()),
            last_error_at: row.and_then(|r| r.try_get(7).ok()),
            parked,
            parked_positions: row.and_then(|r| r.try_get(9).ok()).unwrap_or_default(),
        });
    }
    Ok(consumers)
}

/// The service's health: components, the log's readers with their lags, and the workers.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses(
        (status = 200, description = "The health report (`status` `degraded` still answers 200).", body = HealthReport),
        (status = 503, description = "PostgreSQL does not answer.", body = HealthUnavailable),
    ),
)]
async fn health(State(state): State<HealthState>) -> impl IntoResponse {
    let head = postgres_head(&state.pool).await;
    let nats = match &state.nats {
        None => json!({"status": "not_configured", "detail": "in-process notifier"}),
        Some(client) => match client.connection_state() {
            async_nats::connection::State::Connected => json!({"status": "up"}),
            other => json!({"status": "down", "detail": other.to_string()}),
        },
    };
    let workers = state.supervisor.report();
    let Ok(head) = head else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "components": {
                    "postgres": {"status": "down"},
                    "nats": nats,
                    "workers": workers,
                },
            })),
        );
    };
    let mut names: Vec<String> = state.projections.iter().map(|n| (*n).to_owned()).collect();
    if let Some(relay) = &state.relay_checkpoint {
        names.push(relay.clone());
    }
    let mut degraded: Vec<String> = Vec::new();
    let (mut projections, relay) =
        match consumers(&state.pool, &names, head, state.stuck_after).await {
            Ok(mut all) => {
                let relay = match state.relay_checkpoint {
                    Some(_) => all.pop(),
                    None => None,
                };
                (all, relay)
            }
            Err(error) => {
                degraded.push(format!("checkpoints: cannot be read: {error}"));
                (Vec::new(), None)
            }
        };
    projections.sort_by(|a, b| a.name.cmp(&b.name));
    for consumer in projections.iter().chain(relay.as_ref()) {
        if consumer.status != "ok" {
            degraded.push(format!(
                "{}: {} at {} of {} (checkpoint unmoved for {:.0} s; {} events set aside){}",
                consumer.name,
                consumer.status,
                consumer.position,
                consumer.head,
                consumer.checkpoint_age_seconds.unwrap_or(0.0),
                consumer.parked,
                consumer
                    .last_error
                    .as_deref()
                    .filter(|_| consumer.status != "ok")
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default(),
            ));
        }
    }
    for worker in &workers {
        if worker.status != "up" {
            degraded.push(format!(
                "worker {}: {} after {} restarts{}",
                worker.name,
                worker.status,
                worker.restarts,
                worker
                    .last_failure
                    .as_deref()
                    .map(|f| format!("; last failure: {f}"))
                    .unwrap_or_default(),
            ));
        }
    }
    (
        StatusCode::OK,
        Json(json!({
            "status": if degraded.is_empty() { "ok" } else { "degraded" },
            "head": head,
            "degraded": degraded,
            "components": {
                "postgres": {"status": "up"},
                "nats": nats,
                "projections": projections,
                "relay": relay,
                "workers": workers,
            },
        })),
    )
}

/// The Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "The metrics in the Prometheus text format (0.0.4).", content_type = "text/plain", body = String),
    ),
)]
async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
