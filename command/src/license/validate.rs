//! `POST /v1/licenses/validate`: is this key good right now? Each validation of an existing
//! license is recorded as a usage event in the license's usage stream.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_api::{ApiError, AppJson, RequestId};
use keyledger_events::license::{LicenseValidated, Tier, UsageEvent, ValidationCode, usage_stream};
use keyledger_events::{AppendRequest, EventPayload, ExpectedVersion};
use keyledger_projections::license::validation;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::issue::parse_metadata;
use super::key::LicenseKey;
use super::{request_metadata, store_error};
use crate::CommandState;
use crate::idempotency::{Idempotency, json_response, renderer};

const MAX_FEATURE_CHARS: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub key: String,
    #[serde(default)]
    pub feature: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
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
            position: None,
        }
    }
}

#[tracing::instrument(skip_all, fields(license.id))]
pub async fn handle(
    State(state): State<CommandState>,
    request_id: RequestId,
    idempotency: Idempotency,
    AppJson(request): AppJson<ValidateRequest>,
) -> Result<Response, ApiError> {
    let answer = |body: ValidateResponse| idempotency.reply(json_response(StatusCode::OK, &body));
    let feature = match request.feature {
        Some(f) if f.is_empty() || f.chars().count() > MAX_FEATURE_CHARS => {
            return Err(ApiError::invalid_field(
                "feature",
                format!("must be 1 to {MAX_FEATURE_CHARS} characters"),
            ));
        }
        other => other,
    };
    let metadata = parse_metadata(request.metadata)?;
    let Some(key) = LicenseKey::parse(&request.key) else {
        return Ok(answer(ValidateResponse::rejected(
            ValidationCode::MalformedKey,
        )));
    };
    let client = state.pool.get().await.map_err(ApiError::unavailable)?;
    let found = validation::lookup(&client, &key.hash())
        .await
        .map_err(ApiError::unavailable)?;
    drop(client);
    let Some(license) = found else {
        return Ok(answer(ValidateResponse::rejected(ValidationCode::NotFound)));
    };
    tracing::Span::current().record("license.id", tracing::field::display(license.license_id));
    let now = keyledger_events::chain::to_micros((state.clock)());
    let code = if license.status == "revoked" {
        ValidationCode::Revoked
    } else if license.expires_at <= now {
        ValidationCode::Expired
    } else {
        ValidationCode::Valid
    };
    let usage = UsageEvent::LicenseValidated(LicenseValidated {
        license_id: license.license_id,
        code,
        feature,
        metadata,
        validated_at: now,
    });
    let body = ValidateResponse {
        valid: code == ValidationCode::Valid,
        code,
        license_id: Some(license.license_id),
        tier: Tier::parse(&license.tier),
        expires_at: Some(license.expires_at),
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
