//! The `idempotency_keys` table: claiming a key, finding what an earlier request left,
//! storing a response, releasing a claim, purging expired keys.

use std::time::Duration;

use axum::http::StatusCode;
use deadpool_postgres::{GenericClient, Pool};
use keyledger_api::{ApiError, Code};

use super::reply::StoredResponse;
use super::{IdempotencyClaim, IdempotencyConfig};

/// What claiming a key found.
pub(super) enum Acquired {
    Claimed,
    Replay(StoredResponse),
}

/// Claims the key; waits (up to `config.wait`) while another request with it runs.
pub(super) async fn acquire(
    pool: &Pool,
    config: &IdempotencyConfig,
    claim: &IdempotencyClaim,
    fingerprint: &str,
) -> Result<Acquired, ApiError> {
    let deadline = tokio::time::Instant::now() + config.wait;
    let mut pause = Duration::from_millis(5);
    loop {
        // A connection per look: waiting repeats must not hold the pool the first one needs.
        let client = pool.get().await.map_err(ApiError::from)?;
        if try_claim(&client, config, claim, fingerprint)
            .await
            .map_err(ApiError::from)?
        {
            return Ok(Acquired::Claimed);
        }
        let Some(existing) = find(&client, claim).await.map_err(ApiError::from)? else {
            // Released (or purged) meanwhile: claim again.
            continue;
        };
        drop(client);
        if existing.fingerprint != fingerprint {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                Code::ValIdempotencyKeyReused,
                "this Idempotency-Key was used with a different request body",
            ));
        }
        if let Some(bytes) = existing.response {
            return StoredResponse::decode(&bytes)
                .map(Acquired::Replay)
                .ok_or_else(|| ApiError::internal("a stored response could not be read"));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    Code::BizIdempotencyInFlight,
                    "a request with this Idempotency-Key is still running; retry later",
                )
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Inserts the claim, or takes over an expired key or an abandoned claim of the same body.
async fn try_claim(
    client: &impl GenericClient,
    config: &IdempotencyConfig,
    claim: &IdempotencyClaim,
    fingerprint: &str,
) -> Result<bool, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "INSERT INTO idempotency_keys AS k \
                 (scope, key, fingerprint, status, token, locked_until, expires_at) \
             VALUES ($1, $2, $3, 'in_flight', $4, \
                     now() + $5 * interval '1 millisecond', now() + $6 * interval '1 second') \
             ON CONFLICT (scope, key) DO UPDATE \
                 SET fingerprint = EXCLUDED.fingerprint, status = 'in_flight', \
                     token = EXCLUDED.token, locked_until = EXCLUDED.locked_until, \
                     expires_at = EXCLUDED.expires_at, created_at = now(), \
                     response = NULL \
                 WHERE k.expires_at < now() \
                    OR (k.status = 'in_flight' AND k.locked_until < now() \
                        AND k.fingerprint = EXCLUDED.fingerprint) \
             RETURNING token",
        )
        .await?;
    let lock_ms = config.lock.as_millis() as f64;
    let ttl_s = config.ttl.as_secs_f64();
    let row = client
        .query_opt(
            &statement,
            &[
                &claim.scope,
                &claim.key,
                &fingerprint,
                &claim.token,
                &lock_ms,
                &ttl_s,
            ],
        )
        .await?;
    Ok(row.is_some())
}

struct Existing {
    fingerprint: String,
    /// `StoredResponse::encode`d; `None` while the first request runs.
    response: Option<Vec<u8>>,
}

async fn find(
    client: &impl GenericClient,
    claim: &IdempotencyClaim,
) -> Result<Option<Existing>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "SELECT fingerprint, response FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .await?;
    let Some(row) = client
        .query_opt(&statement, &[&claim.scope, &claim.key])
        .await?
    else {
        return Ok(None);
    };
    // NULL while the first request is in flight.
    let response = row.try_get(1)?;
    Ok(Some(Existing {
        fingerprint: row.try_get(0)?,
        response,
    }))
}

pub(super) async fn complete(
    pool: &Pool,
    claim: &IdempotencyClaim,
    stored: &StoredResponse,
) -> Result<(), anyhow::Error> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE idempotency_keys SET status = 'completed', response = $4 \
             WHERE scope = $1 AND key = $2 AND token = $3 AND status = 'in_flight'",
            &[&claim.scope, &claim.key, &claim.token, &stored.encode()],
        )
        .await?;
    Ok(())
}

pub(super) async fn release(pool: &Pool, claim: &IdempotencyClaim) -> Result<(), anyhow::Error> {
    let client = pool.get().await?;
    client
        .execute(
            "DELETE FROM idempotency_keys \
             WHERE scope = $1 AND key = $2 AND token = $3 AND status = 'in_flight'",
            &[&claim.scope, &claim.key, &claim.token],
        )
        .await?;
    Ok(())
}

/// Deletes expired keys; returns how many.
pub async fn purge_expired(pool: &Pool) -> Result<u64, anyhow::Error> {
    let client = pool.get().await?;
    Ok(client
        .execute("DELETE FROM idempotency_keys WHERE expires_at < now()", &[])
        .await?)
}
