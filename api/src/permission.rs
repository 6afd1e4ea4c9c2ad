//! Who may do what: one table from every route to the access it needs, the permissions each
//! role grants, and the `authorize` route layer that enforces the table. A route the table does
//! not name is refused to everyone (deny by default); a test walks the service's routes and
//! fails on any route missing here.
//!
//! API keys carry permissions by name (`licenses:write`) as their scopes; users have them
//! through their role; a license holder (`Authorization: License <key>`) reaches only the
//! routes marked `OwnLicense`, and only for its own license.

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::principal::{Principal, Role};
use crate::{ApiError, Code};

/// A permission: what an API key's scope names and what roles grant.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Permission {
    #[serde(rename = "licenses:read")]
    LicensesRead,
    #[serde(rename = "licenses:write")]
    LicensesWrite,
    #[serde(rename = "sessions:read")]
    SessionsRead,
    #[serde(rename = "sessions:write")]
    SessionsWrite,
    #[serde(rename = "requests:read")]
    RequestsRead,
    #[serde(rename = "requests:write")]
    RequestsWrite,
    #[serde(rename = "events:read")]
    EventsRead,
    #[serde(rename = "users:manage")]
    UsersManage,
    #[serde(rename = "api_keys:manage")]
    ApiKeysManage,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::LicensesRead,
        Permission::LicensesWrite,
        Permission::SessionsRead,
        Permission::SessionsWrite,
        Permission::RequestsRead,
        Permission::RequestsWrite,
        Permission::EventsRead,
        Permission::UsersManage,
        Permission::ApiKeysManage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::LicensesRead => "licenses:read",
            Permission::LicensesWrite => "licenses:write",
            Permission::SessionsRead => "sessions:read",
            Permission::SessionsWrite => "sessions:write",
            Permission::RequestsRead => "requests:read",
            Permission::RequestsWrite => "requests:write",
            Permission::EventsRead => "events:read",
            Permission::UsersManage => "users:manage",
            Permission::ApiKeysManage => "api_keys:manage",
        }
    }

    pub fn parse(text: &str) -> Option<Permission> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The permissions a role grants.
pub fn grants(role: Role) -> &'static [Permission] {
    use Permission::*;
    match role {
        Role::Admin => &Permission::ALL,
        Role::Operator => &[
            LicensesRead,
            LicensesWrite,
            SessionsRead,
            SessionsWrite,
            RequestsRead,
            EventsRead,
        ],
        Role::Auditor => &[LicensesRead, SessionsRead, RequestsRead, EventsRead],
        Role::Viewer => &[LicensesRead, SessionsRead],
    }
}

impl Principal {
    /// Whether the principal holds `permission` (through its role or its key's scopes).
    pub fn has(&self, permission: Permission) -> bool {
        match self {
            Principal::ApiKey { scopes, .. } => scopes.contains(&permission),
            Principal::Anonymous | Principal::License { .. } => false,
            other => other
                .role()
                .is_some_and(|role| grants(role).contains(&permission)),
        }
    }
}

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials.
    Public,
    /// Any authenticated caller.
    Authenticated,
    /// A user signed in with a password (not the bootstrap token, an API key or a license).
    SignedInUser,
    /// A caller holding the permission.
    Requires(Permission),
    /// A caller holding the permission, or the holder of the license the path's `{id}` names.
    OwnLicense(Permission),
}

impl Access {
    /// As the README's table says it.
    pub fn describe(self) -> String {
        match self {
            Access::Public => "anyone".to_owned(),
            Access::Authenticated => "any credentials".to_owned(),
            Access::SignedInUser => "a signed-in user".to_owned(),
            Access::Requires(permission) => format!("`{permission}`"),
            Access::OwnLicense(permission) => {
                format!("`{permission}`, or the license's own key")
            }
        }
    }
}

/// The table as Markdown, as the README shows it (`keyledger permissions` prints it).
pub fn markdown_table() -> String {
    let mut text = String::from("| route | who may call it |\n|---|---|\n");
    for rule in TABLE {
        text.push_str(&format!(
            "| `{} {}` | {} |\n",
            rule.method,
            rule.path,
            rule.access.describe()
        ));
    }
    text
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

const fn rule(method: Method, path: &'static str, access: Access) -> Rule {
    Rule {
        method,
        path,
        access,
    }
}

/// Every route of the service and what it asks. The README shows this table.
pub const TABLE: &[Rule] = {
    use Access::*;
    use Permission::*;
    const GET: Method = Method::GET;
    const POST: Method = Method::POST;
    const PATCH: Method = Method::PATCH;
    const DELETE: Method = Method::DELETE;
    &[
        // Probes and scraping, for the platform's orchestrator and Prometheus.
        rule(GET, "/health/live", Public),
        rule(GET, "/health/startup", Public),
        rule(GET, "/health/ready", Public),
        rule(GET, "/health", Public),
        rule(GET, "/metrics", Public),
        // Signing in.
        rule(GET, "/.well-known/jwks.json", Public),
        rule(GET, "/.well-known/keyledger-keys.json", Public),
        // The API's description and its reference page.
        rule(GET, "/openapi.json", Public),
        rule(GET, "/admin/api", Public),
        // MCP tools for agents: each call is checked again as the route it calls.
        rule(POST, "/mcp", Authenticated),
        rule(POST, "/v1/auth/login", Public),
        rule(POST, "/v1/auth/refresh", Public),
        rule(POST, "/v1/auth/logout", Public),
        rule(GET, "/v1/auth/me", Authenticated),
        rule(POST, "/v1/auth/password", SignedInUser),
        // Users.
        rule(POST, "/v1/users", Requires(UsersManage)),
        rule(GET, "/v1/users", Requires(UsersManage)),
        rule(GET, "/v1/users/{id}", Requires(UsersManage)),
        rule(POST, "/v1/users/{id}/role", Requires(UsersManage)),
        rule(POST, "/v1/users/{id}/password", Requires(UsersManage)),
        rule(POST, "/v1/users/{id}/disable", Requires(UsersManage)),
        rule(POST, "/v1/users/{id}/enable", Requires(UsersManage)),
        rule(POST, "/v1/users/{id}/revoke-tokens", Requires(UsersManage)),
        // Licenses. Validation with the key in the body reveals nothing without the key.
        rule(POST, "/v1/licenses/validate", Public),
        rule(POST, "/v1/licenses", Requires(LicensesWrite)),
        rule(GET, "/v1/licenses", Requires(LicensesRead)),
        rule(GET, "/v1/licenses/by-key", Requires(LicensesRead)),
        rule(POST, "/v1/licenses/by-key", Requires(LicensesRead)),
        rule(GET, "/v1/licenses/{id}", Requires(LicensesRead)),
        rule(GET, "/v1/licenses/{id}/events", Requires(LicensesRead)),
        rule(GET, "/v1/licenses/{id}/usage", Requires(LicensesRead)),
        rule(
            GET,
            "/v1/licenses/{id}/installations",
            Requires(LicensesRead),
        ),
        rule(POST, "/v1/licenses/{id}/revoke", Requires(LicensesWrite)),
        rule(POST, "/v1/licenses/{id}/suspend", Requires(LicensesWrite)),
        rule(POST, "/v1/licenses/{id}/reinstate", Requires(LicensesWrite)),
        rule(POST, "/v1/licenses/{id}/renew", Requires(LicensesWrite)),
        rule(POST, "/v1/licenses/{id}/policy", Requires(LicensesWrite)),
        rule(
            POST,
            "/v1/licenses/{id}/certificate",
            OwnLicense(LicensesWrite),
        ),
        rule(
            POST,
            "/v1/licenses/{id}/installations",
            OwnLicense(LicensesWrite),
        ),
        rule(
            DELETE,
            "/v1/licenses/{id}/installations/{installation_id}",
            OwnLicense(LicensesWrite),
        ),
        rule(
            POST,
            "/v1/licenses/{id}/installations/{installation_id}/heartbeat",
            OwnLicense(LicensesWrite),
        ),
        // Sessions.
        rule(POST, "/v1/sessions", Requires(SessionsWrite)),
        rule(GET, "/v1/sessions", Requires(SessionsRead)),
        rule(GET, "/v1/sessions/{id}", Requires(SessionsRead)),
        rule(PATCH, "/v1/sessions/{id}", Requires(SessionsWrite)),
        rule(
            POST,
            "/v1/sessions/{id}/transition",
            Requires(SessionsWrite),
        ),
        // The request log.
        rule(POST, "/v1/requests", Requires(RequestsWrite)),
        rule(GET, "/v1/requests", Requires(RequestsRead)),
        rule(GET, "/v1/requests/{id}", Requires(RequestsRead)),
        // The event log.
        rule(GET, "/v1/events", Requires(EventsRead)),
        rule(GET, "/v1/events/export", Requires(EventsRead)),
        rule(GET, "/v1/events/stream", Requires(EventsRead)),
        rule(GET, "/v1/checkpoints", Requires(EventsRead)),
        rule(GET, "/v1/checkpoints/latest", Requires(EventsRead)),
        rule(GET, "/v1/streams/{stream_id}/events", Requires(EventsRead)),
        // API keys for services.
        rule(POST, "/v1/api-keys", Requires(ApiKeysManage)),
        rule(GET, "/v1/api-keys", Requires(ApiKeysManage)),
        rule(GET, "/v1/api-keys/{id}", Requires(ApiKeysManage)),
        rule(DELETE, "/v1/api-keys/{id}", Requires(ApiKeysManage)),
        // The admin hub: each page needs what its API needs.
        rule(GET, "/admin", Authenticated),
        // Logging in and out of the hub: the login form is for anyone; logout ends only the
        // cookie's own session (a live one must send its CSRF token) and clears the cookie.
        rule(GET, "/admin/login", Public),
        rule(POST, "/admin/login", Public),
        rule(POST, "/admin/logout", Public),
        rule(GET, "/admin/licenses", Requires(LicensesRead)),
        rule(GET, "/admin/licenses/{id}", Requires(LicensesRead)),
        rule(GET, "/admin/sessions", Requires(SessionsRead)),
        rule(GET, "/admin/sessions/{id}", Requires(SessionsRead)),
        rule(GET, "/admin/requests", Requires(RequestsRead)),
        rule(GET, "/admin/events", Requires(EventsRead)),
        rule(GET, "/admin/static/admin.css", Public),
        rule(GET, "/admin/static/admin.js", Public),
    ]
};

/// The rule for a route; `HEAD` is answered by the `GET` route.
pub fn rule_for(method: &Method, path: &str) -> Option<&'static Rule> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    TABLE
        .iter()
        .find(|rule| rule.method == method && rule.path == path)
}

/// Why a call is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials: 401 `AUTH_MISSING_CREDENTIALS`.
    Unauthenticated,
    /// Known caller without the permission: 403 `AUTH_FORBIDDEN`.
    Forbidden(String),
}

/// Decides a call: `license_in_path` is the `{id}` of the path, when there is one.
pub fn decide(
    access: Access,
    principal: &Principal,
    license_in_path: Option<Uuid>,
) -> Result<(), Refusal> {
    let needs = |permission: Permission| {
        if principal.has(permission) {
            Ok(())
        } else if *principal == Principal::Anonymous {
            Err(Refusal::Unauthenticated)
        } else {
            Err(Refusal::Forbidden(format!(
                "this needs the permission `{permission}`"
            )))
        }
    };
    match access {
        Access::Public => Ok(()),
        Access::Authenticated if *principal == Principal::Anonymous => {
            Err(Refusal::Unauthenticated)
        }
        Access::Authenticated => Ok(()),
        Access::SignedInUser => match principal {
            Principal::User { .. } => Ok(()),
            Principal::Anonymous => Err(Refusal::Unauthenticated),
            _ => Err(Refusal::Forbidden(
                "only a user signed in with a password may call this".to_owned(),
            )),
        },
        Access::Requires(permission) => needs(permission),
        Access::OwnLicense(permission) => match principal {
            Principal::License { license_id } => {
                if license_in_path == Some(*license_id) {
                    Ok(())
                } else {
                    Err(Refusal::Forbidden(
                        "a license key acts on its own license only".to_owned(),
                    ))
                }
            }
            _ => needs(permission).map_err(|refusal| match refusal {
                Refusal::Forbidden(detail) => Refusal::Forbidden(format!(
                    "{detail} (or the license's own key, `Authorization: License <key>`)"
                )),
                other => other,
            }),
        },
    }
}

/// The route layer: looks the matched route up in the table and refuses what it does not
/// allow, before the handler (and its body extractor) runs.
pub async fn authorize(request: Request, next: Next) -> Response {
    let Some(matched) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return next.run(request).await;
    };
    let rule = rule_for(request.method(), &matched);
    let Some(rule) = rule else {
        if TABLE.iter().any(|rule| rule.path == matched) {
            // Another method of a known path: the router answers 405.
            return next.run(request).await;
        }
        tracing::error!(route = %matched, "a route missing from the permission table was refused");
        return ApiError::forbidden("this route is not in the permission table").into_response();
    };
    let principal = request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or(Principal::Anonymous);
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let (mut parts, body) = request.into_parts();
    let license_in_path = match rule.access {
        Access::OwnLicense(_) => license_in_path(&mut parts).await,
        _ => None,
    };
    match decide(rule.access, &principal, license_in_path) {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(refusal) => refuse(refusal, &matched, &target),
    }
}

/// The license the path's `{id}` names, if it is a UUID.
async fn license_in_path(parts: &mut axum::http::request::Parts) -> Option<Uuid> {
    let params = RawPathParams::from_request_parts(parts, &()).await.ok()?;
    params
        .iter()
        .find(|(name, _)| *name == "id")
        .and_then(|(_, value)| Uuid::parse_str(value).ok())
}

/// `target` is the refused request's path and query (an admin page returns there after the
/// login).
fn refuse(refusal: Refusal, route: &str, target: &str) -> Response {
    match refusal {
        Refusal::Unauthenticated if route == "/admin" || route.starts_with("/admin/") => {
            // A person at a browser: to the login page.
            let next = crate::session::local_admin_path(Some(target));
            let location = match serde_urlencoded::to_string([("next", next.as_str())]) {
                Ok(query) if next != "/admin" => format!("/admin/login?{query}"),
                _ => "/admin/login".to_owned(),
            };
            let mut response = StatusCode::SEE_OTHER.into_response();
            response.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&location)
                    .unwrap_or_else(|_| HeaderValue::from_static("/admin/login")),
            );
            response
        }
        Refusal::Unauthenticated => {
            let mut response = ApiError::unauthorized(
                Code::AuthMissingCredentials,
                "this route needs credentials: `Authorization: Bearer <access token or API key>`",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="keyledger""#),
            );
            response
        }
        Refusal::Forbidden(detail) => ApiError::forbidden(detail).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_read_and_write_by_name() {
        for permission in Permission::ALL {
            let json = serde_json::to_value(permission).unwrap();
            assert_eq!(json, permission.as_str());
            assert_eq!(Permission::parse(permission.as_str()), Some(permission));
        }
        assert_eq!(Permission::parse("licenses:*"), None);
    }

    #[test]
    fn each_role_grants_what_the_readme_says() {
        let names = |role| {
            grants(role)
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(names(Role::Admin).split(' ').count(), Permission::ALL.len());
        assert_eq!(
            names(Role::Operator),
            "licenses:read licenses:write sessions:read sessions:write requests:read events:read"
        );
        assert_eq!(
            names(Role::Auditor),
            "licenses:read sessions:read requests:read events:read"
        );
        assert_eq!(names(Role::Viewer), "licenses:read sessions:read");
    }

    #[test]
    fn the_table_names_each_route_once() {
        let mut seen = std::collections::HashSet::new();
        for rule in TABLE {
            assert!(
                seen.insert((rule.method.clone(), rule.path)),
                "{} {} twice",
                rule.method,
                rule.path
            );
        }
    }

    #[test]
    fn only_a_signed_in_user_reaches_a_route_for_users() {
        let user = Principal::User {
            id: Uuid::nil(),
            role: Role::Viewer,
        };
        assert_eq!(decide(Access::SignedInUser, &user, None), Ok(()));
        assert_eq!(
            decide(Access::SignedInUser, &Principal::Anonymous, None),
            Err(Refusal::Unauthenticated)
        );
        for other in [
            Principal::Bootstrap,
            Principal::License {
                license_id: Uuid::nil(),
            },
            Principal::ApiKey {
                id: Uuid::nil(),
                scopes: Permission::ALL.to_vec(),
            },
        ] {
            assert!(matches!(
                decide(Access::SignedInUser, &other, None),
                Err(Refusal::Forbidden(_))
            ));
        }
    }

    #[test]
    fn a_license_key_reaches_its_own_license_only() {
        let own = Uuid::from_u128(1);
        let holder = Principal::License { license_id: own };
        let access = Access::OwnLicense(Permission::LicensesWrite);
        assert_eq!(decide(access, &holder, Some(own)), Ok(()));
        assert!(matches!(
            decide(access, &holder, Some(Uuid::from_u128(2))),
            Err(Refusal::Forbidden(_))
        ));
        assert!(matches!(
            decide(Access::Requires(Permission::LicensesRead), &holder, None),
            Err(Refusal::Forbidden(_))
        ));
    }

    #[test]
    fn anonymous_callers_are_asked_for_credentials_and_known_ones_are_told_what_they_lack() {
        let access = Access::Requires(Permission::LicensesWrite);
        assert_eq!(
            decide(access, &Principal::Anonymous, None),
            Err(Refusal::Unauthenticated)
        );
        let viewer = Principal::User {
            id: Uuid::nil(),
            role: Role::Viewer,
        };
        assert_eq!(
            decide(access, &viewer, None),
            Err(Refusal::Forbidden(
                "this needs the permission `licenses:write`".into()
            ))
        );
        let key = Principal::ApiKey {
            id: Uuid::nil(),
            scopes: vec![Permission::LicensesWrite],
        };
        assert_eq!(decide(access, &key, None), Ok(()));
        assert_eq!(decide(access, &Principal::Bootstrap, None), Ok(()));
        assert_eq!(decide(Access::Public, &Principal::Anonymous, None), Ok(()));
    }
}
