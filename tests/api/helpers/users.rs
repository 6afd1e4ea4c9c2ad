//! Users, logins and API keys: `/v1/users/**`, `/v1/auth/**`, `/v1/api-keys/**`.

use chrono::{DateTime, Utc};
use reqwest::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::TestApp;
use super::client::{Api, expect};

/// A user as `/v1/users` shows one.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/users`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct UserList {
    pub items: Vec<User>,
}

/// The 200 of `POST /v1/users/{id}/revoke-tokens`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct RevokedTokens {
    pub id: Uuid,
    pub revoked_logins: usize,
}

/// The 200 of a login or a refresh.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Tokens {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
    pub refresh_token: String,
}

/// `GET /v1/auth/me`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Me {
    pub kind: String,
    pub sub: Option<String>,
    pub role: Option<String>,
    pub actor: String,
}

/// The 201 of `POST /v1/api-keys`: the key, this once.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct NewApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub key: String,
}

/// An API key as `GET /v1/api-keys` shows it (never the key).
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// `GET /v1/api-keys`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKey>,
}

impl TestApp {
    /// Calls as the bearer of `token` (an access token, an API key, the bootstrap token).
    pub fn as_bearer(&self, token: &str) -> Api<'_> {
        self.with(&super::client_with(&format!("Bearer {token}")))
    }

    pub fn users(&self) -> Users<'_> {
        self.api().users()
    }

    pub fn auth(&self) -> Auth<'_> {
        self.api().auth()
    }

    pub fn api_keys(&self) -> ApiKeys<'_> {
        self.api().api_keys()
    }
}

impl<'a> Api<'a> {
    /// A POST without a body (disable, enable, revoke-tokens).
    async fn post_empty(&self, path: &str) -> Response {
        self.send(reqwest::Method::POST, path, None::<&Value>).await
    }

    pub fn users(self) -> Users<'a> {
        Users(self)
    }

    pub fn auth(self) -> Auth<'a> {
        Auth(self)
    }

    pub fn api_keys(self) -> ApiKeys<'a> {
        ApiKeys(self)
    }
}

/// `/v1/users/**` and `POST /v1/auth/password`.
pub struct Users<'a>(Api<'a>);

impl Users<'_> {
    pub async fn try_create(&self, email: &str, password: &str, role: &str) -> Response {
        self.try_create_with(&json!({ "email": email, "password": password, "role": role }))
            .await
    }

    /// `POST /v1/users` with any body.
    pub async fn try_create_with(&self, body: &Value) -> Response {
        self.0.post("/v1/users", body).await
    }

    /// Creates a user with the password `PASSWORD`.
    pub async fn create(&self, email: &str, role: &str) -> User {
        expect(
            self.try_create(email, super::PASSWORD, role).await,
            201,
            "creating a user",
        )
        .await
    }

    pub async fn try_list(&self) -> Response {
        self.0.get("/v1/users").await
    }

    pub async fn try_get(&self, id: impl ToString) -> Response {
        let id = id.to_string();
        self.0.get(&format!("/v1/users/{id}")).await
    }

    pub async fn get(&self, id: impl ToString) -> User {
        expect(self.try_get(id).await, 200, "reading a user").await
    }

    pub async fn try_change_role(&self, id: impl ToString, role: &str) -> Response {
        let id = id.to_string();
        self.0
            .post(&format!("/v1/users/{id}/role"), &json!({ "role": role }))
            .await
    }

    pub async fn change_role(&self, id: impl ToString, role: &str) -> User {
        expect(self.try_change_role(id, role).await, 200, "changing a role").await
    }

    pub async fn try_set_password(&self, id: impl ToString, password: &str) -> Response {
        let id = id.to_string();
        self.0
            .post(
                &format!("/v1/users/{id}/password"),
                &json!({ "password": password }),
            )
            .await
    }

    pub async fn try_disable(&self, id: impl ToString) -> Response {
        let id = id.to_string();
        self.0.post_empty(&format!("/v1/users/{id}/disable")).await
    }

    pub async fn disable(&self, id: impl ToString) -> User {
        expect(self.try_disable(id).await, 200, "disabling a user").await
    }

    pub async fn try_enable(&self, id: impl ToString) -> Response {
        let id = id.to_string();
        self.0.post_empty(&format!("/v1/users/{id}/enable")).await
    }

    pub async fn enable(&self, id: impl ToString) -> User {
        expect(self.try_enable(id).await, 200, "enabling a user").await
    }

    pub async fn try_revoke_tokens(&self, id: impl ToString) -> Response {
        let id = id.to_string();
        self.0
            .post_empty(&format!("/v1/users/{id}/revoke-tokens"))
            .await
    }

    pub async fn revoke_tokens(&self, id: impl ToString) -> RevokedTokens {
        expect(
            self.try_revoke_tokens(id).await,
            200,
            "revoking a user's tokens",
        )
        .await
    }

    /// `POST /v1/users/{id}/{action}` with `body` (role, password).
    pub async fn command(&self, id: impl ToString, action: &str, body: &Value) -> Response {
        let id = id.to_string();
        self.0.post(&format!("/v1/users/{id}/{action}"), body).await
    }

    /// The caller's own password change.
    pub async fn try_change_own_password(&self, current: &str, new: &str) -> Response {
        self.0
            .post(
                "/v1/auth/password",
                &json!({ "current_password": current, "new_password": new }),
            )
            .await
    }
}

/// `/v1/auth/**`: login, refresh, logout, me.
pub struct Auth<'a>(Api<'a>);

impl Auth<'_> {
    pub async fn try_login(&self, email: &str, password: &str) -> Response {
        self.0
            .post(
                "/v1/auth/login",
                &json!({ "email": email, "password": password }),
            )
            .await
    }

    /// Logs in with the password `PASSWORD`.
    pub async fn login(&self, email: &str) -> Tokens {
        self.login_with(email, super::PASSWORD).await
    }

    pub async fn login_with(&self, email: &str, password: &str) -> Tokens {
        expect(
            self.try_login(email, password).await,
            200,
            &format!("logging in as {email}"),
        )
        .await
    }

    pub async fn try_refresh(&self, refresh_token: &str) -> Response {
        self.0
            .post(
                "/v1/auth/refresh",
                &json!({ "refresh_token": refresh_token }),
            )
            .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Tokens {
        expect(self.try_refresh(refresh_token).await, 200, "refreshing").await
    }

    pub async fn try_logout(&self, refresh_token: &str) -> Response {
        self.0
            .post(
                "/v1/auth/logout",
                &json!({ "refresh_token": refresh_token }),
            )
            .await
    }

    pub async fn try_me(&self) -> Response {
        self.0.get("/v1/auth/me").await
    }

    pub async fn me(&self) -> Me {
        expect(self.try_me().await, 200, "who am I").await
    }
}

/// `/v1/api-keys/**`.
pub struct ApiKeys<'a>(Api<'a>);

impl ApiKeys<'_> {
    pub async fn create(&self, name: &str, scopes: &[&str]) -> NewApiKey {
        expect(
            self.try_create(name, scopes).await,
            201,
            "creating an API key",
        )
        .await
    }

    pub async fn try_create(&self, name: &str, scopes: &[&str]) -> Response {
        self.try_create_with(&json!({ "name": name, "scopes": scopes }))
            .await
    }

    /// `POST /v1/api-keys` with any body.
    pub async fn try_create_with(&self, body: &Value) -> Response {
        self.0.post("/v1/api-keys", body).await
    }

    pub async fn try_list(&self) -> Response {
        self.0.get("/v1/api-keys").await
    }

    pub async fn try_get(&self, id: impl ToString) -> Response {
        let id = id.to_string();
        self.0.get(&format!("/v1/api-keys/{id}")).await
    }

    pub async fn get(&self, id: impl ToString) -> ApiKey {
        expect(self.try_get(id).await, 200, "reading an API key").await
    }

    pub async fn try_revoke(&self, id: impl ToString) -> Response {
        let id = id.to_string();
        self.0.delete(&format!("/v1/api-keys/{id}")).await
    }
}
