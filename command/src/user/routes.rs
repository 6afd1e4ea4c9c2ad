//! Managing users over the API (`users:manage`): `POST /v1/users`, `GET /v1/users`,
//! `GET /v1/users/{id}`, and `POST /v1/users/{id}/role|password|disable|enable|revoke-tokens`;
//! and a user's own `POST /v1/auth/password`.
//!
//! These routes sit outside the Idempotency-Key layer, as login does: their bodies hold
//! passwords, and not even a hash of a body holding a password is stored. Each change is
//! recorded with the caller as the events' actor.
//!
//! A caller gives only what it holds: creating a user with a role, giving a user a role, or
//! changing a user who has one (their password, their standing, their logins) asks for every
//! permission of that role (403 `AUTH_FORBIDDEN`), as giving an API key a scope does.
//!
//! The last enabled admin can be neither disabled nor demoted, by anyone (409
//! `BIZ_LAST_ADMIN`): the checks and changes of admins take turns on an advisory lock, so two
//! admins demoting each other at once cannot leave none.

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use deadpool_postgres::GenericClient;
use keyledger_api::permission::grants;
use keyledger_api::{ApiError, AppJson, AppPath, Code, Principal, Role, Routes};

use keyledger_projections::user::UserRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{CreateUserError, Email, create_user, password};
use crate::auth::{AuthState, throttle_account, throttle_ip};
use crate::handler::RequestMetadata;

/// The advisory lock the changes that may remove an admin take turns on.
const ADMINS_LOCK: i64 = 0x6b6c_6164_6d69_6e73; // "kladmins"

/// The user routes' part of the OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        create,
        list,
        show,
        change_role,
        set_password,
        disable,
        enable,
        revoke_tokens,
        change_own_password,
    ),
    components(schemas(
        CreateRequest,
        RoleRequest,
        PasswordRequest,
        OwnPasswordRequest,
        UserSchema,
        UserRole,
        UserList,
        RevokedTokens,
    ))
)]
pub struct UserApi;

pub fn router(state: AuthState) -> Routes {
    Routes::new()
        .post("/v1/users", create)
        .get("/v1/users", list)
        .get("/v1/users/{id}", show)
        .post("/v1/users/{id}/role", change_role)
        .post("/v1/users/{id}/password", set_password)
        .post("/v1/users/{id}/disable", disable)
        .post("/v1/users/{id}/enable", enable)
        .post("/v1/users/{id}/revoke-tokens", revoke_tokens)
        .post("/v1/auth/password", change_own_password)
        .map(|router| router.layer(DefaultBodyLimit::max(crate::BODY_LIMIT)))
        .with_state(state)
}

/// A role: what a user may do.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum UserRole {
    Admin,
    Operator,
    Auditor,
    Viewer,
}

/// A user as the API shows them, never the password's hash (the schema of `UserRow`).
#[derive(ToSchema)]
#[schema(as = User)]
#[allow(dead_code)]
pub struct UserSchema {
    id: Uuid,
    /// Lower-cased.
    #[schema(example = "ops@example.com")]
    email: String,
    role: UserRole,
    /// A disabled user cannot log in, and their tokens are refused.
    disabled: bool,
    created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = CreateUserRequest)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// An email address like `name@example.com` (trimmed and lower-cased; at most 254
    /// characters), not a user's already.
    #[schema(example = "ops@example.com")]
    pub email: String,
    /// 8 to 256 characters.
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
    #[schema(value_type = UserRole)]
    pub role: String,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = ChangeRoleRequest)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    #[schema(value_type = UserRole)]
    pub role: String,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = SetPasswordRequest)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// The new password: 8 to 256 characters.
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnPasswordRequest {
    pub current_password: String,
    /// 8 to 256 characters.
    #[schema(min_length = 8, max_length = 256)]
    pub new_password: String,
}

/// Every user, oldest first.
#[derive(Serialize, ToSchema)]
pub struct UserList {
    #[schema(value_type = Vec<UserSchema>)]
    pub items: Vec<UserRow>,
}

#[derive(Serialize, ToSchema)]
pub struct RevokedTokens {
    pub id: Uuid,
    /// How many logins (refresh families) were live and are now revoked.
    pub revoked_logins: usize,
}

fn parse_role(text: &str) -> Result<Role, ApiError> {
    Role::parse(text)
        .ok_or_else(|| ApiError::invalid_field("role", "one of admin, operator, auditor, viewer"))
}

fn user_not_found() -> ApiError {
    ApiError::not_found(Code::ResUserNotFound, "no user has this id")
}

/// The user as the table holds them now (the inline projection has applied every change).
async fn current(state: &AuthState, user_id: Uuid) -> Result<UserRow, ApiError> {
    let client = state.pool.get().await?;
    keyledger_projections::user::user(&client, user_id)
        .await?
        .ok_or_else(user_not_found)
}

/// A caller gives only what it holds: giving a user a role asks for every permission of that
/// role, as giving an API key a scope asks for that permission. Otherwise an API key with
/// `users:manage` alone could create an admin and sign in as them.
fn holds_role(principal: &Principal, role: Role) -> Result<(), ApiError> {
    match grants(role)
        .iter()
        .find(|permission| !principal.has(**permission))
    {
        Some(missing) => Err(ApiError::forbidden(format!(
            "only a caller holding every permission of the role `{}` may give it or change a \
             user who has it: the caller does not hold `{missing}`",
            role.as_str()
        ))),
        None => Ok(()),
    }
}

/// The user `user_id`, when the caller may change them: it holds every permission of their
/// role (setting an admin's password, say, would otherwise make the caller that admin).
async fn changeable(
    state: &AuthState,
    principal: &Principal,
    user_id: Uuid,
) -> Result<UserRow, ApiError> {
    let user = current(state, user_id).await?;
    // A role the service does not know is treated as the one that grants the most.
    holds_role(principal, Role::parse(&user.role).unwrap_or(Role::Admin))?;
    Ok(user)
}

/// Runs `change`, which may leave `user_id` without the admin role or disabled, unless the
/// user is the last enabled admin.
///
/// Every change that may remove an admin goes through here, the API's and the command line's.
pub async fn unless_last_admin<T>(
    pool: &deadpool_postgres::Pool,
    user_id: Uuid,
    change: impl AsyncFnOnce() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut client = pool.get().await?;
    // Dropped unfinished (a cancelled request), the transaction rolls back and the lock goes.
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&ADMINS_LOCK])
        .await?;
    let target = keyledger_projections::user::user(&transaction, user_id)
        .await?
        .ok_or_else(user_not_found)?;
    if target.role == Role::Admin.as_str()
        && !target.disabled
        && keyledger_projections::user::enabled_admins(&transaction).await? <= 1
    {
        return Err(ApiError::conflict(
            Code::BizLastAdmin,
            "this is the last enabled admin: make another user an admin first",
        ));
    }
    let result = change().await;
    transaction.commit().await?;
    result
}

/// Creates a user who logs in with an email and a password.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "The new user (never the password's hash).", body = UserSchema, headers(("Location" = String, description = "`/v1/users/{id}`."))),
        (status = 409, description = "`BIZ_USER_EXISTS`: a user has this email."),
        (status = 422, description = "`VAL_INVALID_FIELD`: not an email address, a password of fewer than 8 or more than 256 characters, or an unknown role."),
    ),
)]
pub async fn create(
    State(state): State<AuthState>,
    principal: Principal,
    RequestMetadata(metadata): RequestMetadata,
    AppJson(request): AppJson<CreateRequest>,
) -> Result<Response, ApiError> {
    let role = parse_role(&request.role)?;
    holds_role(&principal, role)?;
    let email = Email::parse(&request.email).map_err(|e| ApiError::invalid_field("email", e))?;
    password::check_new(&request.password).map_err(|e| ApiError::invalid_field("password", e))?;
    let taken = {
        let client = state.pool.get().await?;
        keyledger_projections::user::user_by_email(&client, email.as_str())
            .await?
            .is_some()
    };
    let user_id = create_user(
        state.store.as_ref(),
        email.as_str(),
        request.password,
        role,
        taken,
        &metadata,
        state.now(),
    )
    .await
    .map_err(|error| match error {
        CreateUserError::Email(e) => ApiError::invalid_field("email", e),
        CreateUserError::Password(e) => ApiError::invalid_field("password", e),
        CreateUserError::EmailTaken => {
            ApiError::conflict(Code::BizUserExists, "a user with this email exists")
        }
        CreateUserError::Store(cause) => ApiError::internal(cause),
    })?;
    let user = current(&state, user_id).await?;
    let mut response = (StatusCode::CREATED, axum::Json(user)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/users/{user_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Lists every user, oldest first.
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    responses(
        (status = 200, description = "Every user.", body = UserList),
    ),
)]
pub async fn list(State(state): State<AuthState>) -> Result<Response, ApiError> {
    let client = state.pool.get().await?;
    let items = keyledger_projections::user::users(&client).await?;
    Ok(axum::Json(UserList { items }).into_response())
}

/// Reads a user.
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The user.", body = UserSchema),
        (status = 404, description = "`RES_USER_NOT_FOUND`: no user has this id."),
    ),
)]
pub async fn show(
    State(state): State<AuthState>,
    AppPath(user_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(current(&state, user_id).await?).into_response())
}

/// Changes a user's role: their next request acts with it.
#[utoipa::path(
    post,
    path = "/v1/users/{id}/role",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id.")),
    request_body = RoleRequest,
    responses(
        (status = 200, description = "The user, with the new role (unchanged when it was theirs already).", body = UserSchema),
        (status = 404, description = "`RES_USER_NOT_FOUND`: no user has this id."),
        (status = 409, description = "`BIZ_LAST_ADMIN`: the user is the last enabled admin; `BIZ_USER_DISABLED`: the user is disabled; `BIZ_CONCURRENCY_CONFLICT`: a concurrent change won."),
        (status = 422, description = "`VAL_INVALID_FIELD`: not one of admin, operator, auditor, viewer."),
    ),
)]
pub async fn change_role(
    State(state): State<AuthState>,
    principal: Principal,
    RequestMetadata(metadata): RequestMetadata,
    AppPath(user_id): AppPath<Uuid>,
    AppJson(request): AppJson<RoleRequest>,
) -> Result<Response, ApiError> {
    let role = parse_role(&request.role)?;
    holds_role(&principal, role)?;
    changeable(&state, &principal, user_id).await?;
    let meta = metadata;
    let change =
        async || super::change_role(state.store.as_ref(), user_id, role, &meta, state.now()).await;
    if role == Role::Admin {
        change().await?;
    } else {
        unless_last_admin(&state.pool, user_id, change).await?;
    }
    Ok(axum::Json(current(&state, user_id).await?).into_response())
}

/// Sets a user's password: their access tokens are refused and their logins revoked.
#[utoipa::path(
    post,
    path = "/v1/users/{id}/password",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id.")),
    request_body = PasswordRequest,
    responses(
        (status = 204, description = "The password is set; the user logs in again with it."),
        (status = 404, description = "`RES_USER_NOT_FOUND`: no user has this id."),
        (status = 409, description = "`BIZ_USER_DISABLED`: the user is disabled; `BIZ_CONCURRENCY_CONFLICT`: a concurrent change won."),
        (status = 422, description = "`VAL_INVALID_FIELD`: a password of fewer than 8 or more than 256 characters."),
    ),
)]
pub async fn set_password(
    State(state): State<AuthState>,
    principal: Principal,
    RequestMetadata(metadata): RequestMetadata,
    AppPath(user_id): AppPath<Uuid>,
    AppJson(request): AppJson<PasswordRequest>,
) -> Result<Response, ApiError> {
    changeable(&state, &principal, user_id).await?;
    super::change_password(
        state.store.as_ref(),
        &state.pool,
        user_id,
        request.password,
        &metadata,
        state.now(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Disables a user: no more logins, access tokens refused at once, logins revoked.
#[utoipa::path(
    post,
    path = "/v1/users/{id}/disable",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The user, disabled (also when they were already).", body = UserSchema),
        (status = 404, description = "`RES_USER_NOT_FOUND`: no user has this id."),
        (status = 409, description = "`BIZ_LAST_ADMIN`: the user is the last enabled admin; `BIZ_CONCURRENCY_CONFLICT`: a concurrent change won."),
    ),
)]
pub async fn disable(
    State(state): State<AuthState>,
    principal: Principal,
    RequestMetadata(metadata): RequestMetadata,
    AppPath(user_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    changeable(&state, &principal, user_id).await?;
    let meta = metadata;
    unless_last_admin(&state.pool, user_id, async || {
        super::disable_user(
            state.store.as_ref(),
            &state.pool,
            user_id,
            &meta,
            state.now(),
        )
        .await
    })
    .await?;
    Ok(axum::Json(current(&state, user_id).await?).into_response())
}

/// Enables a disabled user: they may log in again (their old logins stay ended).
#[utoipa::path(
    post,
    path = "/v1/users/{id}/enable",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The user, enabled (also when they were already).", body = UserSchema),
        (status = 404, description = "`RES_USER_NOT_FOUND`: no user has this id."),
        (status = 409, description = "`BIZ_CONCURRENCY_CONFLICT`: a concurrent change won."),
    ),
)]
pub async fn enable(
    State(state): State<AuthState>,
    principal: Principal,
    RequestMetadata(metadata): RequestMetadata,
    AppPath(user_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    changeable(&state, &principal, user_id).await?;
    super::enable_user(state.store.as_ref(), user_id, &metadata, state.now()).await?;
    Ok(axum::Json(current(&state, user_id).await?).into_response())
}

/// Ends every access token and login of a user.
#[utoipa::path(
    post,
    path = "/v1/users/{id}/revoke-tokens",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The tokens are revoked.", body = RevokedTokens),
        (status = 404, description = "`RES_USER_NOT_FOUND`: no user has this id."),
        (status = 409, description = "`BIZ_CONCURRENCY_CONFLICT`: a concurrent change won."),
    ),
)]
pub async fn revoke_tokens(
    State(state): State<AuthState>,
    principal: Principal,
    RequestMetadata(metadata): RequestMetadata,
    AppPath(user_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    changeable(&state, &principal, user_id).await?;
    let revoked_logins = super::revoke_tokens(
        state.store.as_ref(),
        &state.pool,
        user_id,
        &metadata,
        state.now(),
    )
    .await?;
    Ok(axum::Json(RevokedTokens {
        id: user_id,
        revoked_logins,
    })
    .into_response())
}

/// Changes the signed-in user's own password; every token of theirs ends.
///
/// A wrong current password is throttled like a failed login. On success every token of the
/// user ends, this request's too: they log in again with the new password.
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "auth",
    request_body = OwnPasswordRequest,
    responses(
        (status = 204, description = "The password is changed; log in again with it."),
        (status = 403, description = "`AUTH_WRONG_PASSWORD`: the current password is wrong; `AUTH_FORBIDDEN`: the caller is not a user signed in with a password."),
        (status = 404, description = "`RES_USER_NOT_FOUND`: the caller's user is gone."),
        (status = 409, description = "`BIZ_USER_DISABLED`: the user was disabled meanwhile; `BIZ_CONCURRENCY_CONFLICT`: a concurrent change won."),
        (status = 422, description = "`VAL_INVALID_FIELD`: a new password of fewer than 8 or more than 256 characters."),
    ),
)]
pub async fn change_own_password(
    State(state): State<AuthState>,
    principal: Principal,
    RequestMetadata(metadata): RequestMetadata,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    AppJson(request): AppJson<OwnPasswordRequest>,
) -> Result<Response, ApiError> {
    // The permission table lets only users here; the handler does not rely on it.
    let Principal::User { id: user_id, .. } = principal else {
        return Err(ApiError::forbidden(
            "only a user signed in with a password may call this",
        ));
    };
    password::check_new(&request.new_password)
        .map_err(|e| ApiError::invalid_field("new_password", e))?;
    let login = {
        let client = state.pool.get().await?;
        login_of(&client, user_id).await?
    };
    let account = throttle_account(&login.email);
    let ip = throttle_ip(&state.limits, &headers, peer);
    let throttle = state.limits.login_throttle();
    throttle
        .check(&account, ip)
        .map_err(|wait| wait.problem())?;
    let matches = password::verify(request.current_password, login.password_hash)
        .await
        .map_err(ApiError::internal)?;
    if !matches {
        throttle.record_failure(&account, ip);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Code::AuthWrongPassword,
            "the current password is wrong",
        ));
    }
    throttle.record_success(&account, ip);
    super::change_password(
        state.store.as_ref(),
        &state.pool,
        user_id,
        request.new_password,
        &metadata,
        state.now(),
    )
    .await
    .map_err(|error| match error.code {
        // The new password's field has its own name here.
        Code::ValInvalidField => ApiError::invalid_field(
            "new_password",
            error.detail.trim_start_matches("password: "),
        ),
        _ => error,
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

struct Login {
    email: String,
    password_hash: String,
}

async fn login_of(client: &impl GenericClient, user_id: Uuid) -> Result<Login, ApiError> {
    let user = keyledger_projections::user::user(client, user_id)
        .await?
        .ok_or_else(user_not_found)?;
    let row = keyledger_projections::user::user_by_email(client, &user.email)
        .await?
        .ok_or_else(user_not_found)?;
    Ok(Login {
        email: user.email,
        password_hash: row.password_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn only_the_four_role_names_are_roles(text in "\\PC{0,20}") {
            let parsed = parse_role(&text);
            let known = ["admin", "operator", "auditor", "viewer"].contains(&text.as_str());
            prop_assert_eq!(parsed.is_ok(), known);
            if let Err(error) = parsed {
                // The refusal names the choices, never echoes the input.
                prop_assert_eq!(error.code, Code::ValInvalidField);
                prop_assert_eq!(
                    error.detail,
                    "role: one of admin, operator, auditor, viewer"
                );
            }
        }
    }
}
