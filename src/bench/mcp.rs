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

use super::percentile_ms;

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
type Arguments = Arc<dyn Fn(usize) -> Value + Send + Sync>;

/// `clients` clients call `tool` `CALLS_PER_CLIENT` times each; returns the figures and the
/// successful results in call order.
async fn measure(
    clients: &[Arc<Client>],
    tool: &'static str,
    arguments: Arguments,
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
            move |n| json!({"owner": format!("mcp-bench-{clients}-{n}"), "tier": "enterprise"}),
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

    let (k, i) = (keys.clone(), ids.clone());
    figures.push(
        measure(
            &connected,
            "validate_license",
            Arc::new(move |n| json!({"key": nth(&k, n)})),
        )
        .await
        .0,
    );
    figures.push(
        measure(
            &connected,
            "get_license",
            Arc::new(move |n| json!({"license_id": nth(&i, n), "consistency_position": last})),
        )
        .await
        .0,
    );
    figures.push(
        measure(
            &connected,
            "search_licenses",
            Arc::new(move |n| json!({"owner": format!("mcp-bench-{clients}-{n}")})),
        )
        .await
        .0,
    );
    let i = ids.clone();
    figures.push(
        measure(
            &connected,
            "license_usage",
            Arc::new(move |n| json!({"license_id": nth(&i, n)})),
        )
        .await
        .0,
    );
    let i = ids.clone();
    figures.push(
        measure(
            &connected,
            "license_history",
            Arc::new(move |n| json!({"license_id": nth(&i, n)})),
        )
        .await
        .0,
    );
    let i = ids.clone();
    figures.push(
        measure(
            &connected,
            "renew_license",
            Arc::new(move |n| json!({"license_id": nth(&i, n), "valid_days": 30})),
        )
        .await
        .0,
    );
    let i = ids.clone();
    figures.push(
        measure(
            &connected,
            "suspend_license",
            Arc::new(move |n| json!({"license_id": nth(&i, n), "reason": "bench"})),
        )
        .await
        .0,
    );
    let i = ids.clone();
    figures.push(
        measure(
            &connected,
            "revoke_license",
            Arc::new(move |n| json!({"license_id": nth(&i, n), "reason": "bench"})),
        )
        .await
        .0,
    );

    let (create, created) = measure(
        &connected,
        "create_session",
        Arc::new(|n| json!({"agent_role": format!("bench-{}", n % 8)})),
    )
    .await;
    figures.push(create);
    let sessions = field(&created, "session_id");
    let s = sessions.clone();
    figures.push(
        measure(
            &connected,
            "transition_session",
            Arc::new(move |n| json!({"session_id": nth(&s, n), "to": "active"})),
        )
        .await
        .0,
    );
    let s = sessions.clone();
    figures.push(
        measure(
            &connected,
            "get_session",
            Arc::new(move |n| json!({"session_id": nth(&s, n)})),
        )
        .await
        .0,
    );
    figures.push(
        measure(
            &connected,
            "list_sessions",
            Arc::new(|n| json!({"agent_role": format!("bench-{}", n % 8), "page_size": 20})),
        )
        .await
        .0,
    );

    for client in connected {
        if let Ok(client) = Arc::try_unwrap(client) {
            let _ = client.cancel().await;
        }
    }
    Ok(figures)
}
