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

/// The query routes' part of the OpenAPI description (the admin hub's pages included).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        license::search::handle,
        license::search::by_key_header,
        license::search::by_key_body,
        license::get::handle,
        license::history::events,
        license::history::list_installations,
        license::usage::handle,
        request::list,
        request::get,
        session::list::handle,
        session::get::handle,
        events::all,
        events::export,
        tail::handle,
        audit::list,
        audit::latest,
        audit::keys,
        events::stream,
        admin::hub::page,
        admin::licenses::list,
        admin::licenses::detail,
        admin::requests::list,
        admin::sessions::list,
        admin::sessions::detail,
        admin::events::list,
        admin::api::page,
        admin::css,
        admin::js,
    ),
    components(schemas(
        license::get::LicenseView,
        license::search::LicensePage,
        license::search::ByKeyRequest,
        license::history::InstallationView,
        license::history::InstallationPage,
        license::usage::UsageItem,
        license::usage::UsagePage,
        events::EventView,
        events::EventPage,
        request::RequestView,
        request::RequestPage,
        request::RequestDetail,
        session::SessionView,
        session::get::Transition,
        session::get::SessionDetail,
        session::list::SessionPage,
        audit::CheckpointViewSchema,
        audit::CheckpointPage,
        audit::KeySetSchema,
        audit::PublicKeySchema,
    ))
)]
pub struct QueryApi;

/// The `X-Consistency-Position` header of the query routes that read projections.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ConsistencyHeader {
    /// A position from a command's answer: the read waits until the projections it reads have
    /// applied it (up to `CONSISTENCY_TIMEOUT`, then 503 `SYS_CONSISTENCY_TIMEOUT`). A
    /// position past the log's head is refused (400).
    #[param(rename = "X-Consistency-Position", minimum = 0, nullable = false)]
    consistency_position: Option<i64>,
}

/// `?as_of=` of the reads of one license or session.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AsOfParams {
    /// The instant (RFC 3339): the license or session as it stood then, folded from its events.
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
}

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
    /// The service's OpenAPI description, for the admin hub's API reference.
    pub api_description: Arc<utoipa::openapi::OpenApi>,
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
        let known = projections
            .iter()
            .all(|name| *self.notifier.watch_checkpoint(name).borrow() >= position);
        if !known {
            // A position past the log's head was never handed out: refuse it rather than wait.
            let client = self.primary.get().await.map_err(ApiError::from)?;
            let head = keyledger_events::store::head_on(&client)
                .await
                .map_err(ApiError::from)?;
            if position > head {
                return Err(ApiError::invalid_parameter(
                    "X-Consistency-Position",
                    format!("no event has position {position}: the log's head is {head}"),
                ));
            }
        }
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
