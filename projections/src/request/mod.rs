//! `api_requests`: the request viewer's table.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use keyledger_events::request::RequestEvent;
use keyledger_events::{Envelope, EventPayload, Projection, ProjectionError};
use uuid::Uuid;

pub struct ApiRequests;

pub const NAME: &str = "api_requests";

#[async_trait]
impl Projection for ApiRequests {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["api_requests"]
    }

    fn event_types(&self) -> &'static [&'static str] {
        RequestEvent::EVENT_TYPES
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut rows = Rows::default();
        for envelope in events {
            if let Some(RequestEvent::ApiRequestRecorded(r)) = RequestEvent::decode(envelope)? {
                rows.record_ids.push(r.record_id);
                rows.request_ids.push(r.request_id);
                rows.services.push(r.service);
                rows.methods.push(r.method);
                rows.routes.push(r.route);
                rows.paths.push(r.path);
                rows.queries.push(r.query);
                rows.callers.push(r.caller);
                rows.statuses.push(i32::from(r.status));
                rows.durations.push(r.duration_ms);
                rows.request_bodies.push(r.request_body);
                rows.response_bodies.push(r.response_body);
                rows.at.push(r.at);
                rows.positions.push(envelope.position);
            }
        }
        if rows.record_ids.is_empty() {
            return Ok(());
        }
        let statement = tx
            .prepare_cached(
                "INSERT INTO api_requests (record_id, request_id, service, method, route, path, \
                     query, caller, status, duration_ms, request_body, response_body, at, position) \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                     $6::text[], $7::text[], $8::text[], $9::int[], $10::float8[], $11::text[], \
                     $12::text[], $13::timestamptz[], $14::bigint[])",
            )
            .await?;
        tx.execute(
            &statement,
            &[
                &rows.record_ids,
                &rows.request_ids,
                &rows.services,
                &rows.methods,
                &rows.routes,
                &rows.paths,
                &rows.queries,
                &rows.callers,
                &rows.statuses,
                &rows.durations,
                &rows.request_bodies,
                &rows.response_bodies,
                &rows.at,
                &rows.positions,
            ],
        )
        .await?;
        Ok(())
    }
}

#[derive(Default)]
struct Rows {
    record_ids: Vec<Uuid>,
    request_ids: Vec<String>,
    services: Vec<String>,
    methods: Vec<String>,
    routes: Vec<Option<String>>,
    paths: Vec<String>,
    queries: Vec<Option<String>>,
    callers: Vec<Option<String>>,
    statuses: Vec<i32>,
    durations: Vec<f64>,
    request_bodies: Vec<Option<String>>,
    response_bodies: Vec<Option<String>>,
    at: Vec<DateTime<Utc>>,
    positions: Vec<i64>,
}

/// Deletes rows older than `before`; the event log keeps the records.
pub async fn prune(pool: &deadpool_postgres::Pool, before: DateTime<Utc>) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    Ok(client
        .execute("DELETE FROM api_requests WHERE at < $1", &[&before])
        .await?)
}
