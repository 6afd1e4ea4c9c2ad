//! `POST /v1/licenses/validate`: is this key good right now, for this feature and machine?
//! Each validation of an existing license is recorded as a usage event in the license's
//! usage stream; VALID ones count toward the daily quota.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_api::{ApiError, AppJson, RequestId};
use keyledger_events::license::{LicenseValidated, Tier, UsageEvent, ValidationCode, usage_stream};
use keyledger_events::{AppendRequest, EventPayload, ExpectedVersion};
use keyledger_projections::license::validation::{self, ValidationRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::installations::InstallationId;
use super::key::LicenseKey;
use super::policy::Policy;
use super::{request_metadata, store_error};
use crate::CommandState;
use crate::idempotency::{Idempotency, json_response, renderer};
use crate::metadata::parse_metadata;

const MAX_FEATURE_CHARS: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The key; may be left out when the caller authenticates with `Authorization: License
    /// <key>`.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub feature: Option<String>,
    #[serde(default)]
    pub installation_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidateResponse {
    pub valid: bool,
    pub code: ValidationCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Absent when no license was found; `null` for a perpetual license.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// The license's entitlements: its tier's and its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<Vec<String>>,
    /// Position of the recorded usage event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
}

impl ValidateResponse {
    fn rejected(code: ValidationCode) -> Self {
        ValidateResponse {
            valid: false,
            code,
            license_id: None,
            tier: None,
            expires_at: None,
            entitlements: None,
            position: None,
        }
    }
}

/// The verdict, first failing rule first: revoked, suspended, expired (never for a perpetual
/// license), installation, feature, quota.
pub fn judge(
    license: &ValidationRow,
    policy: &Policy,
    now: DateTime<Utc>,
    feature: Option<&str>,
    installation_id: Option<&str>,
) -> ValidationCode {
    let tier = Tier::parse(&license.tier).unwrap_or(Tier::Free);
    if license.status == "revoked" {
        ValidationCode::Revoked
    } else if license.status == "suspended" {
        ValidationCode::Suspended
    } else if license.expires_at.is_some_and(|at| at <= now) {
        ValidationCode::Expired
    } else if installation_id.is_some_and(|id| !license.installations.iter().any(|i| i == id)) {
        ValidationCode::InstallationNotActivated
    } else if feature.is_some_and(|f| !policy.entitlements(tier, &license.entitlements).contains(f))
    {
        ValidationCode::FeatureNotEntitled
    } else if policy
        .tier(tier)
        .validations_per_day
        .is_some_and(|quota| license.valid_today >= quota as i64)
    {
        ValidationCode::QuotaExceeded
    } else {
        ValidationCode::Valid
    }
}

#[tracing::instrument(skip_all, fields(license.id))]
pub async fn handle(
    State(state): State<CommandState>,
    request_id: RequestId,
    idempotency: Idempotency,
    headers: HeaderMap,
    AppJson(request): AppJson<ValidateRequest>,
) -> Result<Response, ApiError> {
    let presented = request.key.as_deref().or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(keyledger_api::principal::license_key)
    });
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            keyledger_api::Code::ValInvalidBody,
            "missing field `key` (or authenticate with `Authorization: License <key>`)",
        ));
    };
    let answer =
        |body: ValidateResponse| idempotency.reply_unstored(json_response(StatusCode::OK, &body));
    let feature = match request.feature {
        Some(f) if f.is_empty() || f.chars().count() > MAX_FEATURE_CHARS => {
            return Err(ApiError::invalid_field(
                "feature",
                format!("must be 1 to {MAX_FEATURE_CHARS} characters"),
            ));
        }
        other => other,
    };
    let installation_id = request
        .installation_id
        .as_deref()
        .map(InstallationId::parse)
        .transpose()?;
    let metadata = parse_metadata(request.metadata)?;
    let Some(key) = LicenseKey::parse(presented.trim()) else {
        return Ok(answer(ValidateResponse::rejected(
            ValidationCode::MalformedKey,
        )));
    };
    let now = keyledger_events::chain::to_micros((state.clock)());
    let client = state.pool.get().await.map_err(ApiError::from)?;
    let found = validation::lookup(&client, &key.hash(), now.date_naive())
        .await
        .map_err(ApiError::from)?;
    drop(client);
    let Some(license) = found else {
        return Ok(answer(ValidateResponse::rejected(ValidationCode::NotFound)));
    };
    tracing::Span::current().record("license.id", tracing::field::display(license.license_id));
    let code = judge(
        &license,
        &state.policy,
        now,
        feature.as_deref(),
        installation_id.as_ref().map(InstallationId::as_str),
    );
    let tier = Tier::parse(&license.tier);
    let entitlements = tier.map(|t| {
        state
            .policy
            .entitlements(t, &license.entitlements)
            .into_iter()
            .collect()
    });
    let usage = UsageEvent::LicenseValidated(LicenseValidated {
        license_id: license.license_id,
        code,
        feature,
        installation_id: installation_id.map(|i| i.as_str().to_owned()),
        metadata,
        validated_at: now,
    });
    let body = ValidateResponse {
        valid: code == ValidationCode::Valid,
        code,
        license_id: Some(license.license_id),
        tier,
        expires_at: Some(license.expires_at),
        entitlements,
        position: None,
    };
    let render = renderer(StatusCode::OK, move |outcome| ValidateResponse {
        position: Some(outcome.position),
        ..body.clone()
    });
    let outcome = state
        .store
        .append(AppendRequest {
            stream_id: usage_stream(license.license_id),
            expected: ExpectedVersion::Any,
            events: vec![usage.to_new_event(Uuid::new_v4())],
            metadata: request_metadata(&request_id, &idempotency),
            idempotency: idempotency.completion(&render),
        })
        .await
        .map_err(store_error)?;
    Ok(idempotency.reply(render(&outcome)))
}
