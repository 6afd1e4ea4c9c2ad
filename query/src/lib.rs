//! The read side: HTTP query routes over the projections and the ordered log, with
//! consistency-position waits.

pub mod admin;
pub mod audit;
pub mod cursor;
pub mod events;
pub mod found;
pub mod license;
pub mod request;
pub mod session;
pub mod tail;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use deadpool_postgres::Pool;
use keyledger_api::{ApiError, Code, Routes};
use keyledger_events::Notifier;
use keyledger_projections::consistency::{WaitError, wait_for};

#[derive(Clone)]
pub struct QueryState {
    /// Reads (a replica's pool when `READ_DATABASE_URL` is set).
    pub pool: Pool,
    /// The primary, whose log holds every committed event (the same pool as `pool` without
    /// a replica): where a query looks before it answers 404.
    pub primary: Pool,
    pub notifier: Notifier,
    /// Longest wait for `X-Consistency-Position`.
    pub consistency_timeout: Duration,
    /// `pool` is a read replica: confirm checkpoints there, not from notifications.
    pub read_replica: bool,
    /// An installation not heard from this long is shown as not alive.
    pub heartbeat_ttl: Duration,
    pub clock: Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>,
}

pub fn router(state: QueryState) -> Routes {
    Routes::new()
        .get("/v1/licenses", license::search::handle)
        .get("/v1/licenses/by-key", license::search::by_key_header)
        .post("/v1/licenses/by-key", license::search::by_key_body)
        .get("/v1/licenses/{id}", license::get::handle)
        .get("/v1/licenses/{id}/events", license::history::events)
        .get(
            "/v1/licenses/{id}/installations",
            license::history::list_installations,
        )
        .get("/v1/licenses/{id}/usage", license::usage::handle)
        .get("/v1/requests", request::list)
        .get("/v1/requests/{id}", request::get)
        .get("/v1/sessions", session::list::handle)
        .get("/v1/sessions/{id}", session::get::handle)
        .get("/v1/events", events::all)
        .get("/v1/events/export", events::export)
        .get("/v1/events/stream", tail::handle)
        .get("/v1/checkpoints", audit::list)
        .get("/v1/checkpoints/latest", audit::latest)
        .get("/.well-known/keyledger-keys.json", audit::keys)
        .get("/v1/streams/{stream_id}/events", events::stream)
        .with_state(state.clone())
        .merge(admin::router(state))
}

impl QueryState {
    /// Waits until `projections` have applied `position` (no wait without a position).
    pub async fn consistent(
        &self,
        projections: &[&str],
        position: Option<i64>,
    ) -> Result<(), ApiError> {
        let Some(position) = position else {
            return Ok(());
        };
        wait_for(
            &self.pool,
            &self.notifier,
            projections,
            position,
            self.consistency_timeout,
            self.read_replica,
        )
        .await
        .map_err(|e| match e {
            WaitError::TimedOut { .. } => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Code::SysConsistencyTimeout,
                    e.to_string(),
                )
            },
            WaitError::Database(cause) => ApiError::unavailable(cause),
        })
    }

    pub async fn client(&self) -> Result<deadpool_postgres::Object, ApiError> {
        self.pool.get().await.map_err(ApiError::from)
    }
}

/// `limit` with a default and a maximum.
pub fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid_parameter(
            "limit",
            format!("must be between 1 and {max}"),
        )),
    }
}
