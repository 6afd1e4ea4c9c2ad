//! The write side: pure aggregates (decide/apply), the command execution loop with optimistic
//! concurrency, and the HTTP command routes.

pub mod auth;
pub mod execute;
pub mod idempotency;
pub mod ingest;
pub mod license;
pub mod metadata;
pub mod session;
pub mod user;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, patch, post};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use keyledger_events::EventStore;

/// The current time, injectable so tests can move it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// Largest command body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct CommandState {
    pub store: Arc<dyn EventStore>,
    /// For the inline validation table.
    pub pool: Pool,
    pub clock: Clock,
    pub idempotency: idempotency::IdempotencyConfig,
    pub policy: Arc<license::policy::Policy>,
    /// An installation without a heartbeat this long is dead.
    pub heartbeat_ttl: std::time::Duration,
    /// Characters kept of each request and response body in the request log.
    pub request_body_limit: usize,
}

pub fn router(state: CommandState) -> Router {
    Router::new()
        .route("/v1/licenses", post(license::issue::handle))
        .route("/v1/licenses/validate", post(license::validate::handle))
        .route("/v1/licenses/{id}/revoke", post(license::revoke::handle))
        .route(
            "/v1/licenses/{id}/suspend",
            post(license::lifecycle::suspend),
        )
        .route(
            "/v1/licenses/{id}/reinstate",
            post(license::lifecycle::reinstate),
        )
        .route("/v1/licenses/{id}/renew", post(license::lifecycle::renew))
        .route(
            "/v1/licenses/{id}/policy",
            post(license::lifecycle::change_policy),
        )
        .route(
            "/v1/licenses/{id}/installations",
            post(license::installations::activate),
        )
        .route(
            "/v1/licenses/{id}/installations/{installation_id}",
            delete(license::installations::deactivate),
        )
        .route(
            "/v1/licenses/{id}/installations/{installation_id}/heartbeat",
            post(license::installations::heartbeat),
        )
        .route(
            "/v1/requests",
            post(ingest::handle).layer(DefaultBodyLimit::max(ingest::BODY_LIMIT)),
        )
        .route("/v1/sessions", post(session::create::handle))
        .route("/v1/sessions/{id}", patch(session::update::handle))
        .route(
            "/v1/sessions/{id}/transition",
            post(session::transition::handle),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
