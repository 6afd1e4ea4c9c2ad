//! `/health/live`, `/health/ready`, `/health` (components and lags) and `/metrics`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use deadpool_postgres::Pool;
use keyledger_events::Notifier;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::json;

#[derive(Clone)]
pub struct HealthState {
    pub pool: Pool,
    pub notifier: Notifier,
    pub nats: Option<async_nats::Client>,
    pub projections: Vec<&'static str>,
    pub relay_checkpoint: Option<String>,
    pub metrics: PrometheusHandle,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/startup", get(ready))
        .route("/health/ready", get(ready))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn live() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when PostgreSQL answers (migrations ran before the server started).
async fn ready(State(state): State<HealthState>) -> impl IntoResponse {
    match postgres_head(&state.pool).await {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "postgres": error})),
        ),
    }
}

async fn postgres_head(pool: &Pool) -> Result<i64, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    keyledger_events::store::head_on(&client)
        .await
        .map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct Consumer {
    name: String,
    /// `ok`, or `degraded` while it is failing or has set events aside.
    status: &'static str,
    position: i64,
    /// Events committed but not yet applied (or published).
    lag: i64,
    /// Since when its steps fail (absent when the last one succeeded).
    #[serde(skip_serializing_if = "Option::is_none")]
    failing_since: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// Events it could not handle and went on past (`projection_parked`); a rebuild tries
    /// them again.
    parked: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    parked_positions: Vec<i64>,
}

/// A consumer's row of `checkpoints`, with what it set aside.
#[derive(Default, Clone)]
struct CheckpointRow {
    position: i64,
    failing_since: Option<chrono::DateTime<chrono::Utc>>,
    last_error: Option<String>,
    parked: i64,
    parked_positions: Vec<i64>,
}

const CHECKPOINTS: &str = "SELECT c.name, c.position, c.failing_since, c.last_error, \
       (SELECT count(*) FROM projection_parked p WHERE p.projection = c.name), \
       ARRAY(SELECT p.position FROM projection_parked p WHERE p.projection = c.name \
             ORDER BY p.position DESC LIMIT 10) \
     FROM checkpoints c";

fn checkpoint_row(row: &tokio_postgres::Row) -> Option<(String, CheckpointRow)> {
    Some((
        row.try_get(0).ok()?,
        CheckpointRow {
            position: row.try_get(1).ok()?,
            failing_since: row.try_get(2).ok()?,
            last_error: row.try_get(3).ok()?,
            parked: row.try_get(4).ok()?,
            parked_positions: row.try_get(5).ok()?,
        },
    ))
}

async fn health(State(state): State<HealthState>) -> impl IntoResponse {
    let head = postgres_head(&state.pool).await;
    let nats = match &state.nats {
        None => json!({"status": "not_configured", "detail": "in-process notifier"}),
        Some(client) => match client.connection_state() {
            async_nats::connection::State::Connected => json!({"status": "up"}),
            other => json!({"status": "down", "detail": other.to_string()}),
        },
    };
    let Ok(head) = head else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "components": {"postgres": {"status": "down"}, "nats": nats},
            })),
        );
    };
    let checkpoints = match state.pool.get().await {
        Ok(client) => client
            .query(CHECKPOINTS, &[])
            .await
            .map(|rows| rows.iter().filter_map(checkpoint_row).collect::<Vec<_>>())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let consumer = |name: &str| {
        let row = checkpoints
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, row)| row.clone())
            .unwrap_or_default();
        let degraded = row.failing_since.is_some() || row.parked > 0;
        Consumer {
            name: name.to_owned(),
            status: if degraded { "degraded" } else { "ok" },
            position: row.position,
            lag: (head - row.position).max(0),
            failing_since: row.failing_since,
            last_error: row.last_error.filter(|_| degraded),
            parked: row.parked,
            parked_positions: row.parked_positions,
        }
    };
    let projections: Vec<Consumer> = state.projections.iter().map(|n| consumer(n)).collect();
    let relay = state.relay_checkpoint.as_deref().map(consumer);
    let degraded: Vec<&str> = projections
        .iter()
        .chain(relay.iter())
        .filter(|c| c.status != "ok")
        .map(|c| c.name.as_str())
        .collect();
    (
        StatusCode::OK,
        Json(json!({
            "status": if degraded.is_empty() { "ok" } else { "degraded" },
            "degraded": degraded,
            "head": head,
            "components": {
                "postgres": {"status": "up"},
                "nats": nats,
                "projections": projections,
                "relay": relay,
            },
        })),
    )
}

async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
