//! `POST /v1/licenses`: issue a license. The key is in this response and nowhere else.

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use keyledger_api::openapi::IdempotencyKeyHeader;
use keyledger_api::{ApiError, AppJson, redact_text};
use keyledger_events::license::{LicenseStatus, Tier, license_stream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::aggregate::{IssueLicense, License, LicenseCommand};
use super::key::LicenseKey;
use crate::handler::CommandRequest;
use crate::idempotency::StoredResponse;
use crate::metadata::parse_metadata;
use crate::values::Owner;

const DEFAULT_VALID_DAYS: u32 = 365;
const MAX_VALID_DAYS: u32 = 36_500;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"owner": "acme-corp", "tier": "pro", "valid_days": 365, "entitlements": ["export"]}))]
pub struct IssueRequest {
    /// Who holds the license: 1 to 256 characters (trimmed), no control characters.
    #[schema(min_length = 1, max_length = 256, example = "acme-corp")]
    pub owner: String,
    pub tier: Tier,
    /// Days from now until the license ends: 1 to 36500 (default 365). Not with `expires_at`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 36500)]
    pub valid_days: Option<u32>,
    /// When the license ends: in the future, within 100 years. Not with `valid_days`.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// A license without an end: no `valid_days` or `expires_at` with it.
    #[serde(default)]
    pub perpetual: Option<bool>,
    /// A JSON object of the client's (at most 16 KiB); secret-looking members are redacted.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Entitlements on top of the tier's: at most 100 names of 1 to 128 characters.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub entitlements: Option<Vec<String>>,
    /// Replaces the tier's installation limit: 0 to 100000.
    #[serde(default)]
    #[schema(maximum = 100000)]
    pub max_installations: Option<u32>,
}

/// Entitlement names: 1 to 128 characters without control characters, at most 100 of them.
pub fn parse_entitlements(names: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let names = names.unwrap_or_default();
    if names.len() > 100 {
        return Err(ApiError::invalid_field("entitlements", "at most 100 names"));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                "entitlements",
                "each name must be 1 to 128 characters without control characters",
            ));
        }
        let name = redact_text(&name);
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// A per-license installation limit: 0 to 100 000.
pub fn parse_max_installations(limit: Option<u32>) -> Result<Option<u32>, ApiError> {
    match limit {
        Some(n) if n > 100_000 => Err(ApiError::invalid_field(
            "max_installations",
            "must be between 0 and 100000",
        )),
        other => Ok(other),
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IssueResponse {
    pub license_id: Uuid,
    /// Only in the first response: the key is stored nowhere, so a replay cannot show it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub key_prefix: String,
    pub owner: String,
    pub tier: Tier,
    #[schema(value_type = String, example = "active")]
    pub status: LicenseStatus,
    pub issued_at: DateTime<Utc>,
    /// `null` for a perpetual license.
    pub expires_at: Option<DateTime<Utc>>,
    pub entitlements: Vec<String>,
    pub max_installations: Option<u32>,
    pub position: i64,
}

impl IssueResponse {
    /// This answer, at the position the license's events landed at.
    fn at(&self, outcome: &keyledger_events::AppendOutcome) -> IssueResponse {
        IssueResponse {
            position: outcome.position,
            ..self.clone()
        }
    }
}

/// The license's end: `None` for a perpetual license, which takes neither `valid_days` nor
/// `expires_at`.
fn expiry(request: &IssueRequest, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ApiError> {
    if request.perpetual == Some(true) {
        let conflicting = if request.valid_days.is_some() {
            Some("valid_days")
        } else if request.expires_at.is_some() {
            Some("expires_at")
        } else {
            None
        };
        return match conflicting {
            Some(field) => Err(ApiError::invalid_field(
                field,
                "a perpetual license has no end; give perpetual or an end, not both",
            )),
            None => Ok(None),
        };
    }
    dated_expiry(request, now).map(Some)
}

fn dated_expiry(request: &IssueRequest, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    match (request.valid_days, request.expires_at) {
        (Some(_), Some(_)) => Err(ApiError::invalid_field(
            "expires_at",
            "give either valid_days or expires_at, not both",
        )),
        (None, Some(at)) if at <= now => Err(ApiError::invalid_field(
            "expires_at",
            "must be in the future",
        )),
        (None, Some(at)) if at > now + Duration::days(i64::from(MAX_VALID_DAYS)) => Err(
            ApiError::invalid_field("expires_at", "must be within 100 years"),
        ),
        (None, Some(at)) => Ok(at),
        (days, None) => {
            let days = days.unwrap_or(DEFAULT_VALID_DAYS);
            if !(1..=MAX_VALID_DAYS).contains(&days) {
                return Err(ApiError::invalid_field(
                    "valid_days",
                    format!("must be between 1 and {MAX_VALID_DAYS}"),
                ));
            }
            Ok(now + Duration::days(i64::from(days)))
        }
    }
}

/// Issues a license. The key is in this response only: it is stored nowhere, and a retry
/// with the same `Idempotency-Key` answers without it.
#[utoipa::path(
    post,
    path = "/v1/licenses",
    tag = "licenses",
    params(IdempotencyKeyHeader),
    request_body = IssueRequest,
    responses(
        (status = 201, description = "The license, with its key (never cached).", body = IssueResponse, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 409, description = "`BIZ_LICENSE_EXISTS`: a license with this id exists."),
        (status = 422, description = "`BIZ_PERPETUAL_NOT_ALLOWED`: the tier's policy does not allow perpetual licenses."),
    ),
)]
#[tracing::instrument(skip_all, fields(license.id))]
pub async fn handle(
    command_request: CommandRequest,
    AppJson(request): AppJson<IssueRequest>,
) -> Result<Response, ApiError> {
    let now = command_request.now;
    let owner = Owner::parse(&request.owner)?;
    let expires_at = expiry(&request, now)?;
    let metadata = parse_metadata(request.metadata)?;
    let entitlements = parse_entitlements(request.entitlements)?;
    let max_installations = parse_max_installations(request.max_installations)?;
    let key = LicenseKey::generate().map_err(ApiError::internal)?;
    let license_id = Uuid::new_v4();
    tracing::Span::current().record("license.id", tracing::field::display(license_id));
    let command = LicenseCommand::Issue(IssueLicense {
        license_id,
        key_hash: key.hash(),
        key_prefix: key.display_prefix(),
        owner: owner.clone(),
        tier: request.tier,
        issued_at: now,
        expires_at,
        metadata,
        entitlements: entitlements.clone(),
        max_installations,
        policy: command_request.state().policy.clone(),
    });
    // The answer as stored for a retry of the same Idempotency-Key: without the key.
    let stored = IssueResponse {
        license_id,
        key: None,
        key_prefix: key.display_prefix(),
        owner: owner.into(),
        tier: request.tier,
        status: LicenseStatus::Active,
        issued_at: now,
        expires_at,
        entitlements,
        max_installations,
        position: 0,
    };
    let shown = IssueResponse {
        key: Some(key.expose().to_owned()),
        ..stored.clone()
    };
    command_request
        .run_new_showing::<License>(
            &license_stream(license_id),
            &command,
            move |_, _, outcome| StoredResponse::json(StatusCode::CREATED, &stored.at(outcome)),
            // The key is in this reply only, never in the answer stored for a retry.
            |outcome| StoredResponse::json(StatusCode::CREATED, &shown.at(outcome)),
        )
        .await
}
