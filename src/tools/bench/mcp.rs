//! The MCP tools' latency: every tool called over Streamable HTTP (`/mcp`, rmcp's client) by
//! the bench's clients at once, each call a whole `tools/call` round trip. Tools that change a
//! license or a session once (suspend, revoke, a transition) get one of their own each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::http::percentile_ms;

/// Calls per tool: at least this many in all, and at least `MIN_CALLS_PER_CLIENT` per client.
const MIN_CALLS: usize = 400;
const MIN_CALLS_PER_CLIENT: usize = 25;

/// One tool's figures.
pub struct ToolLatency {
    pub tool: &'static str,
    pub calls: usize,
    pub refused: usize,
    pub first_refusal: Option<String>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

type Client = RunningService<RoleClient, ()>;

async fn connect(base_url: &str, token: &str) -> anyhow::Result<Client> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{base_url}/mcp")).auth_header(token),
    );
    ().serve(transport)
        .await
        .map_err(|e| anyhow::anyhow!("MCP connect: {e}"))
}

/// The arguments of the `n`th call of a tool.
type Calls = Arc<dyn Fn(usize) -> Value + Send + Sync>;
/// A tool's arguments for one id (or key).
type Arguments = Arc<dyn Fn(Value) -> Value + Send + Sync>;

/// `clients` clients call `tool` `CALLS_PER_CLIENT` times each; returns the figures and the
/// successful results in call order.
async fn measure(
    clients: &[Arc<Client>],
    tool: &'static str,
    arguments: Calls,
) -> (ToolLatency, Vec<Value>) {
    let per_client = MIN_CALLS
        .div_ceil(clients.len().max(1))
        .max(MIN_CALLS_PER_CLIENT);
    let mut tasks = JoinSet::new();
    for (index, client) in clients.iter().enumerate() {
        let (client, arguments) = (client.clone(), arguments.clone());
        tasks.spawn(async move {
            let mut outcomes = Vec::with_capacity(per_client);
            for call in 0..per_client {
                let n = index * per_client + call;
                let args: JsonObject = arguments(n).as_object().cloned().unwrap_or_default();
                let sent = Instant::now();
                let result = client
                    .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
                    .await;
                let took = sent.elapsed();
                outcomes.push(match result {
                    Ok(result) if result.is_error != Some(true) => {
                        Ok((n, took, result.structured_content.unwrap_or_default()))
                    }
                    Ok(result) => Err(result.structured_content.unwrap_or_default().to_string()),
                    Err(error) => Err(error.to_string()),
                });
            }
            outcomes
        });
    }
    let mut latencies: Vec<Duration> = Vec::new();
    let mut results: Vec<(usize, Value)> = Vec::new();
    let (mut refused, mut first_refusal) = (0, None);
    while let Some(joined) = tasks.join_next().await {
        for outcome in joined.unwrap_or_default() {
            match outcome {
                Ok((n, took, value)) => {
                    latencies.push(took);
                    results.push((n, value));
                }
                Err(why) => {
                    refused += 1;
                    first_refusal.get_or_insert(why);
                }
            }
        }
    }
    latencies.sort();
    results.sort_by_key(|(n, _)| *n);
    (
        ToolLatency {
            tool,
            calls: latencies.len() + refused,
            refused,
            first_refusal,
            p50_ms: percentile_ms(&latencies, 50.0),
            p95_ms: percentile_ms(&latencies, 95.0),
        },
        results.into_iter().map(|(_, value)| value).collect(),
    )
}

fn field(results: &[Value], name: &str) -> Arc<Vec<Value>> {
    Arc::new(results.iter().map(|r| r[name].clone()).collect())
}

/// Picks the `n`th value, wrapping around.
fn nth(values: &Arc<Vec<Value>>, n: usize) -> Value {
    values
        .get(n % values.len().max(1))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Every tool, called by `clients` clients at once.
pub async fn run(base_url: &str, token: &str, clients: u32) -> anyhow::Result<Vec<ToolLatency>> {
    let mut connected = Vec::new();
    for _ in 0..clients.max(1) {
        connected.push(Arc::new(connect(base_url, token).await?));
    }
    let mut figures = Vec::new();
    let (issue, issued) = measure(
        &connected,
        "issue_license",
        Arc::new(
            move |n| json!({"owner": "mcp-bench", "tier": "enterprise", "metadata": {"n": n}}),
        ),
    )
    .await;
    figures.push(issue);
    let (ids, keys) = (field(&issued, "license_id"), field(&issued, "key"));
    let last = field(&issued, "position")
        .iter()
        .filter_map(Value::as_i64)
        .max()
        .unwrap_or(0);

    // Each tool after the one that made what it acts on, with the arguments of its `n`th call
    // given that thing's id (or key).
    let after_issue: [(&'static str, &Arc<Vec<Value>>, Arguments); 8] = [
        (
            "validate_license",
            &keys,
            Arc::new(|key| json!({"key": key})),
        ),
        (
            "get_license",
            &ids,
            Arc::new(move |id| json!({"license_id": id, "consistency_position": last})),
        ),
        (
            "search_licenses",
            &ids,
            Arc::new(|_| json!({"owner": "mcp-bench", "limit": 20})),
        ),
        (
            "license_usage",
            &ids,
            Arc::new(|id| json!({"license_id": id})),
        ),
        (
            "license_history",
            &ids,
            Arc::new(|id| json!({"license_id": id})),
        ),
        (
            "renew_license",
            &ids,
            Arc::new(|id| json!({"license_id": id, "valid_days": 30})),
        ),
        (
            "suspend_license",
            &ids,
            Arc::new(|id| json!({"license_id": id, "reason": "bench"})),
        ),
        (
            "revoke_license",
            &ids,
            Arc::new(|id| json!({"license_id": id, "reason": "bench"})),
        ),
    ];
    for (tool, values, arguments) in after_issue {
        let values = values.clone();
        let arguments = Arc::new(move |n| arguments(nth(&values, n)));
        figures.push(measure(&connected, tool, arguments).await.0);
    }
    let (create, created) = measure(
        &connected,
        "create_session",
        Arc::new(|_| json!({"agent_role": "bench"})),
    )
    .await;
    figures.push(create);
    let sessions = field(&created, "session_id");
    let after_create: [(&'static str, Arguments); 3] = [
        (
            "transition_session",
            Arc::new(|id| json!({"session_id": id, "to": "active"})),
        ),
        ("get_session", Arc::new(|id| json!({"session_id": id}))),
        (
            "list_sessions",
            Arc::new(|_| json!({"agent_role": "bench", "page_size": 20})),
        ),
    ];
    for (tool, arguments) in after_create {
        let sessions = sessions.clone();
        let arguments = Arc::new(move |n| arguments(nth(&sessions, n)));
        figures.push(measure(&connected, tool, arguments).await.0);
    }

    for client in connected {
        if let Ok(client) = Arc::try_unwrap(client) {
            let _ = client.cancel().await;
        }
    }
    Ok(figures)
}
