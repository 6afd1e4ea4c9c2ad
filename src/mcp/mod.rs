//! keyledger's tools for agents, over the Model Context Protocol (rmcp).
//!
//! `POST /mcp` is MCP's Streamable HTTP transport, stateless and answering JSON (no MCP session
//! to pin a client to one API node), behind the same authentication as every route. Each tool is
//! one HTTP route (`tools`), and a call runs as that route's request through the service's own
//! router (`dispatch`), so a tool has exactly the route's rules. `keyledger mcp` serves the same
//! tools over stdio for a local agent by forwarding to a running service's `/mcp` (`bridge`).

pub mod bridge;
pub mod dispatch;
pub mod server;
pub mod tools;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyledger_api::Routes;
use keyledger_api::{ApiError, Code};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

pub use dispatch::RouterCell;

/// The MCP route. `router` is the service's router, set once it is built.
pub fn router(router: RouterCell) -> Routes {
    // The bearer token (or API key) is the guard: a browser led to this host by DNS rebinding
    // sends none, so the transport's host allow-list (localhost only by default) is lifted.
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts();
    let service: StreamableHttpService<server::KeyledgerTools, NeverSessionManager> =
        StreamableHttpService::new(
            move || Ok(server::KeyledgerTools::new(router.clone())),
            Default::default(),
            config,
        );
    Routes::new().on(
        Method::POST,
        "/mcp",
        axum::routing::post_service(service).layer(axum::middleware::from_fn(problems)),
    )
}

/// The most of a plain-text refusal of the transport kept as a problem's detail.
const REFUSAL_LIMIT: usize = 4096;

/// Bad input to the transport is answered like bad input anywhere: a body that is not JSON is
/// 400 `VAL_MALFORMED_JSON` (checked here, before rmcp, which would call it 415), another
/// media type 415, and rmcp's other plain-text refusals (a missing `Accept`, a request that is
/// not JSON-RPC) become problems with its words as the detail. JSON-RPC errors stay JSON-RPC.
async fn problems(request: Request, next: Next) -> Response {
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::ValUnsupportedMediaType,
            "send JSON-RPC as `Content-Type: application/json`",
        )
        .into_response();
    }
    let (parts, body) = request.into_parts();
    // The service's body limit wraps the body: reading past it is the one way this fails
    // short of a client that hung up.
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ValBodyTooLarge,
            "the body is larger than this endpoint accepts",
        )
        .into_response();
    };
    if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::ValMalformedJson,
            format!("the body is not JSON: {error}"),
        )
        .into_response();
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let plain_refusal = response.status().is_client_error()
        && !response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|media| media.contains("json"));
    if !plain_refusal {
        return response;
    }
    let status = response.status();
    let text = axum::body::to_bytes(response.into_body(), REFUSAL_LIMIT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let code = if status == StatusCode::NOT_ACCEPTABLE {
        Code::ValUnsupportedMediaType
    } else {
        Code::ValInvalidBody
    };
    ApiError::new(status, code, text).into_response()
}

/// The MCP endpoint in the OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(paths(mcp_endpoint))]
pub struct McpApi;

/// MCP's Streamable HTTP transport (JSON-RPC 2.0): `initialize`, `tools/list` (the tools the
/// caller may call) and `tools/call`. Send `Accept: application/json, text/event-stream`.
/// Register it with an MCP client rather than calling it by hand.
#[utoipa::path(
    post,
    path = "/mcp",
    tag = "agents",
    request_body(content = Object, description = "A JSON-RPC 2.0 request or notification.", content_type = "application/json"),
    responses(
        (status = 200, description = "The JSON-RPC response.", content_type = "application/json", body = Object),
        (status = 202, description = "A notification, accepted."),
        (status = 406, description = "`VAL_UNSUPPORTED_MEDIA_TYPE`: the request does not accept both `application/json` and `text/event-stream`."),
    ),
)]
#[allow(dead_code)]
async fn mcp_endpoint() {}
