//! The write side: pure aggregates (decide/apply), the command execution loop with optimistic
//! concurrency, and the HTTP command routes.

pub mod api_key;
pub mod audit;
pub mod auth;
pub mod execute;
pub mod handler;
pub mod idempotency;
pub mod ingest;
pub mod license;
pub mod metadata;
pub mod session;
#[cfg(test)]
mod spec;
pub mod user;
pub mod values;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::post;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use keyledger_api::Routes;
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
    /// Signs license certificates (and, in its own job, the log's checkpoints).
    pub audit_key: Arc<audit::AuditKey>,
    /// For the inline validation table.
    pub pool: Pool,
    pub clock: Clock,
    pub idempotency: idempotency::IdempotencyConfig,
    pub policy: Arc<license::policy::Policy>,
    /// The validation view the writer keeps at the head (the same one it was started with).
    pub view: Arc<keyledger_projections::license::view::ValidationView>,
    /// An installation without a heartbeat this long is dead.
    pub heartbeat_ttl: std::time::Duration,
    /// Characters kept of each request and response body in the request log.
    pub request_body_limit: usize,
}

impl CommandState {
    /// Now, to the microsecond the log keeps.
    pub fn now(&self) -> DateTime<Utc> {
        keyledger_events::chain::to_micros((self.clock)())
    }
}

/// The command side's routes in the OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    license::issue::handle,
    license::validate::handle,
    license::revoke::handle,
    license::lifecycle::suspend,
    license::lifecycle::reinstate,
    license::lifecycle::renew,
    license::lifecycle::change_policy,
    license::installations::activate,
    license::installations::deactivate,
    license::installations::heartbeat,
    license::certificate::handle,
    ingest::handle,
    session::create::handle,
    session::update::handle,
    session::transition::handle,
    api_key::create,
    api_key::list,
    api_key::get,
    api_key::revoke,
))]
pub struct CommandApi;

pub fn router(state: CommandState) -> Routes {
    Routes::new()
        .post("/v1/licenses", license::issue::handle)
        .post("/v1/licenses/validate", license::validate::handle)
        .post("/v1/licenses/{id}/revoke", license::revoke::handle)
        .post("/v1/licenses/{id}/suspend", license::lifecycle::suspend)
        .post("/v1/licenses/{id}/reinstate", license::lifecycle::reinstate)
        .post("/v1/licenses/{id}/renew", license::lifecycle::renew)
        .post(
            "/v1/licenses/{id}/policy",
            license::lifecycle::change_policy,
        )
        .post(
            "/v1/licenses/{id}/installations",
            license::installations::activate,
        )
        .post(
            "/v1/licenses/{id}/certificate",
            license::certificate::handle,
        )
        .delete(
            "/v1/licenses/{id}/installations/{installation_id}",
            license::installations::deactivate,
        )
        .post(
            "/v1/licenses/{id}/installations/{installation_id}/heartbeat",
            license::installations::heartbeat,
        )
        .on(
            Method::POST,
            "/v1/requests",
            post(ingest::handle).layer(DefaultBodyLimit::max(ingest::BODY_LIMIT)),
        )
        .post("/v1/sessions", session::create::handle)
        .patch("/v1/sessions/{id}", session::update::handle)
        .post("/v1/sessions/{id}/transition", session::transition::handle)
        .map(|router| {
            router
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    idempotency::layer,
                ))
                .layer(DefaultBodyLimit::max(BODY_LIMIT))
        })
        .with_state(state.clone())
        // Outside the Idempotency-Key layer: a new key's answer must not be stored.
        .merge(api_key::router(state))
}
