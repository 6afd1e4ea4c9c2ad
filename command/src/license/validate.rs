//! `POST /v1/licenses/validate`: is this key good right now, for this feature and machine?
//! Each validation of an existing license is recorded as a usage event in the license's
//! usage stream; VALID ones count toward the daily quota.
//!
//! No database lookup per validation: the handler finds the license in the process's
//! validation view and hands the writer a decision. The writer judges it under the append lock,
//! with the view brought up to the head in the same round trip that reads the head, so a
//! validation that starts after a revoke's response (on any node) answers `REVOKED`, and the
//! daily quota is counted exactly. A malformed key is answered at once, and a key the view does
//! not know after reading the log's tail gets `NOT_FOUND`: neither reaches the writer or the
//! log (the request log still records the call).

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_api::openapi::IdempotencyKeyHeader;
use keyledger_api::{ApiError, AppJson, redact_text};
use keyledger_events::license::{
    LicenseStatus, LicenseValidated, Tier, UsageEvent, ValidationCode, usage_stream,
};
use keyledger_events::{Decide, EventPayload};
use keyledger_projections::license::view::License;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use utoipa::ToSchema;
use uuid::Uuid;

use super::key::LicenseKey;
use super::policy::Policy;
use crate::handler::CommandRequest;
use crate::idempotency::StoredResponse;
use crate::metadata::parse_metadata;
use crate::values::InstallationId;

const MAX_FEATURE_CHARS: usize = 128;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"key": "lic_7tS3mYqJ9rWbV2xKcE4hPzN8aGdL5fUoR6iQwT1yBnM", "feature": "export", "installation_id": "host-42"}))]
pub struct ValidateRequest {
    /// The key; may be left out when the caller authenticates with `Authorization: License
    /// <key>`.
    #[serde(default)]
    pub key: Option<String>,
    /// An entitlement the caller needs: 1 to 128 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub feature: Option<String>,
    /// The machine asking, which must be an active installation of the license: 1 to 128
    /// visible ASCII characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub installation_id: Option<String>,
    /// A JSON object recorded with the usage event (at most 16 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValidateResponse {
    pub valid: bool,
    pub code: ValidationCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Absent when no license was found; `null` for a perpetual license.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<DateTime<Utc>>)]
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

/// What a validation decided under the append lock.
#[derive(Debug, Clone)]
struct Verdict {
    code: ValidationCode,
    tier: Tier,
    expires_at: Option<DateTime<Utc>>,
    own_entitlements: Box<[Box<str>]>,
}

/// The verdict, first failing rule first: revoked, suspended, expired (never for a perpetual
/// license), installation, feature, quota. `valid_today` counts the VALID validations of the
/// license's day so far.
pub fn judge(
    license: &License,
    valid_today: u32,
    policy: &Policy,
    now: DateTime<Utc>,
    feature: Option<&str>,
    installation_id: Option<&str>,
) -> ValidationCode {
    if license.status == LicenseStatus::Revoked {
        ValidationCode::Revoked
    } else if license.status == LicenseStatus::Suspended {
        ValidationCode::Suspended
    } else if license.expires_at.is_some_and(|at| at <= now) {
        ValidationCode::Expired
    } else if installation_id.is_some_and(|id| !license.installations.iter().any(|i| **i == *id)) {
        ValidationCode::InstallationNotActivated
    } else if feature.is_some_and(|f| !policy.entitled(license.tier, &license.entitlements, f)) {
        ValidationCode::FeatureNotEntitled
    } else if policy
        .tier(license.tier)
        .validations_per_day
        .is_some_and(|quota| u64::from(valid_today) >= quota)
    {
        ValidationCode::QuotaExceeded
    } else {
        ValidationCode::Valid
    }
}

/// Validates a key, for a feature and an installation: the answer's `code` says why a key is
/// not valid. Every validation of an existing license is recorded as a usage event.
#[utoipa::path(
    post,
    path = "/v1/licenses/validate",
    tag = "licenses",
    params(IdempotencyKeyHeader),
    request_body = ValidateRequest,
    responses(
        (status = 200, description = "The verdict (`valid` is false for every code but `VALID`).", body = ValidateResponse),
        (status = 422, description = "`VAL_INVALID_BODY`: no `key`, and no `Authorization: License <key>`."),
    ),
)]
#[tracing::instrument(skip_all, fields(license.id))]
pub async fn handle(
    command_request: CommandRequest,
    headers: HeaderMap,
    AppJson(request): AppJson<ValidateRequest>,
) -> Result<Response, ApiError> {
    let state = command_request.state();
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
    // An answer without a usage event to append.
    let answer = |body: ValidateResponse| {
        command_request.answer(StoredResponse::json(StatusCode::OK, &body))
    };
    let feature = match request.feature {
        Some(f) if f.is_empty() || f.chars().count() > MAX_FEATURE_CHARS => {
            return Err(ApiError::invalid_field(
                "feature",
                format!("must be 1 to {MAX_FEATURE_CHARS} characters"),
            ));
        }
        // A key pasted here is not kept: the feature is recorded in the usage event.
        other => other.map(|f| redact_text(&f)),
    };
    let installation_id = request
        .installation_id
        .as_deref()
        .map(InstallationId::parse)
        .transpose()?
        .map(|i| i.as_str().to_owned());
    let metadata = parse_metadata(request.metadata)?;
    let Some(key) = LicenseKey::parse(presented.trim()) else {
        return Ok(answer(ValidateResponse::rejected(
            ValidationCode::MalformedKey,
        )));
    };
    let digest = key.digest();
    let license_id = match state.view.license_id(&digest) {
        Some(id) => id,
        None => {
            // Perhaps issued on another node since the view last moved: read the log's tail.
            state.view.catch_up(&state.pool).await.map_err(|e| {
                ApiError::store(keyledger_events::StoreError::Unavailable(e.to_string()))
            })?;
            match state.view.license_id(&digest) {
                Some(id) => id,
                None => {
                    return Ok(answer(ValidateResponse::rejected(ValidationCode::NotFound)));
                }
            }
        }
    };
    tracing::Span::current().record("license.id", tracing::field::display(license_id));
    let now = command_request.now;
    // Decided under the append lock: only the verdict and what the answer needs of the license
    // are copied there; the answer itself is built outside the lock.
    let verdict: Arc<Mutex<Option<Verdict>>> = Arc::default();
    let decide: Decide = {
        let (view, policy, verdict) = (state.view.clone(), state.policy.clone(), verdict.clone());
        let event_id = Uuid::new_v4();
        Arc::new(move || {
            let decided = view.decide(license_id, now.date_naive(), |license, valid_today| {
                let code = judge(
                    license,
                    valid_today,
                    &policy,
                    now,
                    feature.as_deref(),
                    installation_id.as_deref(),
                );
                let verdict = Verdict {
                    code,
                    tier: license.tier,
                    expires_at: license.expires_at,
                    own_entitlements: license.entitlements.clone(),
                };
                (code, verdict)
            });
            // A license never leaves the view once in it.
            let Some((code, decided)) = decided else {
                return Vec::new();
            };
            *verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(decided);
            let usage = UsageEvent::LicenseValidated(LicenseValidated {
                license_id,
                code,
                feature: feature.clone(),
                installation_id: installation_id.clone(),
                metadata: metadata.clone(),
                validated_at: now,
            });
            vec![usage.to_new_event(event_id)]
        })
    };
    let policy = state.policy.clone();
    command_request
        .append_decided(usage_stream(license_id), decide, move |outcome| {
            let decided = verdict.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let body = match decided {
                Some(verdict) => ValidateResponse {
                    valid: verdict.code == ValidationCode::Valid,
                    code: verdict.code,
                    license_id: Some(license_id),
                    tier: Some(verdict.tier),
                    expires_at: Some(verdict.expires_at),
                    entitlements: Some(
                        policy
                            .entitlements(verdict.tier, &verdict.own_entitlements)
                            .into_iter()
                            .collect(),
                    ),
                    position: Some(outcome.position),
                },
                None => ValidateResponse {
                    position: Some(outcome.position),
                    ..ValidateResponse::rejected(ValidationCode::NotFound)
                },
            };
            StoredResponse::json(StatusCode::OK, &body)
        })
        .await
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
    }

    /// A free license (built-in policy: entitlement `core`, 1000 VALID a day) that breaks every
    /// rule at once; each step repairs the rule that answered and asks again.
    #[test]
    fn the_first_failing_rule_answers_in_a_fixed_order() {
        let policy = Policy::built_in();
        let mut license = License::new(
            Uuid::new_v4(),
            Tier::Free,
            Some(now() - Duration::days(1)),
            Vec::new(),
        );
        license.status = LicenseStatus::Revoked;
        let mut count = 1000;
        let mut answers = Vec::new();
        let mut ask = |license: &License, count: u32| {
            let code = judge(
                license,
                count,
                &policy,
                now(),
                Some("sso"),
                Some("laptop-1"),
            );
            answers.push(code);
        };
        ask(&license, count);
        license.status = LicenseStatus::Suspended;
        ask(&license, count);
        license.status = LicenseStatus::Active;
        ask(&license, count);
        license.expires_at = None;
        ask(&license, count);
        license.installations.push("laptop-1".into());
        ask(&license, count);
        license.entitlements = vec!["sso".into()].into_boxed_slice();
        ask(&license, count);
        count = 999;
        ask(&license, count);
        assert_eq!(
            answers,
            [
                ValidationCode::Revoked,
                ValidationCode::Suspended,
                ValidationCode::Expired,
                ValidationCode::InstallationNotActivated,
                ValidationCode::FeatureNotEntitled,
                ValidationCode::QuotaExceeded,
                ValidationCode::Valid,
            ]
        );
    }

    #[test]
    fn a_perpetual_license_never_expires_and_the_tiers_entitlements_count() {
        let policy = Policy::built_in();
        let license = License::new(Uuid::new_v4(), Tier::Free, None, Vec::new());
        let far = now() + Duration::days(365 * 100);
        assert_eq!(
            judge(&license, 0, &policy, far, Some("core"), None),
            ValidationCode::Valid
        );
        assert_eq!(
            judge(&license, 0, &policy, far, Some("export"), None),
            ValidationCode::FeatureNotEntitled
        );
    }

    /// Each row breaks some rules at once; the first broken one in the order answers. The
    /// validation asks for feature `sso` on installation `laptop-1`, on a free license (built-in
    /// policy: entitlement `core`, 1000 VALID a day).
    #[test]
    fn when_several_rules_fail_the_earliest_in_the_order_answers() {
        use LicenseStatus::{Active, Revoked, Suspended};
        use ValidationCode as Code;
        // (status, past its end, laptop-1 active, entitled to sso, VALID so far today, answer)
        let cases = [
            (Revoked, true, false, false, 1000, Code::Revoked),
            (Revoked, false, true, true, 0, Code::Revoked),
            (Suspended, true, false, false, 1000, Code::Suspended),
            (Suspended, false, true, true, 0, Code::Suspended),
            (Active, true, false, false, 1000, Code::Expired),
            (Active, true, true, true, 0, Code::Expired),
            (
                Active,
                false,
                false,
                false,
                1000,
                Code::InstallationNotActivated,
            ),
            (
                Active,
                false,
                false,
                true,
                0,
                Code::InstallationNotActivated,
            ),
            (Active, false, true, false, 1000, Code::FeatureNotEntitled),
            (Active, false, true, false, 0, Code::FeatureNotEntitled),
            (Active, false, true, true, 1000, Code::QuotaExceeded),
            (Active, false, true, true, 5000, Code::QuotaExceeded),
            (Active, false, true, true, 999, Code::Valid),
            (Active, false, true, true, 0, Code::Valid),
        ];
        let policy = Policy::built_in();
        let answers: Vec<_> = cases
            .iter()
            .map(|&(status, expired, activated, entitled, valid_today, _)| {
                let end = if expired {
                    now() - Duration::days(1)
                } else {
                    now() + Duration::days(1)
                };
                let own = if entitled { vec!["sso".into()] } else { vec![] };
                let mut license = License::new(Uuid::nil(), Tier::Free, Some(end), own);
                license.status = status;
                if activated {
                    license.installations.push("laptop-1".into());
                }
                let code = judge(
                    &license,
                    valid_today,
                    &policy,
                    now(),
                    Some("sso"),
                    Some("laptop-1"),
                );
                (status, expired, activated, entitled, valid_today, code)
            })
            .collect();
        assert_eq!(answers, cases);
    }

    #[test]
    fn a_license_ends_at_its_expiry_instant() {
        let policy = Policy::built_in();
        let ending = |end| License::new(Uuid::nil(), Tier::Free, Some(end), Vec::new());
        let judged = |license: &License| judge(license, 0, &policy, now(), None, None);
        assert_eq!(judged(&ending(now())), ValidationCode::Expired);
        assert_eq!(
            judged(&ending(now() + Duration::seconds(1))),
            ValidationCode::Valid
        );
    }

    #[test]
    fn what_a_validation_does_not_ask_for_is_not_checked() {
        let policy = Policy::built_in();
        // No installation, no entitlement of its own: asked for neither, it is valid.
        let license = License::new(Uuid::nil(), Tier::Free, None, Vec::new());
        assert_eq!(
            judge(&license, 0, &policy, now(), None, None),
            ValidationCode::Valid
        );
        // The license's own entitlements count as much as its tier's.
        let license = License::new(Uuid::nil(), Tier::Free, None, vec!["sso".into()]);
        assert_eq!(
            judge(&license, 0, &policy, now(), Some("sso"), None),
            ValidationCode::Valid
        );
    }

    #[test]
    fn a_tier_without_a_daily_quota_never_answers_quota_exceeded() {
        let policy = Policy::built_in();
        let license = License::new(Uuid::nil(), Tier::Enterprise, None, Vec::new());
        assert_eq!(
            judge(&license, u32::MAX, &policy, now(), None, None),
            ValidationCode::Valid
        );
    }
}
