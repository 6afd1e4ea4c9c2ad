//! What the projection tests share: a migrated database of the test's own (on the PostgreSQL
//! the README names), envelopes made from typed events, and the read tables as JSON, so a test
//! compares whole rows.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use keyledger_events::{Envelope, EventPayload, Metadata, Projection, db};
use serde_json::Value;
use tokio_postgres::NoTls;
use uuid::Uuid;

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

pub struct TestDatabase {
    pub pool: Pool,
    name: String,
}

impl TestDatabase {
    /// A new database with every migration applied.
    pub async fn create() -> TestDatabase {
        let name = format!("kl_projections_{}", Uuid::new_v4().simple());
        let url = format!("{SERVER}/{name}");
        db::ensure_database(&url).await.unwrap();
        db::migrate(&url).await.unwrap();
        TestDatabase {
            pool: db::pool(&url, 2).unwrap(),
            name,
        }
    }

    /// Applies one batch in one transaction, as the runtime (or the writer) does.
    pub async fn apply(&self, projection: &dyn Projection, events: &[Envelope]) {
        let mut client = self.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        projection.apply(&tx, events).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// The rows `query` selects, each as a JSON object (times in UTC).
    pub async fn rows(&self, query: &str) -> Value {
        let client = self.pool.get().await.unwrap();
        client.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
        let row = client
            .query_one(
                &format!("SELECT coalesce(json_agg(r), '[]') FROM ({query}) r"),
                &[],
            )
            .await
            .unwrap();
        let rows: Value = row.get(0);
        client.batch_execute("RESET TIME ZONE").await.unwrap();
        rows
    }

    pub async fn drop(self) {
        self.pool.close();
        let (client, connection) = tokio_postgres::connect(&format!("{SERVER}/postgres"), NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .unwrap();
        drop(client);
        let _ = driver.await;
    }
}

/// `event` as stored at `position` on `stream_id` (version = position), caused by `system`.
pub fn envelope(
    position: i64,
    stream_id: &str,
    event: &impl EventPayload,
    recorded_at: DateTime<Utc>,
) -> Envelope {
    let new = event.to_new_event(Uuid::from_u128(position as u128));
    Envelope {
        position,
        event_id: new.event_id,
        stream_id: stream_id.to_owned(),
        version: position,
        event_type: new.event_type.to_owned(),
        schema_version: new.schema_version,
        data: new.data,
        metadata: Metadata {
            actor: Some("system".into()),
            ..Metadata::default()
        }
        .to_value(),
        recorded_at,
        hash: Vec::new(),
    }
}
