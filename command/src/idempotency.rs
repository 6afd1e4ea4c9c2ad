//! `Idempotency-Key` on every POST and PATCH command (the IETF draft "The Idempotency-Key HTTP
//! Header Field", and Stripe's documented behaviour).
//!
//! The layer claims the key (scoped to the caller and the route) before the handler runs. A
//! command that appends events hands the claim to the append writer, which stores the response
//! in the same transaction as the events. A handler that appends nothing (a domain refusal, a
//! validation of an unknown key) has its response stored by the layer afterwards. Requests
//! rejected before running (VAL_ codes) and server failures store nothing: the key may be
//! retried. A repeat with the same body gets the stored response byte for byte with
//! `Idempotent-Replayed: true`; with another body, 422; while the first still runs, the repeat
//! waits up to `wait` for it, then answers 409.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use deadpool_postgres::{GenericClient, Pool};
use keyledger_api::{ApiError, Code};
use keyledger_events::chain::canonical_json;
use keyledger_events::{AppendOutcome, IdempotencyCompletion, RenderResponse, StoredResponse};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{BODY_LIMIT, CommandState};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    /// How long a key is remembered.
    pub ttl: Duration,
    /// How long a claim is held before a retry may take it over (a crashed request).
    pub lock: Duration,
    /// How long a repeat waits for the first request before answering 409.
    pub wait: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            ttl: Duration::from_secs(24 * 60 * 60),
            lock: Duration::from_secs(30),
            wait: Duration::from_secs(2),
        }
    }
}

/// The claim of the running request (a request extension).
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub scope: String,
    pub key: String,
    pub token: Uuid,
}

/// Response extension: the append writer already stored this response.
#[derive(Debug, Clone, Copy)]
struct StoredByWriter;

/// The key: 1 to 255 visible ASCII characters.
fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::ValInvalidIdempotencyKey,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(text.to_owned())
}

/// SHA-256 of the canonical JSON body (member order and whitespace do not matter), or of the
/// raw bytes when the body is not JSON.
fn fingerprint(body: &[u8]) -> String {
    let canonical = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => canonical_json(&value),
        Err(_) => body.to_vec(),
    };
    hex::encode(Sha256::digest(&canonical))
}

enum Acquired {
    Claimed,
    Replay(StoredResponse),
}

pub async fn layer(State(state): State<CommandState>, request: Request, next: Next) -> Response {
    if !matches!(*request.method(), Method::POST | Method::PATCH) {
        return next.run(request).await;
    }
    let Some(raw) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let key = match parse_key(raw) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    // Keys are the caller's own: the same key from two principals names two requests.
    let actor = request
        .extensions()
        .get::<keyledger_api::Principal>()
        .map_or_else(|| "anonymous".to_owned(), keyledger_api::Principal::actor);
    let scope = format!("{actor} {} {}", request.method(), request.uri().path());
    let (parts, body) = request.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::ValBodyTooLarge,
                "the body is larger than this endpoint accepts",
            )
            .into_response();
        }
    };
    let claim = IdempotencyClaim {
        scope,
        key,
        token: Uuid::new_v4(),
    };
    match acquire(
        &state.pool,
        &state.idempotency,
        &claim,
        &fingerprint(&bytes),
    )
    .await
    {
        Ok(Acquired::Claimed) => {}
        Ok(Acquired::Replay(stored)) => return replayed(stored),
        Err(error) => return error.into_response(),
    }

    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(claim.clone());
    let response = next.run(request).await;
    if response.extensions().get::<StoredByWriter>().is_some() {
        return response;
    }
    if !is_final(&response) {
        if let Err(error) = release(&state.pool, &claim).await {
            tracing::warn!(error = %error, "could not release an idempotency claim; it expires by itself");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 4 * BODY_LIMIT).await else {
        let _ = release(&state.pool, &claim).await;
        return ApiError::internal("a response could not be buffered").into_response();
    };
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned(),
        body: bytes.to_vec(),
    };
    if let Err(error) = complete(&state.pool, &claim, &stored).await {
        tracing::warn!(error = %error, "could not store an idempotent response");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Whether a response is the command's answer (stored) rather than a failure to run it.
fn is_final(response: &Response) -> bool {
    let status = response.status();
    if status.is_success() {
        return true;
    }
    if !status.is_client_error() {
        return false;
    }
    response
        .extensions()
        .get::<Arc<ApiError>>()
        .is_some_and(|e| {
            let code = e.code.as_str();
            (code.starts_with("BIZ_") && e.code != Code::BizConcurrencyConflict)
                || code.starts_with("RES_")
        })
}

fn replayed(stored: StoredResponse) -> Response {
    let mut response = respond(stored);
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

fn respond(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let content_type = HeaderValue::from_str(&stored.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/json"));
    (status, [(header::CONTENT_TYPE, content_type)], stored.body).into_response()
}

async fn acquire(
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
        if let Some(stored) = existing.response {
            return Ok(Acquired::Replay(stored));
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
                     response_status = NULL, response_content_type = NULL, response_body = NULL \
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
    response: Option<StoredResponse>,
}

async fn find(
    client: &impl GenericClient,
    claim: &IdempotencyClaim,
) -> Result<Option<Existing>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "SELECT fingerprint, response_status, response_content_type, response_body \
             FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .await?;
    let Some(row) = client
        .query_opt(&statement, &[&claim.scope, &claim.key])
        .await?
    else {
        return Ok(None);
    };
    // NULL while the first request is in flight.
    let status: Option<i32> = row.try_get(1)?;
    let response = match status {
        Some(status) => Some(StoredResponse {
            status: u16::try_from(status).unwrap_or(500),
            content_type: row.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
            body: row.try_get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Some(Existing {
        fingerprint: row.try_get(0)?,
        response,
    }))
}

async fn complete(
    pool: &Pool,
    claim: &IdempotencyClaim,
    stored: &StoredResponse,
) -> Result<(), anyhow::Error> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE idempotency_keys SET status = 'completed', response_status = $4, \
                    response_content_type = $5, response_body = $6 \
             WHERE scope = $1 AND key = $2 AND token = $3 AND status = 'in_flight'",
            &[
                &claim.scope,
                &claim.key,
                &claim.token,
                &i32::from(stored.status),
                &stored.content_type,
                &stored.body,
            ],
        )
        .await?;
    Ok(())
}

async fn release(pool: &Pool, claim: &IdempotencyClaim) -> Result<(), anyhow::Error> {
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

/// The handler's view of the request's claim.
pub struct Idempotency(pub Option<IdempotencyClaim>);

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Idempotency(
            parts.extensions.get::<IdempotencyClaim>().cloned(),
        ))
    }
}

/// A JSON response as it will be stored.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> StoredResponse {
    StoredResponse {
        status: status.as_u16(),
        content_type: "application/json".into(),
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

impl Idempotency {
    pub fn key(&self) -> Option<String> {
        self.0.as_ref().map(|c| c.key.clone())
    }

    /// What the append writer needs to store `render`'s response with the events.
    pub fn completion(&self, render: &RenderResponse) -> Option<IdempotencyCompletion> {
        self.0.as_ref().map(|claim| IdempotencyCompletion {
            scope: claim.scope.clone(),
            key: claim.key.clone(),
            token: claim.token,
            render: render.clone(),
        })
    }

    /// The reply to a command that appended nothing: the layer stores it after the handler.
    pub fn reply_unstored(&self, response: StoredResponse) -> Response {
        respond(response)
    }

    /// The reply to a command whose response the writer stored (or that had no key).
    pub fn reply(&self, response: StoredResponse) -> Response {
        let mut response = respond(response);
        if self.0.is_some() {
            response.extensions_mut().insert(StoredByWriter);
        }
        response
    }
}

/// Builds a `RenderResponse` from a function of where the append landed.
pub fn renderer<T: Serialize>(
    status: StatusCode,
    body: impl Fn(&AppendOutcome) -> T + Send + Sync + 'static,
) -> RenderResponse {
    Arc::new(move |outcome| json_response(status, &body(outcome)))
}
