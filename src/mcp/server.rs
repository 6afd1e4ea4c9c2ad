//! The MCP server: lists the tools the caller may call (the permission table decides, as for
//! the routes behind them) and runs a call as its route's request.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::ConnectInfo;
use axum::http::header;
use axum::http::request::Parts;
use keyledger_api::Principal;
use keyledger_api::permission::{decide, rule_for};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

use super::dispatch::{self, Caller, Outcome, RouterCell};
use super::tools::{self, TOOLS, ToolSpec};

#[derive(Clone)]
pub struct KeyledgerTools {
    router: RouterCell,
}

impl KeyledgerTools {
    pub fn new(router: RouterCell) -> KeyledgerTools {
        KeyledgerTools { router }
    }
}

/// Every tool as MCP describes it, built once from the OpenAPI description.
fn described() -> &'static [(Tool, &'static ToolSpec)] {
    static TOOLS_DESCRIBED: OnceLock<Vec<(Tool, &'static ToolSpec)>> = OnceLock::new();
    TOOLS_DESCRIBED.get_or_init(|| {
        TOOLS
            .iter()
            .map(|spec| {
                let reads = spec.method == axum::http::Method::GET;
                let mut tool = Tool::new(
                    spec.name,
                    spec.description,
                    Arc::new(tools::input_schema(spec)),
                )
                .with_annotations(
                    ToolAnnotations::new()
                        .read_only(reads)
                        .destructive(spec.name == "revoke_license"),
                );
                if let Some(output) = tools::output_schema(spec) {
                    tool = tool.with_raw_output_schema(Arc::new(output));
                }
                (tool, spec)
            })
            .collect()
    })
}

/// The HTTP request behind an MCP request (none over stdio).
fn parts(context: &RequestContext<RoleServer>) -> Option<&Parts> {
    context.extensions.get::<Parts>()
}

fn principal(context: &RequestContext<RoleServer>) -> Principal {
    parts(context)
        .and_then(|parts| parts.extensions.get::<Principal>().cloned())
        .unwrap_or(Principal::Anonymous)
}

/// Whether the permission table lets `principal` call the tool's route.
fn may_call(principal: &Principal, spec: &ToolSpec) -> bool {
    rule_for(&spec.method, spec.path)
        .is_some_and(|rule| decide(rule.access, principal, None).is_ok())
}

impl ServerHandler for KeyledgerTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("keyledger", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "keyledger issues, validates and revokes license keys and runs agent sessions. \
                 Each tool is one HTTP route of the service, with its rules: a refused call is a \
                 tool error whose `code` and `detail` say why, and it changes nothing. Commands \
                 take an `idempotency_key`: retrying with the same key and arguments answers \
                 the first result again instead of acting twice.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let principal = principal(&context);
        let tools = described()
            .iter()
            .filter(|(_, spec)| may_call(&principal, spec))
            .map(|(tool, _)| tool.clone())
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let Some(spec) = tools::find(&request.name) else {
            return Err(McpError::invalid_params(
                format!("no tool is named {}", request.name),
                None,
            ));
        };
        let caller = Caller {
            authorization: parts(&context)
                .and_then(|parts| parts.headers.get(header::AUTHORIZATION).cloned()),
            peer: parts(&context).and_then(|parts| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0)
            }),
        };
        let arguments = request.arguments.unwrap_or_default();
        let result = match dispatch::run(&self.router, spec, arguments, &caller).await {
            Outcome::Done(body) => CallToolResult::structured(body),
            Outcome::Refused(problem) => CallToolResult::structured_error(problem),
        };
        Ok(result.into())
    }
}
