//! `GET /v1/licenses/{id}/events` (the license's full history for auditors) and
//! `GET /v1/licenses/{id}/installations` (its machines, alive or not).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppPath, AppQuery, Code, ConsistencyPosition};
use keyledger_events::license::license_stream;
use keyledger_projections::license::{installations, licenses};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::events::{EventPage, LogParams, read_stream};
use crate::{ConsistencyHeader, QueryState, page_limit};

/// Reads a license's events, oldest first: its full history, for auditors.
#[utoipa::path(
    get,
    path = "/v1/licenses/{id}/events",
    tag = "licenses",
    params(
        ("id" = Uuid, Path, description = "The license's id."),
        ("after" = Option<i64>, Query, description = "Read the events after this version of the license's stream (default 0: from the first; a negative value counts as 0)."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Events per page: 1 to 1000 (default 100)."),
    ),
    responses(
        (status = 200, description = "A page of the license's events; `next_after` is a stream version.", body = EventPage),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id (asked from the start, `after` 0)."),
        (status = 503, description = "`SYS_CONSISTENCY_TIMEOUT`: the read tables did not catch up with the license in time."),
    ),
)]
pub async fn events(
    State(state): State<QueryState>,
    AppPath(license_id): AppPath<Uuid>,
    AppQuery(params): AppQuery<LogParams>,
) -> Result<Json<EventPage>, ApiError> {
    let after = params.after.unwrap_or(0).max(0);
    let limit = page_limit(params.limit, 100, 1000)?;
    let stream = license_stream(license_id);
    // On a replica the log may lag: wait for the licenses table, applied after the log.
    let events = state
        .found(
            &stream,
            &[licenses::NAME],
            |client| {
                let stream = &stream;
                async move {
                    let events = read_stream(&client, stream, after, limit).await?;
                    Ok((!events.is_empty() || after > 0).then_some(events))
                }
            },
            || ApiError::not_found(Code::ResLicenseNotFound, "no license has this id"),
        )
        .await?;
    let next_after = events.last().map_or(after, |e| e.version);
    Ok(Json(EventPage { events, next_after }))
}

/// A machine the license is activated on.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstallationView {
    pub installation_id: String,
    pub hostname: Option<String>,
    /// The client's JSON object.
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub activated_at: DateTime<Utc>,
    pub last_seen: Option<DateTime<Utc>>,
    /// Active and heard from within `HEARTBEAT_TTL`.
    pub alive: bool,
}

/// A license's active installations (all of them: one page).
#[derive(Debug, Serialize, ToSchema)]
pub struct InstallationPage {
    pub items: Vec<InstallationView>,
    /// Always `null`: every active installation is on the one page.
    pub next_cursor: Option<String>,
}

pub async fn active_installations(
    client: &impl GenericClient,
    license_id: Uuid,
    alive_after: DateTime<Utc>,
) -> Result<Vec<InstallationView>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "SELECT installation_id, hostname, metadata, activated_at, last_seen, \
                    coalesce(last_seen, activated_at) >= $2 \
             FROM installations WHERE license_id = $1 AND active ORDER BY activated_at",
        )
        .await?;
    client
        .query(&statement, &[&license_id, &alive_after])
        .await?
        .iter()
        .map(|row| {
            Ok(InstallationView {
                installation_id: row.try_get(0)?,
                hostname: row.try_get(1)?,
                metadata: row.try_get(2)?,
                activated_at: row.try_get(3)?,
                last_seen: row.try_get(4)?,
                alive: row.try_get(5)?,
            })
        })
        .collect()
}

/// Lists a license's active installations, alive or not.
#[utoipa::path(
    get,
    path = "/v1/licenses/{id}/installations",
    tag = "licenses",
    params(("id" = Uuid, Path, description = "The license's id."), ConsistencyHeader),
    responses(
        (status = 200, description = "The license's active installations, oldest activation first.", body = InstallationPage),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id."),
    ),
)]
pub async fn list_installations(
    State(state): State<QueryState>,
    ConsistencyPosition(position): ConsistencyPosition,
    AppPath(license_id): AppPath<Uuid>,
) -> Result<Json<InstallationPage>, ApiError> {
    let projections = [installations::NAME, licenses::NAME];
    state.consistent(&projections, position).await?;
    super::get::require(&state, license_id, &projections).await?;
    let client = state.client().await?;
    let ttl =
        chrono::Duration::from_std(state.heartbeat_ttl).unwrap_or(chrono::Duration::minutes(10));
    let items = active_installations(&client, license_id, (state.clock)() - ttl)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(InstallationPage {
        items,
        next_cursor: None,
    }))
}
