//! API keys for services (the LLM service posting request records, CI issuing licenses):
//! `POST /v1/api-keys`, `GET /v1/api-keys`, `GET /v1/api-keys/{id}` and
//! `DELETE /v1/api-keys/{id}`, and the command the `keyledger api-keys` CLI runs.
//!
//! A key is `klk_` + base58 of 256 random bits, shown once in the creation's answer and
//! stored only as its SHA-256 hash (`api_key-<id>` streams, the inline `api_keys` table). Its
//! scopes are permission names (`licenses:write`); a caller grants only permissions it holds.
//! Revoking a revoked key is answered 204 again and records nothing. These routes sit outside
//! the Idempotency-Key layer: the creation's answer holds the key, which must not be stored.

pub mod aggregate;

use std::collections::BTreeSet;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use keyledger_api::api_key::{ApiKeySecret, RngFailed};
use keyledger_api::{ApiError, AppJson, AppPath, Code, Permission, Principal, Routes};
use keyledger_events::api_key::api_key_stream;
use keyledger_events::{EventStore, Metadata};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::CommandState;
use crate::execute::{CommandError, execute, execute_on_new_stream};
use crate::handler::CommandRequest;
use aggregate::{ApiKey, ApiKeyCommand, ApiKeyError};

/// Longest key name accepted.
pub const MAX_NAME_CHARS: usize = 100;
/// Characters of an unknown scope echoed in the refusal.
const ECHOED_CHARS: usize = 64;

pub fn router(state: CommandState) -> Routes {
    Routes::new()
        .post("/v1/api-keys", create)
        .get("/v1/api-keys", list)
        .get("/v1/api-keys/{id}", get)
        .delete("/v1/api-keys/{id}", revoke)
        .map(|router| router.layer(DefaultBodyLimit::max(crate::BODY_LIMIT)))
        .with_state(state)
}

/// A key's name: trimmed, 1 to 100 characters, no control characters.
pub fn parse_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(format!(
            "must be 1 to {MAX_NAME_CHARS} characters without control characters"
        ));
    }
    Ok(name.to_owned())
}

/// Scopes: a non-empty list of permission names; duplicates are dropped.
pub fn parse_scopes(names: &[String]) -> Result<Vec<Permission>, String> {
    if names.is_empty() {
        return Err("must name at least one permission".to_owned());
    }
    let mut scopes = BTreeSet::new();
    for name in names {
        let Some(permission) = Permission::parse(name) else {
            let shown: String = name.chars().take(ECHOED_CHARS).collect();
            let known: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
            return Err(format!(
                "unknown permission `{shown}`; the permissions are {}",
                known.join(", ")
            ));
        };
        scopes.insert(permission);
    }
    Ok(scopes.into_iter().collect())
}

/// A key just created: the one time its secret is at hand.
#[derive(Debug)]
pub struct NewApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<Permission>,
    pub created_at: DateTime<Utc>,
    pub key: ApiKeySecret,
}

#[derive(Debug)]
pub enum CreateApiKeyError {
    Rng(RngFailed),
    Command(CommandError<ApiKeyError>),
}

impl From<CreateApiKeyError> for ApiError {
    fn from(error: CreateApiKeyError) -> Self {
        match error {
            CreateApiKeyError::Rng(e) => ApiError::internal(e),
            CreateApiKeyError::Command(e) => e.into(),
        }
    }
}

impl From<CommandError<ApiKeyError>> for ApiError {
    fn from(error: CommandError<ApiKeyError>) -> Self {
        match error {
            CommandError::Domain(ApiKeyError::NotFound) => {
                ApiError::not_found(Code::ResApiKeyNotFound, "no API key has this id")
            }
            CommandError::Domain(ApiKeyError::AlreadyExists) => {
                ApiError::internal("a new API key id was already taken")
            }
            CommandError::Conflict(cause) | CommandError::Store(cause) => ApiError::store(cause),
        }
    }
}

/// Creates a key with a validated name and scopes; its creator is the metadata's actor.
pub async fn create_api_key(
    store: &dyn EventStore,
    name: String,
    scopes: Vec<Permission>,
    metadata: &Metadata,
    now: DateTime<Utc>,
) -> Result<NewApiKey, CreateApiKeyError> {
    let key = ApiKeySecret::generate().map_err(CreateApiKeyError::Rng)?;
    let id = Uuid::new_v4();
    let at = keyledger_events::chain::to_micros(now);
    let command = ApiKeyCommand::Create {
        api_key_id: id,
        name: name.clone(),
        prefix: key.display_prefix(),
        key_hash: key.hash(),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        created_by: metadata
            .actor
            .clone()
            .unwrap_or_else(|| "system".to_owned()),
        at,
    };
    execute_on_new_stream::<ApiKey>(store, &api_key_stream(id), &command, metadata, &|_, _| None)
        .await
        .map_err(CreateApiKeyError::Command)?;
    Ok(NewApiKey {
        id,
        name,
        prefix: key.display_prefix(),
        scopes,
        created_at: at,
        key,
    })
}

/// Revokes a key: it authenticates nothing from the next request on.
pub async fn revoke_api_key(
    store: &dyn EventStore,
    id: Uuid,
    metadata: &Metadata,
    now: DateTime<Utc>,
) -> Result<(), CommandError<ApiKeyError>> {
    let command = ApiKeyCommand::Revoke {
        by: metadata
            .actor
            .clone()
            .unwrap_or_else(|| "system".to_owned()),
        at: keyledger_events::chain::to_micros(now),
    };
    execute::<ApiKey>(store, &api_key_stream(id), &command, metadata, &|_, _| None)
        .await
        .map(|_| ())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateApiKeyRequest)]
pub struct CreateRequest {
    /// 1 to 100 characters (trimmed), no control characters.
    #[schema(min_length = 1, max_length = 100, example = "billing-service")]
    pub name: String,
    /// At least one permission; each must be held by the caller.
    #[schema(value_type = Vec<Permission>, min_items = 1)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CreateApiKeyResponse)]
pub struct CreateResponse<'a> {
    pub id: Uuid,
    #[schema(value_type = String)]
    pub name: &'a str,
    #[schema(value_type = String)]
    pub prefix: &'a str,
    #[schema(value_type = Vec<Permission>)]
    pub scopes: &'a [Permission],
    pub created_at: DateTime<Utc>,
    /// The key itself: in this answer and nowhere else.
    #[schema(value_type = String)]
    pub key: &'a str,
}

/// Every API key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<keyledger_projections::api_key::ApiKeyRow>,
}

/// `POST /v1/api-keys {name, scopes}` → 201 with the key, once.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "api keys",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "The key, shown this once.", body = CreateResponse,
         headers(("Location" = String, description = "The key's address."))),
    ),
)]
#[tracing::instrument(skip_all, fields(api_key.id))]
pub async fn create(
    command_request: CommandRequest,
    principal: Principal,
    AppJson(request): AppJson<CreateRequest>,
) -> Result<Response, ApiError> {
    let name = parse_name(&request.name).map_err(|m| ApiError::invalid_field("name", m))?;
    let scopes = parse_scopes(&request.scopes).map_err(|m| ApiError::invalid_field("scopes", m))?;
    if let Some(missing) = scopes.iter().find(|scope| !principal.has(**scope)) {
        return Err(ApiError::forbidden(format!(
            "a key cannot be given the permission `{missing}`: the caller does not hold it"
        )));
    }
    let created = create_api_key(
        command_request.state().store.as_ref(),
        name,
        scopes,
        command_request.metadata(),
        command_request.now,
    )
    .await?;
    tracing::Span::current().record("api_key.id", tracing::field::display(created.id));
    let body = CreateResponse {
        id: created.id,
        name: &created.name,
        prefix: &created.prefix,
        scopes: &created.scopes,
        created_at: created.created_at,
        key: created.key.expose(),
    };
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/api-keys/{}", created.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /v1/api-keys`: every key, newest first, revoked ones included (never a hash).
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "api keys",
    responses((status = 200, description = "Every key, newest first.", body = ApiKeyList)),
)]
pub async fn list(State(state): State<CommandState>) -> Result<Response, ApiError> {
    let client = state.pool.get().await?;
    let api_keys = keyledger_projections::api_key::list(&client).await?;
    Ok(axum::Json(ApiKeyList { api_keys }).into_response())
}

/// `GET /v1/api-keys/{id}`.
#[utoipa::path(
    get,
    path = "/v1/api-keys/{id}",
    tag = "api keys",
    params(("id" = Uuid, Path, description = "The API key's id.")),
    responses(
        (status = 200, description = "The key (never its hash).", body = keyledger_projections::api_key::ApiKeyRow),
        (status = 404, description = "`RES_API_KEY_NOT_FOUND`: no API key has this id."),
    ),
)]
pub async fn get(
    State(state): State<CommandState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    let client = state.pool.get().await?;
    keyledger_projections::api_key::get(&client, id)
        .await?
        .map(|key| axum::Json(key).into_response())
        .ok_or_else(|| ApiError::not_found(Code::ResApiKeyNotFound, "no API key has this id"))
}

/// `DELETE /v1/api-keys/{id}`: revokes the key → 204 (again 204 for a revoked key).
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    tag = "api keys",
    params(("id" = Uuid, Path, description = "The API key's id.")),
    responses(
        (status = 204, description = "The key is revoked (again 204 for a revoked key)."),
        (status = 404, description = "`RES_API_KEY_NOT_FOUND`: no API key has this id."),
    ),
)]
#[tracing::instrument(skip_all, fields(api_key.id = %id))]
pub async fn revoke(
    request: CommandRequest,
    AppPath(id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    revoke_api_key(
        request.state().store.as_ref(),
        id,
        request.metadata(),
        request.now,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_name_is_trimmed_and_bounded_and_has_no_control_characters() {
        assert_eq!(parse_name("  ci  ").unwrap(), "ci");
        assert!(parse_name(&"n".repeat(MAX_NAME_CHARS)).is_ok());
        for bad in [
            "",
            "   ",
            "a\nb",
            "tab\there",
            &"n".repeat(MAX_NAME_CHARS + 1),
        ] {
            assert!(parse_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn scopes_are_known_permissions_without_duplicates() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_scopes(&names(&[
                "requests:write",
                "licenses:write",
                "requests:write"
            ])),
            Ok(vec![Permission::LicensesWrite, Permission::RequestsWrite])
        );
        assert!(parse_scopes(&[]).is_err());
        let refused = parse_scopes(&names(&["licenses:write", "licenses:*"])).unwrap_err();
        assert!(refused.contains("`licenses:*`"), "{refused}");
    }

    proptest! {
        #[test]
        fn an_accepted_name_is_trimmed_short_and_parses_to_itself(text in "\\PC{0,120}|[\\x00-\\x1f a-z]{0,20}") {
            if let Ok(name) = parse_name(&text) {
                prop_assert_eq!(name.trim(), name.as_str());
                prop_assert!((1..=MAX_NAME_CHARS).contains(&name.chars().count()));
                prop_assert!(!name.chars().any(char::is_control));
                prop_assert_eq!(parse_name(&name), Ok(name.clone()));
            }
        }

        #[test]
        fn accepted_scopes_are_exactly_the_distinct_known_names(picks in proptest::collection::vec(0usize..12, 0..12)) {
            let names: Vec<String> = picks
                .iter()
                .map(|&i| Permission::ALL.get(i).map_or("unknown:scope", |p| p.as_str()).to_owned())
                .collect();
            match parse_scopes(&names) {
                Ok(scopes) => {
                    let distinct: BTreeSet<&str> = names.iter().map(String::as_str).collect();
                    let got: BTreeSet<&str> = scopes.iter().map(|p| p.as_str()).collect();
                    prop_assert_eq!(got, distinct);
                }
                Err(_) => prop_assert!(names.is_empty() || names.iter().any(|n| Permission::parse(n).is_none())),
            }
        }
    }
}
