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

mod reply;
mod storage;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyledger_api::{ApiError, Code};
use keyledger_events::chain::canonical_json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use reply::{REPLAYED_HEADER, StoredResponse};
pub use storage::purge_expired;
use storage::{Acquired, acquire, complete, release};

use crate::{BODY_LIMIT, CommandState};

pub const HEADER: &str = "idempotency-key";

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
pub(crate) struct StoredByWriter;

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
        Ok(Acquired::Replay(stored)) => return stored.into_replay(),
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
