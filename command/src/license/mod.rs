//! The license aggregate and its command routes.

pub mod aggregate;
pub mod certificate;
pub mod installations;
pub mod issue;
pub mod key;
pub mod lifecycle;
pub mod policy;
pub mod revoke;
pub mod validate;

use axum::http::StatusCode;
use keyledger_api::{ApiError, Code};

use crate::execute::CommandError;
use aggregate::LicenseError;

impl From<CommandError<LicenseError>> for ApiError {
    fn from(error: CommandError<LicenseError>) -> Self {
        match error {
            CommandError::Domain(LicenseError::NotFound) => {
                ApiError::not_found(Code::ResLicenseNotFound, "no license has this id")
            }
            CommandError::Domain(LicenseError::Revoked) => ApiError::conflict(
                Code::BizLicenseRevoked,
                "the license is revoked; revoked is final",
            ),
            CommandError::Domain(LicenseError::AlreadyIssued) => ApiError::conflict(
                Code::BizLicenseExists,
                "a license with this id already exists",
            ),
            CommandError::Domain(LicenseError::AlreadySuspended) => ApiError::conflict(
                Code::BizLicenseSuspended,
                "the license is already suspended",
            ),
            CommandError::Domain(LicenseError::Suspended) => ApiError::conflict(
                Code::BizLicenseSuspended,
                "the license is suspended; reinstate it first",
            ),
            CommandError::Domain(LicenseError::NotSuspended) => {
                ApiError::conflict(Code::BizLicenseNotSuspended, "the license is not suspended")
            }
            CommandError::Domain(LicenseError::TooManyInstallations { limit }) => {
                ApiError::conflict(
                    Code::BizTooManyInstallations,
                    format!(
                        "the license has all its {limit} installations active; deactivate one first"
                    ),
                )
                .with_member("max_installations", limit)
            }
            CommandError::Domain(LicenseError::InstallationNotFound) => ApiError::not_found(
                Code::ResInstallationNotFound,
                "no active installation has this id on this license",
            ),
            CommandError::Domain(LicenseError::Perpetual) => ApiError::conflict(
                Code::BizLicensePerpetual,
                "the license is perpetual: it never expires, so there is nothing to renew",
            ),
            CommandError::Domain(LicenseError::PerpetualNotAllowed { tier }) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                Code::BizPerpetualNotAllowed,
                format!(
                    "perpetual: the {} tier's policy does not allow perpetual licenses; \
                     give valid_days or expires_at",
                    tier.as_str()
                ),
            )
            .with_member("tier", tier.as_str()),
            CommandError::Domain(LicenseError::EndTooFar) => ApiError::invalid_field(
                "valid_days",
                format!(
                    "the license would end more than {} days from now",
                    aggregate::MAX_TERM_DAYS
                ),
            ),
            CommandError::Domain(LicenseError::Expired) => ApiError::conflict(
                Code::BizLicenseExpired,
                "the license has expired; renew it first",
            ),
            CommandError::Conflict(cause) => ApiError {
                internal: Some(cause.to_string()),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    Code::BizConcurrencyConflict,
                    "the license kept changing while this command ran; retry it",
                )
            },
            CommandError::Store(cause) => ApiError::store(cause),
        }
    }
}
