//! HTTP conventions shared by the command and query routes: RFC 9457 problem+json errors with a
//! stable `code`, JSON and path extractors whose rejections use that format, request ids,
//! the consistency-position header; rate limits and the failed-login throttle.

pub mod api_key;
pub mod body_limit;
mod error;
mod extract;
pub mod json_check;
pub mod jwt;
pub mod login_throttle;
pub mod openapi;
pub mod permission;
pub mod principal;
pub mod rate_limit;
mod redact;
mod request_id;
pub mod request_log;
pub mod routes;
pub mod session;

pub use error::{ApiError, Code, RequestContext, render_problems};
pub use extract::{
    AppJson, AppJsonKeepingText, AppPath, AppQuery, ConsistencyPosition, TextMembers,
};
pub use permission::Permission;
pub use principal::{Principal, Role};
pub use redact::{
    is_secret_name, redact_body, redact_body_prefix, redact_json, redact_license_keys, redact_text,
};
pub use request_id::{REQUEST_ID_HEADER, RequestId, request_id_layer};
pub use routes::{Route, Routes};
