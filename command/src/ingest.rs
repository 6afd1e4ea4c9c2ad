//! `POST /v1/requests`: other services of the platform send their request records (one, or a
//! batch of up to 1000), redacted like the service's own before anything is written.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keyledger_api::request_log::record_append;
use keyledger_api::{ApiError, AppJson, redact_body, redact_json, redact_text};
use keyledger_events::request::ApiRequestRecorded;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::CommandState;
use crate::license::store_error;

pub const MAX_RECORDS: usize = 1000;
/// The body limit of this route: a full batch of records with bodies.
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// One record, or a batch as an array or `{records: [...]}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum IngestRequest {
    Batch { records: Vec<Value> },
    Many(Vec<Value>),
    One(Value),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    service: String,
    method: String,
    path: String,
    status: u16,
    duration_ms: f64,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    caller: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    at: Option<DateTime<Utc>>,
    #[serde(default)]
    request_body: Option<Value>,
    #[serde(default)]
    response_body: Option<Value>,
}

#[derive(Debug, Serialize)]
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

fn body(value: Option<Value>, limit: usize) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(text) => Some(redact_body(text.as_bytes(), limit)),
        mut other => {
            redact_json(&mut other);
            Some(redact_body(other.to_string().as_bytes(), limit))
        }
    }
}

fn parse(value: Value, now: DateTime<Utc>, limit: usize) -> Result<ApiRequestRecorded, String> {
    let record: Record = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let method = text("method", &record.method, 16)?.to_ascii_uppercase();
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("method: must be an HTTP method name".into());
    }
    if !(100..=599).contains(&record.status) {
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
        path: text("path", &record.path, 2048)?,
        query,
        caller: optional("caller", record.caller, 128)?,
        status: record.status,
        duration_ms: record.duration_ms,
        request_body: body(record.request_body, limit),
        response_body: body(record.response_body, limit),
        at: keyledger_events::chain::to_micros(record.at.unwrap_or(now)),
    })
}

pub async fn handle(
    State(state): State<CommandState>,
    AppJson(request): AppJson<IngestRequest>,
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
        result.map_err(store_error)?;
    }
    Ok((StatusCode::ACCEPTED, Json(IngestResponse { accepted })))
}
