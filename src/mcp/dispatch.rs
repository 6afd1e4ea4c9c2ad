//! A tool call runs as its route's own request, through the service's whole router: the same
//! authentication, permission table, rate limits, idempotency, handler and request log as an
//! HTTP client gets, with the caller's credentials. Nothing of a route's rules is restated here.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, header};
use keyledger_api::request_log::RouteLabel;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::tools::{self, ToolSpec};

/// The service's router, set once it is built (the MCP route is part of it).
#[derive(Clone, Default)]
pub struct RouterCell(Arc<OnceLock<Router>>);

impl RouterCell {
    pub fn set(&self, router: Router) {
        let _ = self.0.set(router);
    }

    fn get(&self) -> Option<Router> {
        self.0.get().cloned()
    }
}

/// Who is calling, as the MCP request arrived.
#[derive(Clone, Default)]
pub struct Caller {
    pub authorization: Option<HeaderValue>,
    pub peer: Option<SocketAddr>,
}

/// A call's outcome: the route's answer, or why it was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The route's success body.
    Done(Value),
    /// The route's problem (or the tool's own refusal of its arguments), as
    /// `{status, code, detail, correlation_id}`.
    Refused(Value),
}

/// The most of a route's answer read back (a page of results is well under it).
const ANSWER_LIMIT: usize = 16 * 1024 * 1024;

pub async fn run(
    router: &RouterCell,
    tool: &ToolSpec,
    arguments: serde_json::Map<String, Value>,
    caller: &Caller,
) -> Outcome {
    let call = match tools::call(tool, arguments) {
        Ok(call) => call,
        Err(detail) => {
            return Outcome::Refused(json!({
                "status": 422,
                "code": "VAL_INVALID_FIELD",
                "detail": detail,
            }));
        }
    };
    let Some(router) = router.get() else {
        return unavailable("the service is starting");
    };
    let mut request = Request::builder()
        .method(call.method)
        .uri(&call.path_and_query);
    if let Some(authorization) = &caller.authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    for (name, value) in &call.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let body = match &call.body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let mut request = match request.body(body) {
        Ok(request) => request,
        Err(error) => {
            return Outcome::Refused(json!({
                "status": 422,
                "code": "VAL_INVALID_FIELD",
                "detail": format!("an argument cannot be sent: {error}"),
            }));
        }
    };
    request
        .extensions_mut()
        .insert(RouteLabel(format!("mcp:{}", tool.name)));
    if let Some(peer) = caller.peer {
        request.extensions_mut().insert(ConnectInfo(peer));
    }
    let Ok(response) = router.oneshot(request).await;
    let status = response.status();
    let Ok(bytes) = axum::body::to_bytes(response.into_body(), ANSWER_LIMIT).await else {
        return unavailable("the answer could not be read");
    };
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        Outcome::Done(body)
    } else {
        Outcome::Refused(json!({
            "status": status.as_u16(),
            "code": body["code"],
            "detail": body["detail"],
            "correlation_id": body["correlation_id"],
        }))
    }
}

fn unavailable(detail: &str) -> Outcome {
    Outcome::Refused(json!({"status": 503, "code": "SYS_UNAVAILABLE", "detail": detail}))
}
