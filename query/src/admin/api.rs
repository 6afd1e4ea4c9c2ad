//! `/admin/api`: the API reference, rendered on the server from the OpenAPI description the
//! service serves at `/openapi.json` (no script, nothing fetched from elsewhere).

use axum::extract::State;
use maud::{Markup, html};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{OpenApi, RefOr};

use super::{Section, Viewer, layout};
use crate::QueryState;

/// The reference page.
#[utoipa::path(
    get,
    path = "/admin/api",
    tag = "admin hub",
    responses(
        (status = 200, description = "The API reference, as HTML.", content_type = "text/html", body = String),
    ),
)]
pub async fn page(State(state): State<QueryState>, viewer: Viewer) -> Markup {
    reference(&viewer, &state.api_description)
}

fn reference(viewer: &Viewer, doc: &OpenApi) -> Markup {
    let mut tags: Vec<String> = Vec::new();
    for (_, _, operation) in operations(doc) {
        let tag = operation
            .tags
            .as_ref()
            .and_then(|t| t.first())
            .cloned()
            .unwrap_or_default();
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    let schemas = doc
        .components
        .as_ref()
        .map(|c| c.schemas.iter().collect::<Vec<_>>())
        .unwrap_or_default();
    layout(
        viewer,
        "API reference",
        Section::Api,
        html! {
            p {
                (doc.info.description.as_deref().unwrap_or_default())
                " The machine-readable description is at "
                a href="/openapi.json" { code { "/openapi.json" } }
                " (OpenAPI " (serde_json::to_value(&doc.openapi).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) ")."
            }
            nav.toc aria-label="Areas" {
                ul {
                    @for tag in &tags {
                        li { a href={ "#tag-" (slug(tag)) } { (tag) } }
                    }
                    li { a href="#schemas" { "Schemas" } }
                }
            }
            @for tag in &tags {
                section.api-tag id={ "tag-" (slug(tag)) } {
                    h2 { (tag) }
                    @for (method, path, operation) in operations(doc).filter(|(_, _, op)| first_tag(op) == tag.as_str()) {
                        (operation_section(method, path, operation))
                    }
                }
            }
            section id="schemas" {
                h2 { "Schemas" }
                @for (name, schema) in schemas {
                    details.api-schema id={ "schema-" (name) } {
                        summary { code { (name) } }
                        pre { (serde_json::to_string_pretty(schema).unwrap_or_default()) }
                    }
                }
            }
        },
    )
}

fn operation_section(method: &str, path: &str, operation: &Operation) -> Markup {
    let id = operation.operation_id.clone().unwrap_or_default();
    html! {
        article.api-operation id=(id) {
            h3 { span.method { (method) } " " code.path { (path) } }
            @if let Some(summary) = &operation.summary { p.summary { (summary) } }
            @if let Some(description) = &operation.description {
                @for paragraph in description.split("\n\n") { p { (paragraph) } }
            }
            @if let Some(parameters) = operation.parameters.as_ref().filter(|p| !p.is_empty()) {
                table.api-parameters {
                    caption { "Parameters" }
                    thead { tr { th { "name" } th { "in" } th { "required" } th { "type" } th { "description" } } }
                    tbody {
                        @for parameter in parameters {
                            tr {
                                td { code { (parameter.name) } }
                                td { (location(&parameter.parameter_in)) }
                                td { (if matches!(parameter.required, utoipa::openapi::Required::True) { "yes" } else { "no" }) }
                                td { (parameter.schema.as_ref().map(type_name).unwrap_or_default()) }
                                td { (parameter.description.as_deref().unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
            @if let Some(body) = &operation.request_body {
                p.api-body {
                    "Body: "
                    @for (media, content) in &body.content {
                        code { (media) } " "
                        (content.schema.as_ref().map(type_name).unwrap_or_default())
                    }
                }
            }
            table.api-responses {
                caption { "Responses" }
                thead { tr { th { "status" } th { "description" } th { "body" } } }
                tbody {
                    @for (status, response) in &operation.responses.responses {
                        @if let RefOr::T(response) = response {
                            tr {
                                td { (status) }
                                td { (response.description) }
                                td {
                                    @for (media, content) in &response.content {
                                        code { (media) } " "
                                        (content.schema.as_ref().map(type_name).unwrap_or_default())
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn operations(doc: &OpenApi) -> impl Iterator<Item = (&'static str, &str, &Operation)> {
    doc.paths.paths.iter().flat_map(|(path, item)| {
        [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ]
        .into_iter()
        .filter_map(move |(method, op)| op.as_ref().map(|op| (method, path.as_str(), op)))
    })
}

fn first_tag(operation: &Operation) -> &str {
    operation
        .tags
        .as_ref()
        .and_then(|t| t.first())
        .map_or("", String::as_str)
}

fn slug(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn location(place: &ParameterIn) -> &'static str {
    match place {
        ParameterIn::Path => "path",
        ParameterIn::Query => "query",
        ParameterIn::Header => "header",
        ParameterIn::Cookie => "cookie",
    }
}

/// A schema's name (for a reference) or its JSON type.
fn type_name(schema: &RefOr<Schema>) -> Markup {
    match schema {
        RefOr::Ref(reference) => {
            let name = reference
                .ref_location
                .rsplit('/')
                .next()
                .unwrap_or_default();
            html! { a href={ "#schema-" (name) } { (name) } }
        }
        RefOr::T(Schema::AllOf(all)) => html! {
            @for item in &all.items { (type_name(item)) " " }
        },
        RefOr::T(schema) => {
            let json = serde_json::to_value(schema).unwrap_or_default();
            let kind = match &json["type"] {
                serde_json::Value::String(kind) => kind.clone(),
                serde_json::Value::Array(kinds) => kinds
                    .iter()
                    .filter_map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" | "),
                _ => "value".to_owned(),
            };
            match json["format"].as_str() {
                Some(format) => html! { (kind) " (" (format) ")" },
                None => html! { (kind) },
            }
        }
    }
}
