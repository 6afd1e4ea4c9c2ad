//! `keyledger mcp`: the tools over stdio for a local agent, forwarded to a running service's
//! `/mcp` with the caller's token. The service stays the one place that decides: the bridge
//! holds no database connection, no key and no rule, only the token the agent was given.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{Peer, RequestContext};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{
    ErrorData as McpError, RoleClient, RoleServer, ServerHandler, ServiceError, ServiceExt,
};

#[derive(Clone)]
struct Bridge {
    upstream: Peer<RoleClient>,
}

fn forwarded(error: ServiceError) -> McpError {
    match error {
        ServiceError::McpError(error) => error,
        other => McpError::internal_error(format!("the keyledger service: {other}"), None),
    }
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        let upstream = self.upstream.peer_info();
        let config = ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("keyledger", env!("CARGO_PKG_VERSION")));
        match upstream.and_then(|info| info.instructions.clone()) {
            Some(instructions) => config.with_instructions(instructions),
            None => config,
        }
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut tools = self.upstream.list_tools(request).await.map_err(forwarded)?;
        tools.meta = None;
        Ok(tools)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let mut upstream = CallToolRequestParams::new(request.name.clone());
        upstream.arguments = request.arguments;
        self.upstream
            .call_tool_once(upstream)
            .await
            .map_err(forwarded)
    }
}

/// Serves stdin/stdout until stdin closes. `url` is the service's base URL.
pub async fn run(url: &str, token: &str) -> anyhow::Result<()> {
    let endpoint = format!("{}/mcp", url.trim_end_matches('/'));
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(endpoint.as_str()).auth_header(token),
    );
    let upstream = ()
        .serve(transport)
        .await
        .map_err(|e| anyhow::anyhow!("could not reach {endpoint}: {e}"))?;
    let bridge = Bridge {
        upstream: upstream.peer().clone(),
    };
    let server = bridge.serve(rmcp::transport::stdio()).await?;
    server.waiting().await?;
    upstream.cancel().await?;
    Ok(())
}
