//! `ApiError`: every failure a client can see, rendered as RFC 9457 problem+json.
//!
//! Handlers and extractors return an `ApiError`; its `IntoResponse` only stores it in a
//! response extension. The `render_problems` middleware, which knows the request id, writes the
//! body, adds `correlation_id`, and logs the failure once.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::request_id::RequestId;

/// The stable codes clients may match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    ValMalformedJson,
    ValInvalidBody,
    ValInvalidField,
    ValInvalidParameter,
    ValUnsupportedMediaType,
    ValBodyTooLarge,
    ResNotFound,
    ResLicenseNotFound,
    ResMethodNotAllowed,
    BizLicenseRevoked,
    BizLicenseExists,
    BizConcurrencyConflict,
    SysInternal,
    SysUnavailable,
    SysConsistencyTimeout,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::ValMalformedJson => "VAL_MALFORMED_JSON",
            Code::ValInvalidBody => "VAL_INVALID_BODY",
            Code::ValInvalidField => "VAL_INVALID_FIELD",
            Code::ValInvalidParameter => "VAL_INVALID_PARAMETER",
            Code::ValUnsupportedMediaType => "VAL_UNSUPPORTED_MEDIA_TYPE",
            Code::ValBodyTooLarge => "VAL_BODY_TOO_LARGE",
            Code::ResNotFound => "RES_NOT_FOUND",
            Code::ResLicenseNotFound => "RES_LICENSE_NOT_FOUND",
            Code::ResMethodNotAllowed => "RES_METHOD_NOT_ALLOWED",
            Code::BizLicenseRevoked => "BIZ_LICENSE_REVOKED",
            Code::BizLicenseExists => "BIZ_LICENSE_EXISTS",
            Code::BizConcurrencyConflict => "BIZ_CONCURRENCY_CONFLICT",
            Code::SysInternal => "SYS_INTERNAL",
            Code::SysUnavailable => "SYS_UNAVAILABLE",
            Code::SysConsistencyTimeout => "SYS_CONSISTENCY_TIMEOUT",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Code::ValMalformedJson => "Malformed JSON",
            Code::ValInvalidBody => "Invalid request body",
            Code::ValInvalidField => "Invalid field",
            Code::ValInvalidParameter => "Invalid parameter",
            Code::ValUnsupportedMediaType => "Unsupported media type",
            Code::ValBodyTooLarge => "Request body too large",
            Code::ResNotFound => "Not found",
            Code::ResLicenseNotFound => "License not found",
            Code::ResMethodNotAllowed => "Method not allowed",
            Code::BizLicenseRevoked => "License revoked",
            Code::BizLicenseExists => "License exists",
            Code::BizConcurrencyConflict => "Concurrent modification",
            Code::SysInternal => "Internal error",
            Code::SysUnavailable => "Service unavailable",
            Code::SysConsistencyTimeout => "Projection not caught up",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    /// Shown to the client. For 5xx it is generic; the cause goes to `internal`.
    pub detail: String,
    /// Logged, never shown.
    pub internal: Option<String>,
    /// Extra response headers (e.g. Retry-After).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// `detail` is shown to the client and logged; license keys in it are redacted.
    pub fn new(status: StatusCode, code: Code, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        ApiError {
            status,
            code,
            detail: crate::redact::redact_license_keys(&detail).into_owned(),
            internal: None,
            retry_after: None,
        }
    }

    pub fn invalid_field(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            Code::ValInvalidField,
            format!("{field}: {message}"),
        )
    }

    pub fn invalid_parameter(name: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            Code::ValInvalidParameter,
            format!("{name}: {message}"),
        )
    }

    pub fn not_found(code: Code, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn conflict(code: Code, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// A failure of ours: the client learns only that it happened.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError {
            internal: Some(crate::redact::redact_license_keys(&cause.to_string()).into_owned()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::SysInternal,
                "internal error; quote the correlation_id when reporting it",
            )
        }
    }

    /// A dependency is down; retrying later may work.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        ApiError {
            internal: Some(crate::redact::redact_license_keys(&cause.to_string()).into_owned()),
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::SysUnavailable,
                "the service cannot reach its database; retry later",
            )
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code.as_str(),
            self.detail
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(Arc::new(self));
        response
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    instance: &'a str,
    code: &'a str,
    correlation_id: &'a str,
}

/// Writes problem+json bodies for `ApiError`s (and for the router's bare 404/405s), with the
/// request's id as `correlation_id`, and logs each failure once.
pub async fn render_problems(request: Request, next: Next) -> Response {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let error = match response.extensions_mut().remove::<Arc<ApiError>>() {
        Some(error) => error,
        None => match response.status() {
            StatusCode::METHOD_NOT_ALLOWED => Arc::new(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::ResMethodNotAllowed,
                format!("{path} does not accept this method"),
            )),
            _ => return response,
        },
    };
    if error.status.is_server_error() {
        tracing::error!(
            error.code = error.code.as_str(),
            error.cause = error.internal.as_deref().unwrap_or(&error.detail),
            "request failed"
        );
    } else {
        tracing::info!(
            error.code = error.code.as_str(),
            error.detail = %error.detail,
            "request rejected"
        );
    }
    let problem = Problem {
        kind: format!("https://keyledger.dev/problems/{}", error.code.as_str()),
        title: error.code.title(),
        status: error.status.as_u16(),
        detail: &error.detail,
        instance: &path,
        code: error.code.as_str(),
        correlation_id: &request_id,
    };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let (mut parts, _) = response.into_parts();
    parts.status = error.status;
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(seconds) = error.retry_after {
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    Response::from_parts(parts, Body::from(body))
}
