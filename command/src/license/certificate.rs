//! `POST /v1/licenses/{id}/certificate`: a signed certificate of the license for client
//! software that runs offline (it checks the certificate with the published keys instead of
//! calling home). The hand-out is a `CertificateIssued` event on the license's stream, decided
//! like every license command: a revoked, suspended or expired license gets none.

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_api::openapi::IdempotencyKeyHeader;
use keyledger_api::{ApiError, AppJson, AppPath};
use keyledger_events::audit::{CERTIFICATE_TYPE, CertificateClaims};
use keyledger_events::license::{CertificateIssued, LicenseEvent, license_stream};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::aggregate::{License, LicenseCommand};
use super::policy::Policy;
use crate::audit::AuditKey;
use crate::handler::CommandRequest;
use crate::idempotency::StoredResponse;
use crate::values::InstallationId;
use keyledger_events::AppendOutcome;

/// Days a certificate is valid when the request does not say.
pub const DEFAULT_VALID_DAYS: u32 = 30;
/// The longest a certificate may be valid.
pub const MAX_VALID_DAYS: u32 = 365;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// Bind the certificate to one active installation of the license.
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub installation_id: Option<String>,
    /// 1 to 365 days (default 30), never past the license's end.
    #[schema(minimum = 1, maximum = 365)]
    pub ttl_days: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateResponse {
    /// The signed certificate: a JWT (compact JWS, EdDSA) whose header names the key.
    pub certificate: String,
    pub certificate_id: Uuid,
    pub license_id: Uuid,
    pub valid_until: DateTime<Utc>,
    pub kid: String,
    pub position: i64,
}

/// What the certificate recorded by `issued` states about `license`.
pub fn claims(license: &License, issued: &CertificateIssued, policy: &Policy) -> CertificateClaims {
    let (tier, entitlements, expires_at) = match license {
        License::Existing(state) => (
            state.tier.as_str().to_owned(),
            policy
                .entitlements(state.tier, &state.extra_entitlements)
                .into_iter()
                .collect(),
            state.expires_at,
        ),
        License::Absent => (String::new(), Vec::new(), None),
    };
    CertificateClaims {
        iss: keyledger_api::jwt::ISSUER.to_owned(),
        typ: CERTIFICATE_TYPE.to_owned(),
        certificate_id: issued.certificate_id,
        license_id: issued.license_id,
        tier,
        entitlements,
        expires_at,
        installation_id: issued.installation_id.clone(),
        issued_at: issued.issued_at,
        valid_until: issued.valid_until,
        iat: issued.issued_at.timestamp(),
        exp: issued.valid_until.timestamp(),
    }
}

/// The certificate the command decided, signed.
fn answer(
    license: &License,
    events: &[LicenseEvent],
    outcome: &AppendOutcome,
    policy: &Policy,
    audit: &AuditKey,
) -> StoredResponse {
    let Some(issued) = events.iter().find_map(|event| match event {
        LicenseEvent::CertificateIssued(issued) => Some(issued),
        _ => None,
    }) else {
        // `Certify` decides a `CertificateIssued` or refuses.
        return StoredResponse::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"detail": "the certificate command decided no certificate"}),
        );
    };
    StoredResponse::json(
        StatusCode::CREATED,
        &CertificateResponse {
            certificate: audit
                .key()
                .sign_certificate(&claims(license, issued, policy)),
            certificate_id: issued.certificate_id,
            license_id: issued.license_id,
            valid_until: issued.valid_until,
            kid: issued.kid.clone(),
            position: outcome.position,
        },
    )
}

/// A signed statement of the license's standing that an installation can check offline,
/// against the keys at `/.well-known/keyledger-keys.json`.
#[utoipa::path(
    post,
    path = "/v1/licenses/{id}/certificate",
    tag = "licenses",
    params(("id" = Uuid, Path, description = "The license's id."), IdempotencyKeyHeader),
    request_body = CertificateRequest,
    responses(
        (status = 201, description = "The certificate.", body = CertificateResponse),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id; `RES_INSTALLATION_NOT_FOUND`: the installation is not active on it."),
        (status = 409, description = "`BIZ_LICENSE_REVOKED`: the license is revoked, which is final; `BIZ_LICENSE_SUSPENDED`: the license is suspended; `BIZ_LICENSE_EXPIRED`: the license has ended; `BIZ_CONCURRENCY_CONFLICT`: the license kept changing while the command ran; retry it."),
    ),
)]
#[tracing::instrument(skip_all, fields(license.id = %license_id))]
pub async fn handle(
    request: CommandRequest,
    AppPath(license_id): AppPath<Uuid>,
    AppJson(body): AppJson<CertificateRequest>,
) -> Result<Response, ApiError> {
    let state = request.state();
    let installation_id = match &body.installation_id {
        Some(id) => Some(InstallationId::parse(id)?),
        None => None,
    };
    let valid_days = match body.ttl_days {
        None => DEFAULT_VALID_DAYS,
        Some(days) => u32::try_from(days)
            .ok()
            .filter(|days| (1..=MAX_VALID_DAYS).contains(days))
            .ok_or_else(|| {
                ApiError::invalid_field("ttl_days", format!("must be 1 to {MAX_VALID_DAYS}"))
            })?,
    };
    // The key is in the log before any signature of it leaves the service.
    state
        .audit_key
        .ensure_recorded(state.store.as_ref())
        .await
        .map_err(|e| ApiError::unavailable(format!("{e:#}")))?;
    let command = LicenseCommand::Certify {
        certificate_id: Uuid::new_v4(),
        installation_id,
        valid_days,
        kid: state.audit_key.key().kid().to_owned(),
        at: request.now,
    };
    let (policy, audit) = (state.policy.clone(), state.audit_key.clone());
    request
        .run::<License>(
            &license_stream(license_id),
            &command,
            move |license, events, outcome| answer(license, events, outcome, &policy, &audit),
        )
        .await
}
