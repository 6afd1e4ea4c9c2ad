//! `POST /v1/licenses/{id}/suspend`, `/reinstate`, `/renew` and `/policy`: the reversible
//! changes of a license's life. Revoked is final: each of these answers 409 on it.

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_api::openapi::IdempotencyKeyHeader;
use keyledger_api::{ApiError, AppJson, AppPath};
use keyledger_events::AppendOutcome;
use keyledger_events::license::{LicenseStatus, license_stream};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::aggregate::{License, LicenseCommand};
use super::issue::{parse_entitlements, parse_max_installations};
use crate::handler::CommandRequest;
use crate::idempotency::StoredResponse;
use crate::values::Reason;

const MAX_VALID_DAYS: u32 = 36_500;

/// The answer of every lifecycle command: the license as it now stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LicenseStatusResponse {
    pub license_id: Uuid,
    #[schema(value_type = String, example = "active")]
    pub status: LicenseStatus,
    /// `null` for a perpetual license.
    pub expires_at: Option<DateTime<Utc>>,
    pub entitlements: Vec<String>,
    pub max_installations: Option<u32>,
    pub position: i64,
}

fn answer(license: &License, outcome: &AppendOutcome) -> StoredResponse {
    match license {
        License::Existing(state) => StoredResponse::json(
            StatusCode::OK,
            &LicenseStatusResponse {
                license_id: state.license_id,
                status: state.status,
                expires_at: state.expires_at,
                entitlements: state.extra_entitlements.clone(),
                max_installations: state.max_installations,
                position: outcome.position,
            },
        ),
        License::Absent => StoredResponse::json(StatusCode::NOT_FOUND, &serde_json::Value::Null),
    }
}

/// Runs `command` on the license and answers with its new standing.
async fn run(
    request: &CommandRequest,
    license_id: Uuid,
    command: LicenseCommand,
) -> Result<Response, ApiError> {
    request
        .run::<License>(
            &license_stream(license_id),
            &command,
            |license, _, outcome| answer(license, outcome),
        )
        .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    /// Why, for the license's history: 1 to 1000 characters.
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: String,
}

/// Suspends a license: validations answer `SUSPENDED` until it is reinstated.
#[utoipa::path(
    post,
    path = "/v1/licenses/{id}/suspend",
    tag = "licenses",
    params(("id" = Uuid, Path, description = "The license's id."), IdempotencyKeyHeader),
    request_body = SuspendRequest,
    responses(
        (status = 200, description = "The license's standing.", body = LicenseStatusResponse),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id."),
        (status = 409, description = "`BIZ_LICENSE_REVOKED`: the license is revoked, which is final; `BIZ_LICENSE_SUSPENDED`: it is suspended already; `BIZ_CONCURRENCY_CONFLICT`: the license kept changing while the command ran; retry it."),
    ),
)]
pub async fn suspend(
    request: CommandRequest,
    AppPath(license_id): AppPath<Uuid>,
    AppJson(body): AppJson<SuspendRequest>,
) -> Result<Response, ApiError> {
    let reason = Reason::required(&body.reason)?;
    let command = LicenseCommand::Suspend {
        reason,
        at: request.now,
    };
    run(&request, license_id, command).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReinstateRequest {
    /// Why, for the license's history: at most 1000 characters.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
}

/// Reinstates a suspended license.
#[utoipa::path(
    post,
    path = "/v1/licenses/{id}/reinstate",
    tag = "licenses",
    params(("id" = Uuid, Path, description = "The license's id."), IdempotencyKeyHeader),
    request_body = ReinstateRequest,
    responses(
        (status = 200, description = "The license's standing.", body = LicenseStatusResponse),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id."),
        (status = 409, description = "`BIZ_LICENSE_REVOKED`: the license is revoked, which is final; `BIZ_LICENSE_NOT_SUSPENDED`: it is not suspended; `BIZ_CONCURRENCY_CONFLICT`: the license kept changing while the command ran; retry it."),
    ),
)]
pub async fn reinstate(
    request: CommandRequest,
    AppPath(license_id): AppPath<Uuid>,
    AppJson(body): AppJson<ReinstateRequest>,
) -> Result<Response, ApiError> {
    let reason = Reason::optional(body.reason.as_deref())?;
    let command = LicenseCommand::Reinstate {
        reason,
        at: request.now,
    };
    run(&request, license_id, command).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// Days added from the later of now and the license's end: 1 to 36500.
    #[schema(minimum = 1, maximum = 36500)]
    pub valid_days: u32,
}

/// Extends a license from the later of now and its end.
#[utoipa::path(
    post,
    path = "/v1/licenses/{id}/renew",
    tag = "licenses",
    params(("id" = Uuid, Path, description = "The license's id."), IdempotencyKeyHeader),
    request_body = RenewRequest,
    responses(
        (status = 200, description = "The license's standing.", body = LicenseStatusResponse),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id."),
        (status = 409, description = "`BIZ_LICENSE_REVOKED`: the license is revoked, which is final; `BIZ_LICENSE_PERPETUAL`: a perpetual license has no end to extend; `BIZ_CONCURRENCY_CONFLICT`: the license kept changing while the command ran; retry it."),
        (status = 422, description = "`VAL_INVALID_FIELD`: `valid_days` is not 1 to 36500, or would end the license more than 36500 days from now."),
    ),
)]
pub async fn renew(
    request: CommandRequest,
    AppPath(license_id): AppPath<Uuid>,
    AppJson(body): AppJson<RenewRequest>,
) -> Result<Response, ApiError> {
    if !(1..=MAX_VALID_DAYS).contains(&body.valid_days) {
        return Err(ApiError::invalid_field(
            "valid_days",
            format!("must be between 1 and {MAX_VALID_DAYS}"),
        ));
    }
    let command = LicenseCommand::Renew {
        valid_days: body.valid_days,
        at: request.now,
    };
    run(&request, license_id, command).await
}

/// The license's overrides: `entitlements` replace its own (the tier's stay), and
/// `max_installations` replaces the tier's limit (`null` goes back to the tier's).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    /// At most 100 names of 1 to 128 characters.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub entitlements: Option<Vec<String>>,
    /// 0 to 100000; `null` goes back to the tier's limit.
    #[serde(default)]
    #[schema(maximum = 100000)]
    pub max_installations: Option<u32>,
}

/// Sets the license's own entitlements and installation limit.
#[utoipa::path(
    post,
    path = "/v1/licenses/{id}/policy",
    tag = "licenses",
    params(("id" = Uuid, Path, description = "The license's id."), IdempotencyKeyHeader),
    request_body = PolicyRequest,
    responses(
        (status = 200, description = "The license's standing.", body = LicenseStatusResponse),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id."),
        (status = 409, description = "`BIZ_LICENSE_REVOKED`: the license is revoked, which is final; `BIZ_CONCURRENCY_CONFLICT`: the license kept changing while the command ran; retry it."),
    ),
)]
pub async fn change_policy(
    request: CommandRequest,
    AppPath(license_id): AppPath<Uuid>,
    AppJson(body): AppJson<PolicyRequest>,
) -> Result<Response, ApiError> {
    let command = LicenseCommand::ChangePolicy {
        entitlements: parse_entitlements(body.entitlements)?,
        max_installations: parse_max_installations(body.max_installations)?,
        at: request.now,
    };
    run(&request, license_id, command).await
}
