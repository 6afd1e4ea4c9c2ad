//! The OpenAPI description's shared parts: the problem shape, the security schemes, and
//! `complete`, which adds to every operation what the service's layers answer for it (the
//! permission table's security and 401/403, body and parameter rejections, rate limits,
//! outages), so that handlers describe only their own answers.
//!
//! A handler's error responses name their codes in backticks in the description
//! (`` "`RES_LICENSE_NOT_FOUND`: no license has this id" ``); `complete` gives every 4xx and 5xx
//! the problem+json body with `code` narrowed to the codes named for that status.

use std::collections::BTreeSet;

use axum::http::Method;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::schema::{
    AllOfBuilder, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{OpenApi, Ref, RefOr, Response, ResponseBuilder};

use crate::Code;
use crate::permission::{Access, rule_for};

pub use utoipa;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem: every 4xx and 5xx answer has this body. Some problems carry more
/// members (`field` for an invalid field, `retry_after` when throttled).
#[derive(utoipa::ToSchema)]
#[schema(as = Problem)]
#[allow(dead_code)]
pub struct ProblemSchema {
    /// `https://keyledger.dev/problems/<code>`.
    r#type: String,
    /// A short summary of the code.
    title: String,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong with this request, for a person.
    detail: String,
    /// The request's path.
    instance: String,
    /// The stable code to match on.
    code: Code,
    /// The request's id (`X-Request-Id`), to find it in the request log.
    correlation_id: String,
}

/// The security schemes, by the name operations refer to them with.
pub const BEARER: &str = "bearer";
pub const LICENSE: &str = "license";
pub const SESSION_COOKIE: &str = "adminSession";

/// Adds what the service's layers answer to every operation of `doc`, and the components it
/// refers to. Operations whose route has no rule in the permission table are left without
/// security (and the permission test fails for them).
pub fn complete(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert(
        "Problem".to_owned(),
        <ProblemSchema as utoipa::PartialSchema>::schema(),
    );
    components
        .schemas
        .insert("Code".to_owned(), <Code as utoipa::PartialSchema>::schema());
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An access token from `POST /v1/auth/login`, an API key (`klk_…`) or the \
                     bootstrap admin token.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        LICENSE,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "Authorization",
            "`License <key>`: the holder of a license acting on that license only.",
        ))),
    );
    components.add_security_scheme(
        SESSION_COOKIE,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            crate::session::SESSION_COOKIE,
            "The admin hub's session cookie, from `POST /admin/login`; unsafe methods also \
             send its CSRF token.",
        ))),
    );

    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
            (Method::PUT, &mut item.put),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                complete_operation(&method, path, operation);
            }
        }
    }
}

fn complete_operation(method: &Method, path: &str, operation: &mut Operation) {
    let access = rule_for(method, path).map(|rule| rule.access);
    if let Some(access) = access {
        operation.security = Some(security(access));
        let who = format!("Who may call it: {}.", access.describe());
        operation.description = Some(match operation.description.take() {
            Some(text) => format!("{text}\n\n{who}"),
            None => who,
        });
    }
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let has_query_or_path = parameters.iter().any(|p| {
        matches!(
            p.parameter_in,
            ParameterIn::Query | ParameterIn::Path | ParameterIn::Header
        )
    });
    let idempotent = parameters.iter().any(is_idempotency_key);
    let waits = parameters
        .iter()
        .any(|p| p.parameter_in == ParameterIn::Header && p.name == "X-Consistency-Position");
    let has_body = operation.request_body.is_some();

    let mut generic: Vec<(&str, &[Code])> = Vec::new();
    if has_query_or_path {
        generic.push(("400", &[Code::ValInvalidParameter]));
    }
    if has_body {
        generic.push(("400", &[Code::ValMalformedJson, Code::ValInvalidBody]));
        generic.push(("413", &[Code::ValBodyTooLarge]));
        generic.push(("415", &[Code::ValUnsupportedMediaType]));
        generic.push((
            "422",
            &[
                Code::ValInvalidBody,
                Code::ValInvalidField,
                Code::ValUnrepresentable,
            ],
        ));
    }
    if idempotent {
        generic.push(("400", &[Code::ValInvalidIdempotencyKey]));
        generic.push(("409", &[Code::BizIdempotencyInFlight]));
        generic.push(("422", &[Code::ValIdempotencyKeyReused]));
    }
    if waits {
        generic.push(("503", &[Code::SysConsistencyTimeout]));
    }
    match access {
        Some(Access::Public) | None => {}
        Some(_) => {
            generic.push((
                "401",
                &[
                    Code::AuthMissingCredentials,
                    Code::AuthInvalidToken,
                    Code::AuthTokenExpired,
                    Code::AuthUserDisabled,
                ],
            ));
            generic.push(("403", &[Code::AuthForbidden, Code::AuthCsrfFailed]));
        }
    }
    // A bad bearer token is refused on every route, public ones included.
    generic.push(("401", &[Code::AuthInvalidToken, Code::AuthTokenExpired]));
    generic.push(("429", &[Code::RateLimited]));
    generic.push(("503", &[Code::SysUnavailable]));

    for (status, codes) in generic {
        let response = operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(ResponseBuilder::new().description("").build()));
        if let RefOr::T(response) = response {
            add_codes(response, codes);
        }
    }
    for (status, response) in operation.responses.responses.iter_mut() {
        if let (true, RefOr::T(response)) = (status.as_str() >= "400", response) {
            problem_body(status, response);
        }
    }
}

fn is_idempotency_key(parameter: &Parameter) -> bool {
    parameter.parameter_in == ParameterIn::Header && parameter.name == "Idempotency-Key"
}

fn security(access: Access) -> Vec<SecurityRequirement> {
    let none: [&str; 0] = [];
    match access {
        // An empty requirement: no credentials needed.
        Access::Public => vec![SecurityRequirement::default()],
        Access::OwnLicense(_) => vec![
            SecurityRequirement::new(BEARER, none),
            SecurityRequirement::new(LICENSE, none),
            SecurityRequirement::new(SESSION_COOKIE, none),
        ],
        _ => vec![
            SecurityRequirement::new(BEARER, none),
            SecurityRequirement::new(SESSION_COOKIE, none),
        ],
    }
}

/// Codes named in backticks in a description.
fn named_codes(description: &str) -> BTreeSet<String> {
    description
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
        })
        .map(str::to_owned)
        .collect()
}

fn add_codes(response: &mut Response, codes: &[Code]) {
    let named = named_codes(&response.description);
    let new: Vec<String> = codes
        .iter()
        .map(|c| c.as_str().to_owned())
        .filter(|c| !named.contains(c))
        .map(|c| format!("`{c}`"))
        .collect();
    if new.is_empty() {
        return;
    }
    let joined = new.join(", ");
    response.description = if response.description.is_empty() {
        joined
    } else {
        format!("{}; {joined}", response.description)
    };
}

/// The problem+json body, its `code` narrowed to the codes the description names, and
/// `Retry-After` where the problem says when to come back.
fn problem_body(status: &str, response: &mut Response) {
    let codes: Vec<String> = named_codes(&response.description).into_iter().collect();
    let narrowed = ObjectBuilder::new()
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .enum_values(Some(codes)),
        )
        .required("code");
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name("Problem"))
        .item(narrowed)
        .build();
    response.content.insert(
        PROBLEM_JSON.to_owned(),
        ContentBuilder::new()
            .schema(Some(RefOr::T(Schema::AllOf(schema))))
            .build(),
    );
    if status == "429" || status == "503" {
        response.headers.insert(
            "Retry-After".to_owned(),
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(SchemaType::Type(Type::Integer))
                        .format(Some(SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Int64,
                        )))
                        .minimum(Some(0)),
                )
                .description(Some("Seconds to wait before trying again."))
                .build(),
        );
    }
}

/// The `Idempotency-Key` header of the command routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKeyHeader {
    /// A key of the client's (1 to 255 printable ASCII characters): a retry with the same key
    /// and body gets the first answer again instead of a second effect.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_words_in_backticks() {
        let codes = named_codes("`RES_LICENSE_NOT_FOUND`: no such license; `x`, `BIZ_A1`");
        assert_eq!(
            codes.into_iter().collect::<Vec<_>>(),
            ["BIZ_A1", "RES_LICENSE_NOT_FOUND"]
        );
    }
}
