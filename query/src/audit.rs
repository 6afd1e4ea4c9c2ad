//! What auditors read to check the log without trusting the operator: the published signing
//! keys (`GET /.well-known/keyledger-keys.json`) and the signed checkpoints
//! (`GET /v1/checkpoints/latest`, `GET /v1/checkpoints?after=&limit=`). Both are read from the
//! log itself (`SigningKeyRegistered`, `CheckpointSigned`), so every key ever used stays listed.

use axum::Json;
use axum::extract::State;
use deadpool_postgres::GenericClient;
use keyledger_api::{ApiError, AppQuery, Code};
use keyledger_events::audit::{KeySet, PublicKey, SignedCheckpoint};
use keyledger_events::store::JsonText;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{QueryState, page_limit};

/// A signed checkpoint as recorded, with the position of the event that recorded it.
#[derive(Debug, Serialize)]
pub struct CheckpointView {
    #[serde(flatten)]
    pub signed: SignedCheckpoint,
    /// The position of the `CheckpointSigned` event.
    pub event_position: i64,
}

/// A signed checkpoint as recorded, with the position of the event that recorded it (the
/// schema of [`CheckpointView`], its `SignedCheckpoint` flattened in).
#[derive(ToSchema)]
#[schema(as = CheckpointView)]
#[allow(dead_code)]
pub struct CheckpointViewSchema {
    /// The log's head the checkpoint states.
    position: i64,
    /// The head event's hash, hex.
    hash: String,
    signed_at: chrono::DateTime<chrono::Utc>,
    /// The id (RFC 7638 thumbprint) of the signing key, in `/.well-known/keyledger-keys.json`.
    kid: String,
    /// Ed25519 over the canonical JSON of `hash`, `kid`, `position` and `signed_at`,
    /// base64url without padding.
    signature: String,
    /// The position of the `CheckpointSigned` event.
    event_position: i64,
}

/// The audit signing keys as a JWK set (the schema of `KeySet`).
#[derive(ToSchema)]
#[schema(as = AuditKeySet)]
#[allow(dead_code)]
pub struct KeySetSchema {
    keys: Vec<PublicKeySchema>,
}

/// An audit signing key as a JWK (RFC 7517, OKP/Ed25519 per RFC 8037).
#[derive(ToSchema)]
#[schema(as = AuditPublicKey)]
#[allow(dead_code)]
pub struct PublicKeySchema {
    #[schema(example = "OKP")]
    kty: String,
    #[schema(example = "Ed25519")]
    crv: String,
    /// The public key, base64url without padding.
    x: String,
    /// The RFC 7638 thumbprint of the key.
    kid: String,
    #[schema(rename = "use", example = "sig")]
    use_: String,
    #[schema(example = "EdDSA")]
    alg: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CheckpointParams {
    /// Checkpoints recorded after this event position: 0 or more (default 0).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Checkpoints per page: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A page of signed checkpoints, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointPage {
    #[schema(value_type = Vec<CheckpointViewSchema>)]
    pub checkpoints: Vec<CheckpointView>,
    /// Pass as `after` for the next page.
    pub next_after: i64,
}

/// Lists every audit signing key the log has recorded, as a JWK set.
#[utoipa::path(
    get,
    path = "/.well-known/keyledger-keys.json",
    tag = "audit",
    responses(
        (status = 200, description = "The keys checkpoints are signed with, every one ever used.", body = KeySetSchema),
    ),
)]
pub async fn keys(State(state): State<QueryState>) -> Result<Json<KeySet>, ApiError> {
    let client = state.client().await?;
    let statement = client
        .prepare_cached(
            "SELECT data FROM events WHERE event_type = 'SigningKeyRegistered' ORDER BY position",
        )
        .await?;
    let mut set = KeySet::default();
    for row in client.query(&statement, &[]).await? {
        let JsonText(text) = row.try_get(0)?;
        // Only the service writes these; a row it cannot read is left out rather than failing
        // the whole set.
        match serde_json::from_str::<PublicKey>(&text) {
            Ok(key) if !set.keys.contains(&key) => set.keys.push(key),
            Ok(_) => {}
            Err(error) => tracing::error!(error = %error, "an unreadable signing key in the log"),
        }
    }
    Ok(Json(set))
}

async fn read(
    client: &impl GenericClient,
    after: i64,
    limit: i64,
    newest: bool,
) -> Result<Vec<CheckpointView>, ApiError> {
    let order = if newest { "DESC" } else { "ASC" };
    let statement = client
        .prepare_cached(&format!(
            "SELECT position, data FROM events \
             WHERE event_type = 'CheckpointSigned' AND position > $1 \
             ORDER BY position {order} LIMIT $2"
        ))
        .await?;
    let mut checkpoints = Vec::new();
    for row in client.query(&statement, &[&after, &limit]).await? {
        let JsonText(text) = row.try_get(1)?;
        let signed: SignedCheckpoint = serde_json::from_str(&text)
            .map_err(|e| ApiError::internal(format!("an unreadable signed checkpoint: {e}")))?;
        checkpoints.push(CheckpointView {
            signed,
            event_position: row.try_get(0)?,
        });
    }
    Ok(checkpoints)
}

/// Reads the newest signed checkpoint.
#[utoipa::path(
    get,
    path = "/v1/checkpoints/latest",
    tag = "audit",
    responses(
        (status = 200, description = "The newest signed checkpoint.", body = CheckpointViewSchema),
        (status = 404, description = "`RES_NOT_FOUND`: no checkpoint has been signed yet."),
    ),
)]
pub async fn latest(State(state): State<QueryState>) -> Result<Json<CheckpointView>, ApiError> {
    let client = state.client().await?;
    read(&client, 0, 1, true)
        .await?
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(Code::ResNotFound, "no checkpoint has been signed yet"))
}

/// Lists the signed checkpoints, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/checkpoints",
    tag = "audit",
    params(CheckpointParams),
    responses(
        (status = 200, description = "A page of signed checkpoints.", body = CheckpointPage),
        (status = 400, description = "`VAL_INVALID_PARAMETER`: `after` is negative or `limit` out of range."),
    ),
)]
pub async fn list(
    State(state): State<QueryState>,
    AppQuery(params): AppQuery<CheckpointParams>,
) -> Result<Json<CheckpointPage>, ApiError> {
    let after = match params.after {
        None => 0,
        Some(after) if after >= 0 => after,
        Some(_) => return Err(ApiError::invalid_parameter("after", "must be 0 or more")),
    };
    let limit = page_limit(params.limit, 100, 1000)?;
    let client = state.client().await?;
    let checkpoints = read(&client, after, limit, false).await?;
    let next_after = checkpoints.last().map_or(after, |c| c.event_position);
    Ok(Json(CheckpointPage {
        checkpoints,
        next_after,
    }))
}
