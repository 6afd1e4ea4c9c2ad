//! "Not found" only for what does not exist: before a query answers 404 for an id, it looks
//! for the id's stream in the event log; when the stream is there, the read tables have not
//! applied it yet, so the query waits for them (as if the client had sent the stream's last
//! position in `X-Consistency-Position`) and reads again.

use std::future::Future;

use keyledger_api::ApiError;

use crate::QueryState;

/// The position of the last event of `stream_id`, or `None` when the log has no such stream.
/// The `(stream_id, version)` unique index serves it.
pub async fn stream_head(
    client: &impl deadpool_postgres::GenericClient,
    stream_id: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached("SELECT max(position) FROM events WHERE stream_id = $1")
        .await?;
    client
        .query_one(&statement, &[&stream_id])
        .await?
        .try_get(0)
}

impl QueryState {
    /// What `find` reads for the entity whose events are in `stream_id`, read from the read
    /// tables of `projections`; `missing` only when the log has no such stream (or the
    /// projections, having applied all of it, still show nothing).
    ///
    /// A pooled connection is held only while reading, never while waiting.
    pub async fn found<T, F, Fut>(
        &self,
        stream_id: &str,
        projections: &[&str],
        find: F,
        missing: impl FnOnce() -> ApiError,
    ) -> Result<T, ApiError>
    where
        F: Fn(deadpool_postgres::Client) -> Fut,
        Fut: Future<Output = Result<Option<T>, tokio_postgres::Error>>,
    {
        if let Some(found) = find(self.client().await?).await.map_err(ApiError::from)? {
            return Ok(found);
        }
        let head = {
            let primary = self.primary.get().await.map_err(ApiError::from)?;
            stream_head(&primary, stream_id)
                .await
                .map_err(ApiError::from)?
        };
        let Some(position) = head else {
            return Err(missing());
        };
        self.consistent(projections, Some(position)).await?;
        find(self.client().await?)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(missing)
    }
}
