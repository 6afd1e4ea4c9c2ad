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

use axum::http::Method;
use keyledger_api::Routes;
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
    Routes::new().on(Method::POST, "/mcp", axum::routing::post_service(service))
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
        (status = 406, description = "The request does not accept `application/json` and `text/event-stream` (plain text).", content_type = "text/plain", body = String),
    ),
)]
#[allow(dead_code)]
async fn mcp_endpoint() {}
