//! `POST /v1/requests`: other services of the platform send their request records (one, or a
//! batch of up to 1000), redacted like the service's own before anything is written.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keyledger_api::request_log::record_append;
use keyledger_api::{ApiError, AppJsonKeepingText, TextMembers, redact_body, redact_text};
use keyledger_events::request::ApiRequestRecorded;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::CommandState;

pub const MAX_RECORDS: usize = 1000;
/// The body limit of this route: a full batch of records with bodies.
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// One record, or a batch as an array or `{records: [...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum IngestRequest {
    Batch {
        /// 1 to 1000 records.
        #[schema(value_type = Vec<Record>, min_items = 1, max_items = 1000)]
        records: Vec<Value>,
    },
    #[schema(value_type = Vec<Record>)]
    Many(Vec<Value>),
    #[schema(value_type = Record)]
    One(Value),
}

/// One record as sent. Two shapes are accepted: this service's own names (`path`, `status`,
/// `caller`, `at`) and those of the platform's existing request logger (`endpoint`,
/// `status_code`, `user_identifier`, `timestamp`); a record names each field once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Record {
    /// 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64, example = "billing")]
    service: String,
    /// An HTTP method name.
    #[schema(min_length = 1, max_length = 16, example = "POST")]
    method: String,
    /// 1 to 2048 characters; required unless `endpoint` is given.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 2048)]
    path: Option<String>,
    /// The other name of `path`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 2048)]
    endpoint: Option<String>,
    /// 100 to 599; required unless `status_code` is given.
    #[serde(default)]
    #[schema(minimum = 100, maximum = 599)]
    status: Option<u16>,
    /// The other name of `status`.
    #[serde(default)]
    #[schema(minimum = 100, maximum = 599)]
    status_code: Option<u16>,
    #[schema(minimum = 0)]
    duration_ms: f64,
    /// The route template, 1 to 512 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 512)]
    route: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    caller: Option<Caller>,
    /// The other name of `caller`.
    #[serde(default)]
    user_identifier: Option<Caller>,
    /// 1 to 128 characters (one is made up when absent).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    request_id: Option<String>,
    /// When it was served (default: when it arrives).
    #[serde(default)]
    at: Option<Timestamp>,
    /// The other name of `at`.
    #[serde(default)]
    timestamp: Option<Timestamp>,
    /// A string, or any JSON value kept as the text it was sent as (numbers are not held to
    /// what a double carries); redacted, cut to the configured length.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    request_body: Option<Value>,
    /// Like `request_body`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    response_body: Option<Value>,
}

/// A caller: text (1 to 128 characters), or a numeric user id.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
enum Caller {
    Text(String),
    Number(i64),
}

impl Caller {
    fn into_text(self) -> String {
        match self {
            Caller::Text(text) => text,
            Caller::Number(n) => n.to_string(),
        }
    }
}

/// When the request was served: RFC 3339, an ISO 8601 date-time without offset (UTC), or Unix
/// seconds.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
enum Timestamp {
    Text(String),
    Seconds(f64),
}

impl Timestamp {
    fn parse(self, field: &str) -> Result<DateTime<Utc>, String> {
        let parsed = match &self {
            Timestamp::Text(text) => {
                let text = text.trim();
                DateTime::parse_from_rfc3339(text)
                    .map(|t| t.with_timezone(&Utc))
                    .ok()
                    .or_else(|| {
                        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                            .or_else(|_| {
                                chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                            })
                            .ok()
                            .map(|t| t.and_utc())
                    })
            }
            Timestamp::Seconds(seconds) if seconds.is_finite() && *seconds >= 0.0 => {
                let micros = (seconds * 1_000_000.0).round();
                (micros < i64::MAX as f64)
                    .then(|| DateTime::from_timestamp_micros(micros as i64))
                    .flatten()
            }
            Timestamp::Seconds(_) => None,
        };
        parsed.ok_or_else(|| {
            format!(
                "{field}: must be an RFC 3339 date-time (e.g. 2025-01-31T12:00:00Z) or Unix seconds"
            )
        })
    }
}

/// The value of a field that has two names; naming it twice is refused.
fn one_of<T>(
    name: &str,
    value: Option<T>,
    alias: &str,
    alias_value: Option<T>,
) -> Result<Option<T>, String> {
    match (value, alias_value) {
        (Some(_), Some(_)) => Err(format!(
            "{name}: send either `{name}` or `{alias}`, not both"
        )),
        (value, alias_value) => Ok(value.or(alias_value)),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponse {
    pub accepted: usize,
}

fn text(field: &str, value: &str, max: usize) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(format!("{field}: must be 1 to {max} characters"));
    }
    Ok(redact_text(value))
}

/// A record's bodies are stored as the text they are: one sent as JSON arrives here as the
/// JSON string of its text, exactly as sent ([`RecordBodies`]), and is redacted as JSON.
fn body(value: Option<Value>, limit: usize) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(text) => Some(redact_body(text.as_bytes(), limit)),
        other => Some(redact_body(other.to_string().as_bytes(), limit)),
    }
}

/// The members of a record that hold another service's bodies: kept as the text they were
/// sent as, so a number no double carries or a member order is not lost or refused.
pub struct RecordBodies;

impl TextMembers for RecordBodies {
    const NAMES: &'static [&'static str] = &["request_body", "response_body"];
}

fn parse(value: Value, now: DateTime<Utc>, limit: usize) -> Result<ApiRequestRecorded, String> {
    let record: Record = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let path = one_of("path", record.path, "endpoint", record.endpoint)?
        .ok_or("path: missing (or `endpoint`)")?;
    let status = one_of("status", record.status, "status_code", record.status_code)?
        .ok_or("status: missing (or `status_code`)")?;
    let caller = one_of(
        "caller",
        record.caller,
        "user_identifier",
        record.user_identifier,
    )?
    .map(Caller::into_text);
    let at = match one_of("at", record.at, "timestamp", record.timestamp)? {
        Some(at) => at.parse("at")?,
        None => now,
    };
    let method = text("method", &record.method, 16)?.to_ascii_uppercase();
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("method: must be an HTTP method name".into());
    }
    if !(100..=599).contains(&status) {
        return Err("status: must be between 100 and 599".into());
    }
    if !record.duration_ms.is_finite() || record.duration_ms < 0.0 {
        return Err("duration_ms: must be 0 or more".into());
    }
    let optional =
        |field: &str, value: Option<String>, max: usize| -> Result<Option<String>, String> {
            value.map(|v| text(field, &v, max)).transpose()
        };
    let query = record.query.map(|q| {
        let mut pairs = Vec::new();
        for pair in q.split('&') {
            match pair.split_once('=') {
                Some((name, _)) if keyledger_api::is_secret_name(name) => {
                    pairs.push(format!("{name}=[REDACTED]"));
                }
                _ => pairs.push(pair.to_owned()),
            }
        }
        redact_text(&pairs.join("&"))
    });
    Ok(ApiRequestRecorded {
        record_id: Uuid::new_v4(),
        request_id: optional("request_id", record.request_id, 128)?
            .unwrap_or_else(|| Uuid::new_v4().to_string()),
        service: text("service", &record.service, 64)?,
        method,
        route: optional("route", record.route, 512)?,
        path: text("path", &path, 2048)?,
        query,
        caller: optional("caller", caller, 128)?,
        status,
        duration_ms: record.duration_ms,
        request_body: body(record.request_body, limit),
        response_body: body(record.response_body, limit),
        at: keyledger_events::chain::to_micros(at),
    })
}

/// Records other services' requests in the request log: one record, an array, or
/// `{records: [...]}`; all or none are kept.
#[utoipa::path(
    post,
    path = "/v1/requests",
    tag = "requests",
    request_body = IngestRequest,
    responses(
        (status = 202, description = "Every record is in the log.", body = IngestResponse),
    ),
)]
pub async fn handle(
    State(state): State<CommandState>,
    AppJsonKeepingText(request, _): AppJsonKeepingText<IngestRequest, RecordBodies>,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let (values, batch) = match request {
        IngestRequest::Batch { records } => (records, true),
        IngestRequest::Many(records) => (records, true),
        IngestRequest::One(record) => (vec![record], false),
    };
    if values.is_empty() || values.len() > MAX_RECORDS {
        return Err(ApiError::invalid_field(
            "records",
            format!("send 1 to {MAX_RECORDS} records"),
        ));
    }
    let now = (state.clock)();
    let mut records = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let record = parse(value, now, state.request_body_limit).map_err(|problem| {
            let field = if batch {
                format!("records[{index}]")
            } else {
                "record".to_owned()
            };
            ApiError::invalid_field(&field, problem)
        })?;
        records.push(record);
    }
    let accepted = records.len();
    let appends = records
        .into_iter()
        .map(|record| state.store.append(record_append(record)));
    for result in futures::future::join_all(appends).await {
        result.map_err(ApiError::store)?;
    }
    Ok((StatusCode::ACCEPTED, Json(IngestResponse { accepted })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn the_platform_loggers_names_map_to_this_services_fields() {
        let record = parse(
            json!({"service": "llm", "endpoint": "/v1/chat", "method": "POST",
                   "user_identifier": "ann@example.com", "request_body": {"prompt": "hi"},
                   "response_body": [1, 2], "status_code": 201, "duration_ms": 3.5,
                   "timestamp": "2025-01-31T12:00:00.250"}),
            now(),
            2000,
        );
        let record = record.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(record.path, "/v1/chat");
        assert_eq!(record.status, 201);
        assert_eq!(record.caller.as_deref(), Some("ann@example.com"));
        assert_eq!(record.at.to_rfc3339(), "2025-01-31T12:00:00.250+00:00");
        assert_eq!(record.request_body.as_deref(), Some(r#"{"prompt":"hi"}"#));
        assert_eq!(record.response_body.as_deref(), Some("[1,2]"));
    }

    #[test]
    fn a_field_named_both_ways_is_refused() {
        for (name, alias, value) in [
            ("path", "endpoint", json!("/x")),
            ("status", "status_code", json!(200)),
            ("caller", "user_identifier", json!("u")),
            ("at", "timestamp", json!("2025-01-31T12:00:00Z")),
        ] {
            let mut record = json!({"service": "s", "method": "GET", "path": "/",
                                    "status": 200, "duration_ms": 1});
            record[name] = value.clone();
            record[alias] = value;
            let problem = parse(record, now(), 2000).err().unwrap_or_default();
            assert!(problem.starts_with(&format!("{name}: ")), "{problem}");
            assert!(problem.contains(alias), "{problem}");
        }
    }

    #[test]
    fn unknown_fields_and_missing_paths_are_still_refused() {
        let unknown = json!({"service": "s", "method": "GET", "path": "/", "status": 200,
                             "duration_ms": 1, "latency": 3});
        assert!(parse(unknown, now(), 2000).is_err());
        let no_path = json!({"service": "s", "method": "GET", "status": 200, "duration_ms": 1});
        assert!(
            parse(no_path, now(), 2000)
                .err()
                .unwrap_or_default()
                .starts_with("path:")
        );
    }

    #[test]
    fn timestamps_may_be_unix_seconds_and_bad_ones_are_named() {
        let mut record = json!({"service": "s", "method": "GET", "path": "/", "status": 200,
                                "duration_ms": 1, "timestamp": 1_700_000_000.5});
        let parsed = parse(record.clone(), now(), 2000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.at.timestamp_micros(), 1_700_000_000_500_000);
        record["timestamp"] = json!("yesterday");
        let problem = parse(record, now(), 2000).err().unwrap_or_default();
        assert!(problem.starts_with("at:"), "{problem}");
    }
}
