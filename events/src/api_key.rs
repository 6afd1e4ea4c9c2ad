//! API key events (`api_key-<id>` streams): the keys services authenticate with. The key
//! itself never appears here: only its SHA-256 hash (hex) and its display prefix.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const API_KEY_CATEGORY: &str = "api_key";

pub fn api_key_stream(api_key_id: Uuid) -> String {
    crate::envelope::stream_id(API_KEY_CATEGORY, api_key_id)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ApiKeyEvent {
    ApiKeyCreated(ApiKeyCreated),
    ApiKeyRevoked(ApiKeyRevoked),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    pub api_key_id: Uuid,
    pub name: String,
    /// `klk_` and the first eight characters of the key body, shown in listings.
    pub prefix: String,
    /// SHA-256 of the whole key, hex.
    pub key_hash: String,
    /// Permission names (`licenses:write`), without duplicates.
    pub scopes: Vec<String>,
    /// The actor who created the key (`user:<id>`, `admin_token`, `system`, …).
    pub created_by: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    pub api_key_id: Uuid,
    /// The actor who revoked the key.
    pub by: String,
    pub at: DateTime<Utc>,
}

crate::event_payload!(ApiKeyEvent {
    ApiKeyCreated,
    ApiKeyRevoked
});
