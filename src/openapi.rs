//! The OpenAPI 3.1 description of the whole service, put together from each crate's annotated
//! routes: `GET /openapi.json`, `keyledger openapi`, and the admin hub's API reference page.
//!
//! Each crate describes its own routes (`#[utoipa::path]` on the handler); this module adds
//! what spans them: the links a client follows from a created resource to its routes, one
//! operation id per route, and (`keyledger_api::openapi::complete`) the answers of the layers
//! every route sits behind.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use keyledger_api::Routes;
use utoipa::OpenApi as _;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::{InfoBuilder, LicenseBuilder, OpenApi, RefOr};

/// The routes of the description itself.
#[derive(utoipa::OpenApi)]
#[openapi(paths(openapi_json))]
struct DescriptionApi;

/// The whole description, built once.
pub fn document() -> Arc<OpenApi> {
    static DOCUMENT: OnceLock<Arc<OpenApi>> = OnceLock::new();
    DOCUMENT.get_or_init(|| Arc::new(build())).clone()
}

/// The description as JSON (what `GET /openapi.json` answers).
pub fn json() -> Arc<str> {
    static JSON: OnceLock<Arc<str>> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut value = serde_json::to_value(&*document()).unwrap_or_default();
        camel_case_links(&mut value);
        serde_json::to_string_pretty(&value)
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
            .into()
    })
    .clone()
}

/// utoipa 5 writes a link's fields in snake case (`operation_id`); OpenAPI names them in camel
/// case (`operationId`), and tools that follow links ignore the others.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.to_owned(), value);
            }
        }
    }
}

fn build() -> OpenApi {
    let mut doc = keyledger_command::CommandApi::openapi();
    doc.merge(keyledger_command::auth::AuthApi::openapi());
    doc.merge(keyledger_command::user::UserApi::openapi());
    doc.merge(keyledger_query::QueryApi::openapi());
    doc.merge(crate::health::HealthApi::openapi());
    doc.merge(DescriptionApi::openapi());
    doc.merge(crate::mcp::McpApi::openapi());
    doc.info = InfoBuilder::new()
        .title("keyledger")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "License keys, agent sessions and the request log, decided as commands that append \
             to a hash-chained event log; reads come from projections of that log. Errors are \
             RFC 9457 problems (`application/problem+json`) with a stable `code`.",
        ))
        .license(Some(LicenseBuilder::new().name("Apache-2.0").build()))
        .build();
    name_operations(&mut doc);
    link_created_resources(&mut doc);
    keyledger_api::openapi::complete(&mut doc);
    doc
}

/// Every operation gets an id from its method and path (`post_v1_licenses_id_revoke`): unique,
/// and stable as long as the route is.
fn name_operations(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let words: Vec<&str> = path
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        for (method, operation) in [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
        ] {
            if let Some(operation) = operation {
                operation.operation_id = Some(format!("{method}_{}", words.join("_")));
            }
        }
    }
}

/// A created resource and the routes it opens.
struct Links {
    /// The operation that creates it, and the status it answers then.
    from: (&'static str, &'static str, &'static str),
    /// The target routes' path parameters, as runtime expressions.
    parameters: &'static [(&'static str, &'static str)],
    /// The routes it opens.
    to: &'static [(&'static str, &'static str)],
}

const LINKS: &[Links] = &[
    Links {
        from: ("POST", "/v1/licenses", "201"),
        parameters: &[("id", "$response.body#/license_id")],
        to: &[
            ("GET", "/v1/licenses/{id}"),
            ("GET", "/v1/licenses/{id}/events"),
            ("GET", "/v1/licenses/{id}/usage"),
            ("GET", "/v1/licenses/{id}/installations"),
            ("GET", "/admin/licenses/{id}"),
            ("POST", "/v1/licenses/{id}/suspend"),
            ("POST", "/v1/licenses/{id}/reinstate"),
            ("POST", "/v1/licenses/{id}/renew"),
            ("POST", "/v1/licenses/{id}/policy"),
            ("POST", "/v1/licenses/{id}/installations"),
            ("POST", "/v1/licenses/{id}/certificate"),
            ("POST", "/v1/licenses/{id}/revoke"),
        ],
    },
    Links {
        from: ("POST", "/v1/licenses/{id}/installations", "201"),
        parameters: &[
            ("id", "$request.path.id"),
            ("installation_id", "$response.body#/installation_id"),
        ],
        to: &[
            (
                "POST",
                "/v1/licenses/{id}/installations/{installation_id}/heartbeat",
            ),
            (
                "DELETE",
                "/v1/licenses/{id}/installations/{installation_id}",
            ),
        ],
    },
    Links {
        from: ("POST", "/v1/sessions", "201"),
        parameters: &[("id", "$response.body#/session_id")],
        to: &[
            ("GET", "/v1/sessions/{id}"),
            ("GET", "/admin/sessions/{id}"),
            ("PATCH", "/v1/sessions/{id}"),
            ("POST", "/v1/sessions/{id}/transition"),
        ],
    },
    Links {
        from: ("POST", "/v1/api-keys", "201"),
        parameters: &[("id", "$response.body#/id")],
        to: &[
            ("GET", "/v1/api-keys/{id}"),
            ("DELETE", "/v1/api-keys/{id}"),
        ],
    },
    Links {
        from: ("POST", "/v1/users", "201"),
        parameters: &[("id", "$response.body#/id")],
        to: &[
            ("GET", "/v1/users/{id}"),
            ("POST", "/v1/users/{id}/role"),
            ("POST", "/v1/users/{id}/password"),
            ("POST", "/v1/users/{id}/disable"),
            ("POST", "/v1/users/{id}/enable"),
            ("POST", "/v1/users/{id}/revoke-tokens"),
        ],
    },
];

/// OpenAPI links from each create route to the routes of what it created, by operation id, so
/// that a client (or a fuzzer's stateful phase) can follow them.
fn link_created_resources(doc: &mut OpenApi) {
    let ids: BTreeMap<(String, String), String> = operations(doc)
        .filter_map(|(method, path, op)| {
            Some(((method.to_owned(), path.clone()), op.operation_id.clone()?))
        })
        .collect();
    for links in LINKS {
        let (method, path, status) = links.from;
        let Some(item) = doc.paths.paths.get_mut(path) else {
            continue;
        };
        let operation = match method {
            "POST" => item.post.as_mut(),
            _ => None,
        };
        let Some(RefOr::T(response)) =
            operation.and_then(|op| op.responses.responses.get_mut(status))
        else {
            continue;
        };
        for (to_method, to_path) in links.to {
            let Some(operation_id) = ids.get(&(to_method.to_string(), to_path.to_string())) else {
                continue;
            };
            let link = links.parameters.iter().fold(
                LinkBuilder::new().operation_id(operation_id.clone()),
                |link, (name, value)| link.parameter(*name, *value),
            );
            response
                .links
                .insert(operation_id.clone(), RefOr::T(link.build()));
        }
    }
}

/// Every operation with its method and path.
pub fn operations(
    doc: &OpenApi,
) -> impl Iterator<Item = (&'static str, &String, &utoipa::openapi::path::Operation)> {
    doc.paths.paths.iter().flat_map(|(path, item)| {
        [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
            ("PUT", &item.put),
        ]
        .into_iter()
        .filter_map(move |(method, op)| op.as_ref().map(|op| (method, path, op)))
    })
}

/// This description, as JSON.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "api",
    responses((status = 200, description = "The OpenAPI 3.1 description of this service.",
               content_type = "application/json", body = Object)),
)]
async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json().to_string(),
    )
        .into_response()
}

pub fn router() -> Routes {
    Routes::new().get("/openapi.json", openapi_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Merging keeps the first schema of a name: two crates must not mean different things
    /// by one name.
    #[test]
    fn no_two_parts_describe_different_schemas_under_one_name() {
        let parts = [
            keyledger_command::CommandApi::openapi(),
            keyledger_command::auth::AuthApi::openapi(),
            keyledger_command::user::UserApi::openapi(),
            keyledger_query::QueryApi::openapi(),
            crate::health::HealthApi::openapi(),
        ];
        let mut seen: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for part in parts {
            for (name, schema) in part.components.map(|c| c.schemas).unwrap_or_default() {
                let schema = serde_json::to_value(schema).unwrap_or_default();
                if let Some(earlier) = seen.insert(name.clone(), schema.clone()) {
                    assert_eq!(earlier, schema, "two schemas are named {name}");
                }
            }
        }
    }

    #[test]
    fn create_routes_link_to_the_routes_of_what_they_create() {
        let doc = document();
        for links in LINKS {
            let (_, path, status) = links.from;
            let response = doc.paths.paths[path]
                .post
                .as_ref()
                .and_then(|op| op.responses.responses.get(status));
            let Some(RefOr::T(response)) = response else {
                panic!("{path} has no {status} answer");
            };
            assert_eq!(response.links.len(), links.to.len(), "{path}");
        }
    }
}
