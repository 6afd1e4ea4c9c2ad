//! The tools: each is one HTTP route, named for an agent. Its input schema is the route's path
//! id, query or header parameters and body, and its output schema the route's success body,
//! both taken from the OpenAPI description (`crate::openapi`), so the tools say exactly what the
//! routes accept and answer, and a call is the route's own request.

use std::sync::OnceLock;

use axum::http::Method;
use serde_json::{Map, Value, json};

/// One tool: the route it calls, and what an agent reads about it.
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub method: Method,
    pub path: &'static str,
    /// The argument that fills the path's `{id}`.
    pub id_argument: Option<&'static str>,
}

const fn tool(
    name: &'static str,
    method: Method,
    path: &'static str,
    id_argument: Option<&'static str>,
    description: &'static str,
) -> ToolSpec {
    ToolSpec {
        name,
        description,
        method,
        path,
        id_argument,
    }
}

const LICENSE: Option<&str> = Some("license_id");
const SESSION: Option<&str> = Some("session_id");

pub const TOOLS: &[ToolSpec] = &[
    tool(
        "issue_license",
        Method::POST,
        "/v1/licenses",
        None,
        "Issue a license key to an owner on a tier. The answer holds the key itself, shown this \
         once: keep it, nothing can show it again. Give an idempotency_key to retry safely.",
    ),
    tool(
        "validate_license",
        Method::POST,
        "/v1/licenses/validate",
        None,
        "Check a license key, optionally for a feature and an installation. `valid` says whether \
         it may be used; `code` says why not (NOT_FOUND, EXPIRED, REVOKED, SUSPENDED, \
         MALFORMED_KEY, FEATURE_NOT_ENTITLED, QUOTA_EXCEEDED, INSTALLATION_NOT_ACTIVATED). Each \
         validation of an existing license is recorded as usage.",
    ),
    tool(
        "revoke_license",
        Method::POST,
        "/v1/licenses/{id}/revoke",
        LICENSE,
        "Revoke a license for good, with a reason: every later validation answers REVOKED and no \
         command can undo it. Use suspend_license for a pause.",
    ),
    tool(
        "suspend_license",
        Method::POST,
        "/v1/licenses/{id}/suspend",
        LICENSE,
        "Suspend a license, with a reason: validations answer SUSPENDED until it is reinstated.",
    ),
    tool(
        "renew_license",
        Method::POST,
        "/v1/licenses/{id}/renew",
        LICENSE,
        "Extend a license by valid_days, counted from the later of now and its current end. A \
         perpetual license has no end to extend.",
    ),
    tool(
        "get_license",
        Method::GET,
        "/v1/licenses/{id}",
        LICENSE,
        "Read one license (never its key): owner, tier, status, end, entitlements, installation \
         limit. With as_of (RFC 3339), the license as it stood then.",
    ),
    tool(
        "search_licenses",
        Method::GET,
        "/v1/licenses",
        None,
        "List licenses, newest first, filtered by owner, status, tier or an end before a date; \
         pass the answer's next_cursor as cursor for the next page.",
    ),
    tool(
        "license_usage",
        Method::GET,
        "/v1/licenses/{id}/usage",
        LICENSE,
        "A license's validations, newest first: when, the outcome code, the feature and the \
         installation asked for.",
    ),
    tool(
        "license_history",
        Method::GET,
        "/v1/licenses/{id}/events",
        LICENSE,
        "A license's history as events, oldest first: issuance, suspensions and reinstatements \
         with their reasons, renewals, policy changes, installations, revocation.",
    ),
    tool(
        "create_session",
        Method::POST,
        "/v1/sessions",
        None,
        "Open an agent session for a role (and optionally a task). It starts pending; move it \
         with transition_session.",
    ),
    tool(
        "transition_session",
        Method::POST,
        "/v1/sessions/{id}/transition",
        SESSION,
        "Move a session along its lifecycle: pending → active → completed | failed | expired, and \
         pending → expired. Any other move is refused (BIZ_INVALID_TRANSITION); an ended session \
         takes none (BIZ_SESSION_TERMINAL).",
    ),
    tool(
        "get_session",
        Method::GET,
        "/v1/sessions/{id}",
        SESSION,
        "Read one session with its history of transitions. With as_of (RFC 3339), the session \
         as it stood then.",
    ),
    tool(
        "list_sessions",
        Method::GET,
        "/v1/sessions",
        None,
        "List sessions, newest first, filtered by status or agent role, a page at a time.",
    ),
];

pub fn find(name: &str) -> Option<&'static ToolSpec> {
    TOOLS.iter().find(|tool| tool.name == name)
}

/// The argument an HTTP header is given as (`Idempotency-Key` → `idempotency_key`,
/// `X-Consistency-Position` → `consistency_position`).
pub fn header_argument(header: &str) -> String {
    let lower = header.to_ascii_lowercase();
    lower.strip_prefix("x-").unwrap_or(&lower).replace('-', "_")
}

/// The OpenAPI description as JSON, parsed once.
fn description() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::from_str(&crate::openapi::json()).unwrap_or_default())
}

/// The route's operation in the description.
pub fn operation(tool: &ToolSpec) -> &'static Value {
    &description()["paths"][tool.path][tool.method.as_str().to_ascii_lowercase()]
}

fn component(reference: &str) -> Option<&'static Value> {
    let name = reference.strip_prefix("#/components/schemas/")?;
    description()["components"]["schemas"].get(name)
}

/// The schema behind `schema` when it is a reference.
fn resolved(schema: &Value) -> &Value {
    match schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(component)
    {
        Some(target) => target,
        None => schema,
    }
}

/// `schema` with its references pointing into `$defs`, and every schema they reach added there.
fn self_contained(mut schema: Value) -> Value {
    let mut defs = Map::new();
    let mut pending = Vec::new();
    retarget(&mut schema, &mut pending);
    while let Some(name) = pending.pop() {
        if defs.contains_key(&name) {
            continue;
        }
        let Some(mut target) = description()["components"]["schemas"].get(&name).cloned() else {
            continue;
        };
        retarget(&mut target, &mut pending);
        defs.insert(name, target);
    }
    if !defs.is_empty()
        && let Some(object) = schema.as_object_mut()
    {
        object.insert("$defs".to_owned(), Value::Object(defs));
    }
    schema
}

fn retarget(value: &mut Value, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get_mut("$ref")
                && let Some(name) = reference.strip_prefix("#/components/schemas/")
            {
                found.push(name.to_owned());
                *reference = format!("#/$defs/{name}");
            }
            for child in object.values_mut() {
                retarget(child, found);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| retarget(item, found)),
        _ => {}
    }
}

/// The tool's arguments: the path's id, the query and header parameters, and the body's
/// members, in one object that refuses anything else.
pub fn input_schema(tool: &ToolSpec) -> Map<String, Value> {
    let operation = operation(tool);
    let mut properties = Map::new();
    let mut required: Vec<Value> = Vec::new();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let name = parameter["name"].as_str().unwrap_or_default();
        let argument = match parameter["in"].as_str() {
            Some("path") => tool.id_argument.unwrap_or(name).to_owned(),
            Some("header") => header_argument(name),
            _ => name.to_owned(),
        };
        let mut schema = parameter["schema"].clone();
        if let (Some(object), Some(text)) =
            (schema.as_object_mut(), parameter["description"].as_str())
        {
            object.insert("description".to_owned(), text.into());
        }
        if parameter["required"] == json!(true) {
            required.push(argument.clone().into());
        }
        properties.insert(argument, schema);
    }
    let body = &operation["requestBody"]["content"]["application/json"]["schema"];
    if !body.is_null() {
        let body = resolved(body);
        for (name, schema) in body["properties"].as_object().into_iter().flatten() {
            properties.insert(name.clone(), schema.clone());
        }
        for name in body["required"].as_array().into_iter().flatten() {
            required.push(name.clone());
        }
    }
    let schema = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    match self_contained(schema) {
        Value::Object(object) => object,
        _ => Map::new(),
    }
}

/// The route's success body, as the tool's structured result.
pub fn output_schema(tool: &ToolSpec) -> Option<Map<String, Value>> {
    let responses = operation(tool)["responses"].as_object()?;
    let (_, success) = responses
        .iter()
        .find(|(status, _)| status.starts_with('2'))?;
    let schema = resolved(&success["content"]["application/json"]["schema"]).clone();
    match self_contained(schema) {
        // MCP asks for an object schema; a composition (`allOf`) of objects is one.
        Value::Object(mut object)
            if object.contains_key("allOf") || object.get("type") == Some(&json!("object")) =>
        {
            object.insert("type".to_owned(), json!("object"));
            Some(object)
        }
        _ => None,
    }
}

/// The route's request for a call: method, path and query, headers, and body.
pub struct Call {
    pub method: Method,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

/// Turns arguments into the route's request; an argument the tool does not take is refused
/// here with the name of the culprit (the route would refuse it too, but by a field name the
/// agent did not send).
pub fn call(tool: &ToolSpec, arguments: Map<String, Value>) -> Result<Call, String> {
    let operation = operation(tool);
    let mut path = tool.path.to_owned();
    let mut query: Vec<(String, String)> = Vec::new();
    let mut headers = Vec::new();
    let mut body = Map::new();
    let body_members: Vec<String> = {
        let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
        resolved(schema)["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    let parameters: Vec<&Value> = operation["parameters"]
        .as_array()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    for (name, value) in arguments {
        let parameter = parameters.iter().find(|p| {
            let declared = p["name"].as_str().unwrap_or_default();
            match p["in"].as_str() {
                Some("path") => tool.id_argument == Some(name.as_str()),
                Some("header") => header_argument(declared) == name,
                _ => declared == name,
            }
        });
        let text = || match &value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        match parameter.and_then(|p| p["in"].as_str()) {
            Some("path") => {
                let id = value.as_str().unwrap_or_default();
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(format!("{name}: must be an id (a UUID)"));
                }
                path = path.replace("{id}", id);
            }
            Some("header") => {
                let declared = parameter
                    .and_then(|p| p["name"].as_str())
                    .unwrap_or_default();
                headers.push((declared.to_owned(), text()));
            }
            Some(_) => query.push((name.clone(), text())),
            None if body_members.contains(&name) => {
                body.insert(name, value);
            }
            None => return Err(format!("{name}: {} takes no such argument", tool.name)),
        }
    }
    if path.contains('{') {
        let argument = tool.id_argument.unwrap_or("id");
        return Err(format!("{argument}: missing"));
    }
    let path_and_query = if query.is_empty() {
        path
    } else {
        let encoded = serde_urlencoded::to_string(&query).map_err(|e| e.to_string())?;
        format!("{path}?{encoded}")
    };
    let takes_body = !operation["requestBody"].is_null();
    Ok(Call {
        method: tool.method.clone(),
        path_and_query,
        headers,
        body: takes_body.then_some(Value::Object(body)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_a_described_route_with_an_object_output() {
        for tool in TOOLS {
            assert!(
                operation(tool).is_object(),
                "{} calls {} {}, which the description does not have",
                tool.name,
                tool.method,
                tool.path
            );
            assert!(output_schema(tool).is_some(), "{} has no output", tool.name);
            let input = input_schema(tool);
            if let Some(id) = tool.id_argument {
                assert!(
                    input["required"].as_array().unwrap().contains(&json!(id)),
                    "{}: {id} is not required",
                    tool.name
                );
            }
        }
    }

    #[test]
    fn the_revoke_tool_takes_the_id_the_reason_and_an_idempotency_key() {
        let revoke = find("revoke_license").unwrap();
        let input = input_schema(revoke);
        let mut names: Vec<&String> = input["properties"].as_object().unwrap().keys().collect();
        names.sort();
        assert_eq!(names, ["idempotency_key", "license_id", "reason"]);
        assert_eq!(input["additionalProperties"], json!(false));

        let arguments = json!({
            "license_id": "6f1c1b8e-1d1a-4c1e-9a4e-0c5f3f0b7a10",
            "reason": "chargeback",
            "idempotency_key": "k-1",
        });
        let call = call(revoke, arguments.as_object().unwrap().clone()).unwrap();
        assert_eq!(call.method, Method::POST);
        assert_eq!(
            call.path_and_query,
            "/v1/licenses/6f1c1b8e-1d1a-4c1e-9a4e-0c5f3f0b7a10/revoke"
        );
        assert_eq!(
            call.headers,
            [("Idempotency-Key".to_owned(), "k-1".to_owned())]
        );
        assert_eq!(call.body, Some(json!({"reason": "chargeback"})));
    }

    #[test]
    fn query_arguments_go_to_the_query_and_unknown_ones_are_refused() {
        let search = find("search_licenses").unwrap();
        let call = call(
            search,
            json!({"owner": "acme & co", "limit": 5})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        assert_eq!(
            call.path_and_query,
            "/v1/licenses?limit=5&owner=acme+%26+co"
        );
        assert_eq!(call.body, None);
        let get = find("get_session").unwrap();
        let null = super::call(
            get,
            json!({"session_id": null}).as_object().unwrap().clone(),
        );
        assert_eq!(
            null.err().as_deref(),
            Some("session_id: must be an id (a UUID)")
        );
        let refused = super::call(search, json!({"color": "red"}).as_object().unwrap().clone());
        assert_eq!(
            refused.err().as_deref(),
            Some("color: search_licenses takes no such argument")
        );
    }

    #[test]
    fn schemas_are_self_contained() {
        for tool in TOOLS {
            let text = serde_json::to_string(&input_schema(tool)).unwrap()
                + &serde_json::to_string(&output_schema(tool)).unwrap();
            assert!(
                !text.contains("#/components/"),
                "{} refers outside itself",
                tool.name
            );
        }
    }
}
