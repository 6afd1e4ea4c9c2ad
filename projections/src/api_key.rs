//! `api_keys` (key hash → key, scopes and state), maintained inline in the append transaction:
//! a key created works at once, and a revoked key is refused by the very next request.
//!
//! `last_used_at` is the one column no event writes: the authenticator stamps it (at most once
//! a minute per key) when a key authenticates a request. Usage is not history; a rebuild of
//! this projection forgets it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use keyledger_events::api_key::ApiKeyEvent;
use keyledger_events::{Envelope, EventPayload, Projection, ProjectionError};
use uuid::Uuid;

pub struct ApiKeys;

pub const NAME: &str = "api_keys";

#[async_trait]
impl Projection for ApiKeys {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["api_keys"]
    }

    fn event_types(&self) -> &'static [&'static str] {
        ApiKeyEvent::EVENT_TYPES
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        // Keys change rarely: one statement per event, in order.
        for envelope in events {
            if let Some(event) = ApiKeyEvent::decode(envelope)? {
                apply_event(tx, envelope.position, event).await?;
            }
        }
        Ok(())
    }
}

async fn apply_event(
    tx: &Transaction<'_>,
    position: i64,
    event: ApiKeyEvent,
) -> Result<(), ProjectionError> {
    match event {
        ApiKeyEvent::ApiKeyCreated(e) => {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO api_keys (api_key_id, name, prefix, key_hash, scopes, \
                                           created_by, created_at, position) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await?;
            tx.execute(
                &statement,
                &[
                    &e.api_key_id,
                    &e.name,
                    &e.prefix,
                    &e.key_hash,
                    &e.scopes,
                    &e.created_by,
                    &e.at,
                    &position,
                ],
            )
            .await?;
        }
        ApiKeyEvent::ApiKeyRevoked(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = $2, position = $3 WHERE api_key_id = $1",
                )
                .await?;
            tx.execute(&statement, &[&e.api_key_id, &e.at, &position])
                .await?;
        }
    }
    Ok(())
}

/// An API key as listings show it (never its hash).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "api_key_id, name, prefix, scopes, created_by, created_at, revoked_at, last_used_at";

fn from_row(row: &tokio_postgres::Row) -> Result<ApiKeyRow, tokio_postgres::Error> {
    Ok(ApiKeyRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        prefix: row.try_get(2)?,
        scopes: row.try_get(3)?,
        created_by: row.try_get(4)?,
        created_at: row.try_get(5)?,
        revoked_at: row.try_get(6)?,
        last_used_at: row.try_get(7)?,
    })
}

/// Every key, newest first.
pub async fn list(client: &impl GenericClient) -> Result<Vec<ApiKeyRow>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM api_keys ORDER BY created_at DESC, api_key_id"
        ))
        .await?;
    client
        .query(&statement, &[])
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// One key by its id.
pub async fn get(
    client: &impl GenericClient,
    api_key_id: Uuid,
) -> Result<Option<ApiKeyRow>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE api_key_id = $1"
        ))
        .await?;
    client
        .query_opt(&statement, &[&api_key_id])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

#[cfg(test)]
mod tests {
    use keyledger_events::api_key::{ApiKeyCreated, ApiKeyRevoked, api_key_stream};
    use serde_json::json;

    use super::*;
    use crate::testing::{TestDatabase, envelope};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[tokio::test]
    async fn a_key_is_a_row_until_revoked_and_then_says_when() {
        let db = TestDatabase::create().await;
        let id = Uuid::from_u128(3);
        let on_key = |position, event: ApiKeyEvent| {
            envelope(position, &api_key_stream(id), &event, at(position))
        };
        db.apply(
            &ApiKeys,
            &[
                on_key(
                    1,
                    ApiKeyEvent::ApiKeyCreated(ApiKeyCreated {
                        api_key_id: id,
                        name: "llm-service".into(),
                        prefix: "klk_7Hq2Xv9R".into(),
                        key_hash: "ab".repeat(32),
                        scopes: vec!["requests:write".into(), "licenses:read".into()],
                        created_by: "admin_token".into(),
                        at: at(1),
                    }),
                ),
                on_key(
                    2,
                    ApiKeyEvent::ApiKeyRevoked(ApiKeyRevoked {
                        api_key_id: id,
                        by: "user:x".into(),
                        at: at(2),
                    }),
                ),
            ],
        )
        .await;
        assert_eq!(
            db.rows(
                "SELECT api_key_id, name, prefix, key_hash, scopes, created_by, created_at, \
                        revoked_at, last_used_at, position FROM api_keys"
            )
            .await,
            json!([{
                "api_key_id": id,
                "name": "llm-service",
                "prefix": "klk_7Hq2Xv9R",
                "key_hash": "ab".repeat(32),
                "scopes": ["requests:write", "licenses:read"],
                "created_by": "admin_token",
                "created_at": "2027-01-15T08:00:01+00:00",
                "revoked_at": "2027-01-15T08:00:02+00:00",
                "last_used_at": null,
                "position": 2,
            }])
        );
        db.drop().await;
    }
}
