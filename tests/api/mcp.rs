//! Agents call keyledger as MCP tools, with rmcp's own client: over Streamable HTTP at `/mcp`,
//! and over stdio through `keyledger mcp`. A tool is its route: the same answers, refusals,
//! permissions, idempotency, actor and request log.

use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, eventually, spawn_app};

type Client = RunningService<RoleClient, ()>;

async fn connect(app: &TestApp, token: &str) -> Client {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(app.url("/mcp")).auth_header(token),
    );
    ().serve(transport).await.unwrap()
}

async fn call(client: &Client, tool: &str, arguments: Value) -> CallToolResult {
    let arguments: JsonObject = arguments.as_object().unwrap().clone();
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .unwrap()
}

/// The structured result of a call that must succeed.
#[track_caller]
fn done(result: CallToolResult) -> Value {
    assert_ne!(
        result.is_error,
        Some(true),
        "refused: {:?}",
        result.structured_content
    );
    result.structured_content.unwrap()
}

/// The problem of a call that must be refused.
#[track_caller]
fn refused(result: CallToolResult) -> Value {
    assert_eq!(
        result.is_error,
        Some(true),
        "not refused: {:?}",
        result.structured_content
    );
    result.structured_content.unwrap()
}

/// A license issued through the tool, with its key.
async fn issue(client: &Client, owner: &str, tier: &str) -> Value {
    done(
        call(
            client,
            "issue_license",
            json!({"owner": owner, "tier": tier}),
        )
        .await,
    )
}

async fn tool_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_tools(None)
        .await
        .unwrap()
        .tools
        .into_iter()
        .map(|tool| tool.name.to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_answers_as_its_route_does() {
    let app = spawn_app().await;
    let client = connect(&app, ADMIN_TOKEN).await;
    assert_eq!(
        tool_names(&client).await,
        [
            "create_session",
            "get_license",
            "get_session",
            "issue_license",
            "license_history",
            "license_usage",
            "list_sessions",
            "renew_license",
            "revoke_license",
            "search_licenses",
            "suspend_license",
            "transition_session",
            "validate_license",
        ]
    );
    let tools = client.list_tools(None).await.unwrap().tools;
    let revoke = tools.iter().find(|t| t.name == "revoke_license").unwrap();
    assert_eq!(
        revoke.input_schema["required"],
        json!(["license_id", "reason"])
    );
    assert!(revoke.output_schema.is_some());

    let issued = issue(&client, "agent-co", "pro").await;
    let key = issued["key"].as_str().unwrap().to_owned();
    let id = issued["license_id"].as_str().unwrap().to_owned();
    let validated = done(call(&client, "validate_license", json!({"key": key})).await);
    assert_eq!(validated["code"], "VALID");
    let license = done(call(&client, "get_license", json!({"license_id": id})).await);
    assert_eq!(license["owner"], "agent-co");
    assert!(license.get("key").is_none(), "a read never shows the key");
    // A read after a command waits for the command's position, as with HTTP.
    let found = done(
        call(
            &client,
            "search_licenses",
            json!({"owner": "agent-co", "consistency_position": issued["position"]}),
        )
        .await,
    );
    assert_eq!(found["items"][0]["license_id"], json!(id));
    let usage = eventually(
        Duration::from_secs(10),
        "the validation in the usage",
        || {
            let client = &client;
            let id = id.clone();
            async move {
                let usage = done(call(client, "license_usage", json!({"license_id": id})).await);
                (usage["items"].as_array()?.len() == 1).then_some(usage)
            }
        },
    )
    .await;
    assert_eq!(usage["items"][0]["code"], "VALID");
    let suspended = done(
        call(
            &client,
            "suspend_license",
            json!({"license_id": id, "reason": "audit"}),
        )
        .await,
    );
    assert_eq!(suspended["status"], "suspended");
    done(
        call(
            &client,
            "renew_license",
            json!({"license_id": id, "valid_days": 30}),
        )
        .await,
    );
    let revoked = done(
        call(
            &client,
            "revoke_license",
            json!({"license_id": id, "reason": "done"}),
        )
        .await,
    );
    assert_eq!(revoked["status"], "revoked");
    let history = done(call(&client, "license_history", json!({"license_id": id})).await);
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "LicenseIssued",
            "LicenseSuspended",
            "LicenseRenewed",
            "LicenseRevoked"
        ]
    );

    let session = done(call(&client, "create_session", json!({"agent_role": "reviewer"})).await);
    let session_id = session["session_id"].as_str().unwrap().to_owned();
    let moved = done(
        call(
            &client,
            "transition_session",
            json!({"session_id": session_id, "to": "active"}),
        )
        .await,
    );
    assert_eq!(moved["status"], "active");
    let seen = moved["position"].clone();
    let read = done(
        call(
            &client,
            "get_session",
            json!({"session_id": session_id, "consistency_position": seen}),
        )
        .await,
    );
    assert_eq!(read["status"], "active");
    let listed = done(
        call(
            &client,
            "list_sessions",
            json!({"agent_role": "reviewer", "consistency_position": seen}),
        )
        .await,
    );
    assert_eq!(listed["sessions"][0]["session_id"], json!(session_id));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_refused_call_carries_the_routes_code_and_writes_nothing() {
    let app = spawn_app().await;
    let client = connect(&app, ADMIN_TOKEN).await;
    let issued = issue(&client, "acme", "basic").await;
    let id = issued["license_id"].as_str().unwrap();
    done(
        call(
            &client,
            "revoke_license",
            json!({"license_id": id, "reason": "first"}),
        )
        .await,
    );
    let before = app.event_count().await;

    let again = refused(
        call(
            &client,
            "revoke_license",
            json!({"license_id": id, "reason": "again"}),
        )
        .await,
    );
    assert_eq!(again["code"], "BIZ_LICENSE_REVOKED");
    assert_eq!(again["status"], 409);
    assert!(again["detail"].as_str().unwrap().contains("revoked"));
    let invalid = refused(
        call(
            &client,
            "issue_license",
            json!({"owner": " ", "tier": "pro"}),
        )
        .await,
    );
    assert_eq!(invalid["code"], "VAL_INVALID_FIELD");
    let unknown = refused(
        call(
            &client,
            "get_license",
            json!({"license_id": id, "colour": "red"}),
        )
        .await,
    );
    assert_eq!(unknown["code"], "VAL_INVALID_FIELD");
    assert!(unknown["detail"].as_str().unwrap().contains("colour"));

    assert_eq!(
        app.event_count().await,
        before,
        "a refused call wrote events"
    );
}

#[tokio::test]
async fn a_caller_sees_and_calls_only_what_its_permissions_allow() {
    let app = spawn_app().await;
    let key: Value = app
        .post(
            "/v1/api-keys",
            &json!({"name": "reader", "scopes": ["licenses:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let reader = connect(&app, key["key"].as_str().unwrap()).await;
    assert_eq!(
        tool_names(&reader).await,
        [
            "get_license",
            "license_history",
            "license_usage",
            "search_licenses",
            "validate_license",
        ]
    );
    let before = app.event_count().await;
    let forbidden = refused(
        call(
            &reader,
            "issue_license",
            json!({"owner": "x", "tier": "free"}),
        )
        .await,
    );
    assert_eq!(forbidden["code"], "AUTH_FORBIDDEN");
    assert_eq!(forbidden["status"], 403);
    assert_eq!(app.event_count().await, before);

    // Without credentials the transport itself is refused.
    let response = app
        .anonymous
        .post(app.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::problem(response, 401).await["code"],
        "AUTH_MISSING_CREDENTIALS"
    );
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_acts_once() {
    let app = spawn_app().await;
    let client = connect(&app, ADMIN_TOKEN).await;
    let arguments = json!({"owner": "retry-co", "tier": "pro", "idempotency_key": "agent-7"});
    let first = done(call(&client, "issue_license", arguments.clone()).await);
    let second = done(call(&client, "issue_license", arguments).await);
    assert_eq!(first["license_id"], second["license_id"]);
    assert!(first["key"].is_string(), "the key is shown the first time");
    assert!(second.get("key").is_none(), "and never again");
    let stream = format!("license-{}", first["license_id"].as_str().unwrap());
    assert_eq!(app.events_of_type(&stream, "LicenseIssued").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_carries_its_actor_and_is_in_the_request_log() {
    let app = spawn_app().await;
    let client = connect(&app, ADMIN_TOKEN).await;
    let issued = issue(&client, "logged", "free").await;
    let stream = format!("license-{}", issued["license_id"].as_str().unwrap());
    assert_eq!(app.actors(&stream).await, ["admin_token"]);
    let page: Value = eventually(
        Duration::from_secs(10),
        "the tool call's record",
        || async {
            let page: Value = app
                .get("/v1/requests?route=mcp:issue_license")
                .await
                .json()
                .await
                .ok()?;
            (page["items"].as_array()?.len() == 1).then_some(page)
        },
    )
    .await;
    let record = &page["items"][0];
    assert_eq!(record["service"], "keyledger");
    assert_eq!(record["method"], "POST");
    assert_eq!(record["path"], "/v1/licenses");
    assert_eq!(record["status"], 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyledger_mcp_serves_the_tools_over_stdio() {
    let app = spawn_app().await;
    let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyledger")).configure(|c| {
        c.arg("mcp")
            .arg("--url")
            .arg(&app.address)
            .env("KEYLEDGER_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn");
    });
    let client = ().serve(TokioChildProcess::new(command).unwrap()).await.unwrap();
    assert_eq!(tool_names(&client).await.len(), 13);
    let issued = issue(&client, "local", "basic").await;
    let validated = done(call(&client, "validate_license", json!({"key": issued["key"]})).await);
    assert_eq!(validated["code"], "VALID");
    let refused = refused(
        call(
            &client,
            "renew_license",
            json!({"license_id": uuid::Uuid::new_v4(), "valid_days": 1}),
        )
        .await,
    );
    assert_eq!(refused["code"], "RES_LICENSE_NOT_FOUND");
    client.cancel().await.unwrap();
}

/// Bad input to the transport itself is a problem like anywhere else, and writes nothing.
#[tokio::test]
async fn bad_input_to_the_transport_is_a_problem() {
    let app = spawn_app().await;
    let before = app.event_count().await;
    let post = |body: &'static str, content_type: &'static str, accept: &'static str| {
        app.http
            .post(app.url("/mcp"))
            .header("content-type", content_type)
            .header("accept", accept)
            .body(body)
            .send()
    };
    let both = "application/json, text/event-stream";
    let malformed = post(r#"{"jsonrpc":"#, "application/json", both)
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::problem(malformed, 400).await["code"],
        "VAL_MALFORMED_JSON"
    );
    let text = post("tools/list", "text/plain", both).await.unwrap();
    assert_eq!(
        crate::helpers::problem(text, 415).await["code"],
        "VAL_UNSUPPORTED_MEDIA_TYPE"
    );
    let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let unacceptable = post(initialize, "application/json", "application/json")
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::problem(unacceptable, 406).await["code"],
        "VAL_UNSUPPORTED_MEDIA_TYPE"
    );
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"issue_license","arguments":{{"owner":"{}","tier":"pro"}}}}}}"#,
        "a".repeat(1 << 20)
    );
    let too_large = app
        .http
        .post(app.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", both)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::problem(too_large, 413).await["code"],
        "VAL_BODY_TOO_LARGE"
    );
    assert_eq!(app.event_count().await, before, "bad input wrote events");
}
