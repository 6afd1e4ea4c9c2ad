//! `ApiError`: every failure a client can see, rendered as RFC 9457 problem+json.
//!
//! Handlers and extractors return an `ApiError`; its `IntoResponse` renders the problem body
//! (with the request's id as `correlation_id`, from the request context) and keeps the error in
//! a response extension, from which the `render_problems` middleware logs it once.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The stable codes clients may match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    ValMalformedJson,
    ValInvalidBody,
    ValInvalidField,
    ValInvalidParameter,
    ValUnsupportedMediaType,
    ValBodyTooLarge,
    ValInvalidIdempotencyKey,
    ValIdempotencyKeyReused,
    ValUnrepresentable,
    ResNotFound,
    ResSessionNotFound,
    ResInstallationNotFound,
    ResLicenseNotFound,
    ResApiKeyNotFound,
    ResMethodNotAllowed,
    ResUserNotFound,
    BizLicenseRevoked,
    BizLicenseExists,
    BizConcurrencyConflict,
    BizIdempotencyInFlight,
    BizLicenseSuspended,
    BizLicenseNotSuspended,
    BizTooManyInstallations,
    BizInvalidTransition,
    BizSessionTerminal,
    BizLicensePerpetual,
    BizLicenseExpired,
    BizPerpetualNotAllowed,
    BizUserExists,
    BizUserDisabled,
    BizLastAdmin,
    RateLimited,
    AuthInvalidToken,
    AuthTokenExpired,
    AuthInvalidCredentials,
    AuthRefreshReused,
    AuthUserDisabled,
    AuthMissingCredentials,
    AuthForbidden,
    AuthCsrfFailed,
    AuthWrongPassword,
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
            Code::ValInvalidIdempotencyKey => "VAL_INVALID_IDEMPOTENCY_KEY",
            Code::ValIdempotencyKeyReused => "VAL_IDEMPOTENCY_KEY_REUSED",
            Code::ValUnrepresentable => "VAL_UNREPRESENTABLE",
            Code::ResSessionNotFound => "RES_SESSION_NOT_FOUND",
            Code::ResInstallationNotFound => "RES_INSTALLATION_NOT_FOUND",
            Code::BizLicenseSuspended => "BIZ_LICENSE_SUSPENDED",
            Code::BizLicenseExpired => "BIZ_LICENSE_EXPIRED",
            Code::BizLicenseNotSuspended => "BIZ_LICENSE_NOT_SUSPENDED",
            Code::BizTooManyInstallations => "BIZ_TOO_MANY_INSTALLATIONS",
            Code::BizIdempotencyInFlight => "BIZ_IDEMPOTENCY_IN_FLIGHT",
            Code::BizInvalidTransition => "BIZ_INVALID_TRANSITION",
            Code::BizSessionTerminal => "BIZ_SESSION_TERMINAL",
            Code::BizLicensePerpetual => "BIZ_LICENSE_PERPETUAL",
            Code::BizPerpetualNotAllowed => "BIZ_PERPETUAL_NOT_ALLOWED",
            Code::ResNotFound => "RES_NOT_FOUND",
            Code::ResLicenseNotFound => "RES_LICENSE_NOT_FOUND",
            Code::ResApiKeyNotFound => "RES_API_KEY_NOT_FOUND",
            Code::ResMethodNotAllowed => "RES_METHOD_NOT_ALLOWED",
            Code::ResUserNotFound => "RES_USER_NOT_FOUND",
            Code::BizUserExists => "BIZ_USER_EXISTS",
            Code::BizUserDisabled => "BIZ_USER_DISABLED",
            Code::BizLastAdmin => "BIZ_LAST_ADMIN",
            Code::AuthWrongPassword => "AUTH_WRONG_PASSWORD",
            Code::BizLicenseRevoked => "BIZ_LICENSE_REVOKED",
            Code::BizLicenseExists => "BIZ_LICENSE_EXISTS",
            Code::BizConcurrencyConflict => "BIZ_CONCURRENCY_CONFLICT",
            Code::RateLimited => "RATE_LIMITED",
            Code::AuthInvalidToken => "AUTH_INVALID_TOKEN",
            Code::AuthTokenExpired => "AUTH_TOKEN_EXPIRED",
            Code::AuthInvalidCredentials => "AUTH_INVALID_CREDENTIALS",
            Code::AuthRefreshReused => "AUTH_REFRESH_REUSED",
            Code::AuthUserDisabled => "AUTH_USER_DISABLED",
            Code::AuthMissingCredentials => "AUTH_MISSING_CREDENTIALS",
            Code::AuthForbidden => "AUTH_FORBIDDEN",
            Code::AuthCsrfFailed => "AUTH_CSRF_FAILED",
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
            Code::ValInvalidIdempotencyKey => "Invalid Idempotency-Key",
            Code::ValIdempotencyKeyReused => "Idempotency-Key reused",
            Code::ValUnrepresentable => "Value cannot be stored",
            Code::ResSessionNotFound => "Session not found",
            Code::ResInstallationNotFound => "Installation not found",
            Code::BizLicenseSuspended => "License suspended",
            Code::BizLicenseExpired => "License expired",
            Code::BizLicenseNotSuspended => "License not suspended",
            Code::BizTooManyInstallations => "Too many installations",
            Code::BizIdempotencyInFlight => "Request in flight",
            Code::BizInvalidTransition => "Invalid transition",
            Code::BizSessionTerminal => "Session closed",
            Code::BizLicensePerpetual => "License perpetual",
            Code::BizPerpetualNotAllowed => "Perpetual license not allowed",
            Code::ResNotFound => "Not found",
            Code::ResLicenseNotFound => "License not found",
            Code::ResApiKeyNotFound => "API key not found",
            Code::ResMethodNotAllowed => "Method not allowed",
            Code::ResUserNotFound => "User not found",
            Code::BizUserExists => "User exists",
            Code::BizUserDisabled => "User disabled",
            Code::BizLastAdmin => "Last admin",
            Code::AuthWrongPassword => "Wrong password",
            Code::BizLicenseRevoked => "License revoked",
            Code::BizLicenseExists => "License exists",
            Code::BizConcurrencyConflict => "Concurrent modification",
            Code::RateLimited => "Too many requests",
            Code::AuthInvalidToken => "Invalid token",
            Code::AuthTokenExpired => "Token expired",
            Code::AuthInvalidCredentials => "Invalid credentials",
            Code::AuthRefreshReused => "Refresh token reused",
            Code::AuthUserDisabled => "User disabled",
            Code::AuthMissingCredentials => "Credentials required",
            Code::AuthForbidden => "Forbidden",
            Code::AuthCsrfFailed => "CSRF token missing or wrong",
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
    /// Sent as `Retry-After` (seconds).
    pub retry_after: Option<u64>,
    /// Extra problem members (e.g. `current_status`, `allowed`).
    pub members: serde_json::Map<String, serde_json::Value>,
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
            members: serde_json::Map::new(),
        }
    }

    /// Adds a member to the problem body.
    pub fn with_member(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.members.insert(name.to_owned(), value.into());
        self
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

    /// 401: the credentials presented do not authenticate anyone.
    pub fn unauthorized(code: Code, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }

    /// 403: the caller is known but may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, Code::AuthForbidden, detail)
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

impl ApiError {
    /// The client's data was refused by the database: the same request cannot succeed.
    pub fn unstorable(cause: impl std::fmt::Display) -> Self {
        ApiError {
            internal: Some(crate::redact::redact_license_keys(&cause.to_string()).into_owned()),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                Code::ValUnrepresentable,
                "the request holds a value the service cannot store",
            )
        }
    }

    /// A database failure, by what it means: an outage is 503 with `Retry-After`, data the
    /// database refuses is 422, anything else is our fault (500).
    pub fn database(error: &tokio_postgres::Error) -> Self {
        use keyledger_events::failure::{Failure, classify, describe};
        match classify(error) {
            Failure::Unavailable => Self::unavailable(describe(error)),
            Failure::Rejected => Self::unstorable(describe(error)),
            Failure::Internal => Self::internal(describe(error)),
        }
    }

    /// A failure of the event store, by kind.
    pub fn store(error: keyledger_events::StoreError) -> Self {
        use keyledger_events::StoreError;
        match error {
            StoreError::Unavailable(_) => Self::unavailable(error),
            StoreError::Rejected(_) => Self::unstorable(error),
            StoreError::IdempotencyClaimLost => Self::conflict(
                Code::BizIdempotencyInFlight,
                "another request took over this Idempotency-Key; retry to get its response",
            ),
            StoreError::Conflict { .. } => Self::conflict(
                Code::BizConcurrencyConflict,
                "the resource was changed concurrently; retry the request",
            ),
            StoreError::DuplicateEvent(_) | StoreError::Internal(_) => Self::internal(error),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::database(&error)
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match &error {
            deadpool_postgres::PoolError::Backend(e) => Self::database(e),
            _ => Self::unavailable(error),
        }
    }
}

impl From<keyledger_events::StoreError> for ApiError {
    fn from(error: keyledger_events::StoreError) -> Self {
        Self::store(error)
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
    /// Renders the problem body now, with the request's id and path from the request context,
    /// so that layers inside `render_problems` (idempotency) see the final bytes.
    fn into_response(self) -> Response {
        let context = RequestContext::current();
        let mut problem = serde_json::Map::new();
        problem.insert(
            "type".into(),
            format!("https://keyledger.dev/problems/{}", self.code.as_str()).into(),
        );
        problem.insert("title".into(), self.code.title().into());
        problem.insert("status".into(), self.status.as_u16().into());
        // A key or token sent in a path or a value is not echoed back, nor kept in a log.
        problem.insert("detail".into(), crate::redact_text(&self.detail).into());
        problem.insert("instance".into(), crate::redact_text(&context.path).into());
        problem.insert("code".into(), self.code.as_str().into());
        problem.insert("correlation_id".into(), context.request_id.into());
        for (name, value) in &self.members {
            problem.entry(name.clone()).or_insert_with(|| value.clone());
        }
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body,
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(Arc::new(self));
        response
    }
}

/// The request's id and path, for problem bodies. Set by `request_id_layer` for the
/// duration of the request.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub request_id: String,
    pub path: String,
}

tokio::task_local! {
    static REQUEST_CONTEXT: RequestContext;
}

impl RequestContext {
    pub fn current() -> RequestContext {
        REQUEST_CONTEXT.try_with(Clone::clone).unwrap_or_default()
    }

    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        REQUEST_CONTEXT.scope(self, future).await
    }
}

/// Logs each failure once (5xx with its internal cause, 4xx briefly) and turns the router's
/// bare 405s into problems.
pub async fn render_problems(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let Some(error) = response.extensions().get::<Arc<ApiError>>().cloned() else {
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            return ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::ResMethodNotAllowed,
                format!("{path} does not accept this method"),
            )
            .into_response();
        }
        return response;
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
    response
}
