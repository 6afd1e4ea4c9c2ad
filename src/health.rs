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
    position: i64,
    /// Events committed but not yet applied (or published).
    lag: i64,
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
            .query("SELECT name, position FROM checkpoints", &[])
            .await
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| {
                        Some((
                            r.try_get::<_, String>(0).ok()?,
                            r.try_get::<_, i64>(1).ok()?,
                        ))
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let consumer = |name: &str| {
        let position = checkpoints
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, p)| *p);
        Consumer {
            name: name.to_owned(),
            position,
            lag: (head - position).max(0),
        }
    };
    let projections: Vec<Consumer> = state.projections.iter().map(|n| consumer(n)).collect();
    let relay = state.relay_checkpoint.as_deref().map(consumer);
    (
        StatusCode::OK,
        Json(json!({
            "status": "ok",
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
