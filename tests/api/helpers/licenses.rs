//! `/v1/licenses/**`: the license's lifecycle, validation, installations, certificates and
//! reads.

use chrono::{DateTime, Utc};
use reqwest::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::TestApp;
use super::client::{Api, expect, query};
use super::log::EventPage;

/// `POST /v1/licenses`: only the fields set are sent.
#[derive(Serialize, Clone, Debug, Default)]
pub struct NewLicense {
    pub owner: String,
    pub tier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_days: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perpetual: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_installations: Option<u32>,
}

impl NewLicense {
    pub fn new(owner: &str, tier: &str) -> NewLicense {
        NewLicense {
            owner: owner.into(),
            tier: tier.into(),
            ..NewLicense::default()
        }
    }

    pub fn valid_days(mut self, days: i64) -> NewLicense {
        self.valid_days = Some(days);
        self
    }

    pub fn perpetual(mut self) -> NewLicense {
        self.perpetual = Some(true);
        self
    }

    pub fn metadata(mut self, metadata: Value) -> NewLicense {
        self.metadata = Some(metadata);
        self
    }

    pub fn entitlements(mut self, names: &[&str]) -> NewLicense {
        self.entitlements = Some(names.iter().map(|n| (*n).to_owned()).collect());
        self
    }

    pub fn max_installations(mut self, max: u32) -> NewLicense {
        self.max_installations = Some(max);
        self
    }
}

/// The 201 of `POST /v1/licenses` (the first answer, with the key).
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Issued {
    pub license_id: Uuid,
    pub key: String,
    pub key_prefix: String,
    pub owner: String,
    pub tier: String,
    pub status: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub entitlements: Vec<String>,
    pub max_installations: Option<u32>,
    pub position: i64,
}

/// `POST /v1/licenses/validate`: only the fields set are sent.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Validate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl Validate {
    pub fn key(key: &str) -> Validate {
        Validate {
            key: Some(key.into()),
            ..Validate::default()
        }
    }

    pub fn feature(mut self, feature: &str) -> Validate {
        self.feature = Some(feature.into());
        self
    }

    pub fn installation(mut self, installation_id: &str) -> Validate {
        self.installation_id = Some(installation_id.into());
        self
    }
}

/// The 200 of `POST /v1/licenses/validate`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Validation {
    pub valid: bool,
    pub code: String,
    pub license_id: Option<Uuid>,
    pub tier: Option<String>,
    pub entitlements: Option<Vec<String>>,
    pub position: Option<i64>,
}

/// The 200 of `POST /v1/licenses/{id}/revoke`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Revoked {
    pub license_id: Uuid,
    pub status: String,
    pub revoked_at: DateTime<Utc>,
    pub position: i64,
}

/// The 200 of suspend, reinstate, renew and policy: the license as it now stands.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Standing {
    pub license_id: Uuid,
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub entitlements: Vec<String>,
    pub max_installations: Option<u32>,
    pub position: i64,
}

/// `GET /v1/licenses/{id}` and the items of `GET /v1/licenses`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct License {
    pub license_id: Uuid,
    pub key_prefix: String,
    pub owner: String,
    pub tier: String,
    pub status: String,
    pub metadata: Value,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoke_reason: Option<String>,
    pub suspended_at: Option<DateTime<Utc>>,
    pub suspend_reason: Option<String>,
    pub entitlements: Vec<String>,
    pub max_installations: Option<i32>,
    pub legacy_id: Option<i64>,
    pub position: i64,
}

/// `GET /v1/licenses`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct LicensePage {
    pub items: Vec<License>,
    pub next_cursor: Option<String>,
}

/// An item of `GET /v1/licenses/{id}/usage`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Usage {
    pub position: i64,
    pub validated_at: DateTime<Utc>,
    pub code: String,
    pub feature: Option<String>,
    pub metadata: Value,
}

/// `GET /v1/licenses/{id}/usage`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct UsagePage {
    pub items: Vec<Usage>,
    pub next_cursor: Option<String>,
}

/// The answer of `POST /v1/licenses/{id}/installations` and of its `DELETE`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct InstallationChange {
    pub license_id: Uuid,
    pub installation_id: String,
    pub active: bool,
    pub activated_at: Option<DateTime<Utc>>,
    pub position: i64,
}

/// The 200 of `POST /v1/licenses/{id}/installations/{installation_id}/heartbeat`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Heartbeat {
    pub license_id: Uuid,
    pub installation_id: String,
    pub last_seen: DateTime<Utc>,
    pub next_heartbeat_due: DateTime<Utc>,
    pub position: i64,
}

/// An item of `GET /v1/licenses/{id}/installations`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Installation {
    pub installation_id: String,
    pub hostname: Option<String>,
    pub metadata: Value,
    pub activated_at: DateTime<Utc>,
    pub last_seen: Option<DateTime<Utc>>,
    pub alive: bool,
}

/// `GET /v1/licenses/{id}/installations`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct InstallationPage {
    pub items: Vec<Installation>,
    pub next_cursor: Option<String>,
}

/// The 200 of `POST /v1/licenses/{id}/certificate`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Certificate {
    pub certificate: String,
    pub certificate_id: Uuid,
    pub license_id: Uuid,
    pub valid_until: DateTime<Utc>,
    pub kid: String,
    pub position: i64,
}

impl TestApp {
    pub fn licenses(&self) -> Licenses<'_> {
        self.api().licenses()
    }
}

impl<'a> Api<'a> {
    pub fn licenses(self) -> Licenses<'a> {
        Licenses(self)
    }
}

/// `/v1/licenses/**`.
pub struct Licenses<'a>(Api<'a>);

impl Licenses<'_> {
    pub async fn try_issue(&self, license: &(impl Serialize + ?Sized)) -> Response {
        self.0.post("/v1/licenses", license).await
    }

    pub async fn issue(&self, license: &NewLicense) -> Issued {
        expect(self.try_issue(license).await, 201, "issuing a license").await
    }

    pub async fn try_validate(&self, request: &(impl Serialize + ?Sized)) -> Response {
        self.0.post("/v1/licenses/validate", request).await
    }

    /// A validation (always 200: the verdict is in the body).
    pub async fn validate(&self, request: &Validate) -> Validation {
        expect(self.try_validate(request).await, 200, "validating").await
    }

    pub async fn try_revoke(&self, id: impl ToString, reason: &str) -> Response {
        self.command(id, "revoke", &json!({ "reason": reason }))
            .await
    }

    pub async fn revoke(&self, id: impl ToString, reason: &str) -> Revoked {
        expect(self.try_revoke(id, reason).await, 200, "revoking").await
    }

    pub async fn try_suspend(&self, id: impl ToString, reason: &str) -> Response {
        self.command(id, "suspend", &json!({ "reason": reason }))
            .await
    }

    pub async fn suspend(&self, id: impl ToString, reason: &str) -> Standing {
        expect(self.try_suspend(id, reason).await, 200, "suspending").await
    }

    /// Reinstates with a reason, or with none (`{}`).
    pub async fn try_reinstate(&self, id: impl ToString, reason: Option<&str>) -> Response {
        let body = match reason {
            Some(reason) => json!({ "reason": reason }),
            None => json!({}),
        };
        self.command(id, "reinstate", &body).await
    }

    pub async fn reinstate(&self, id: impl ToString, reason: Option<&str>) -> Standing {
        expect(self.try_reinstate(id, reason).await, 200, "reinstating").await
    }

    pub async fn try_renew(&self, id: impl ToString, valid_days: i64) -> Response {
        self.command(id, "renew", &json!({ "valid_days": valid_days }))
            .await
    }

    pub async fn renew(&self, id: impl ToString, valid_days: i64) -> Standing {
        expect(self.try_renew(id, valid_days).await, 200, "renewing").await
    }

    /// `POST /v1/licenses/{id}/policy` with `{entitlements?, max_installations?}`.
    pub async fn try_change_policy(&self, id: impl ToString, policy: &Value) -> Response {
        self.command(id, "policy", policy).await
    }

    pub async fn change_policy(&self, id: impl ToString, policy: &Value) -> Standing {
        expect(
            self.try_change_policy(id, policy).await,
            200,
            "changing the policy",
        )
        .await
    }

    /// `POST /v1/licenses/{id}/installations` with `{installation_id, hostname?, metadata?}`.
    pub async fn try_activate_with(&self, id: impl ToString, body: &Value) -> Response {
        self.command(id, "installations", body).await
    }

    pub async fn try_activate(&self, id: impl ToString, installation_id: &str) -> Response {
        self.try_activate_with(id, &json!({ "installation_id": installation_id }))
            .await
    }

    /// A first activation (201).
    pub async fn activate(&self, id: impl ToString, installation_id: &str) -> InstallationChange {
        expect(
            self.try_activate(id, installation_id).await,
            201,
            "activating an installation",
        )
        .await
    }

    pub async fn try_deactivate(&self, id: impl ToString, installation_id: &str) -> Response {
        let id = id.to_string();
        self.0
            .delete(&format!(
                "/v1/licenses/{id}/installations/{installation_id}"
            ))
            .await
    }

    pub async fn try_heartbeat(&self, id: impl ToString, installation_id: &str) -> Response {
        let id = id.to_string();
        self.0
            .post(
                &format!("/v1/licenses/{id}/installations/{installation_id}/heartbeat"),
                &json!({}),
            )
            .await
    }

    pub async fn heartbeat(&self, id: impl ToString, installation_id: &str) -> Heartbeat {
        expect(
            self.try_heartbeat(id, installation_id).await,
            200,
            "a heartbeat",
        )
        .await
    }

    /// `POST /v1/licenses/{id}/certificate` with `{installation_id?, ttl_days?}`.
    pub async fn try_certify(&self, id: impl ToString, body: &Value) -> Response {
        self.command(id, "certificate", body).await
    }

    pub async fn certify(&self, id: impl ToString, body: &Value) -> Certificate {
        expect(self.try_certify(id, body).await, 201, "a certificate").await
    }

    /// `POST /v1/licenses/{id}/{action}` with `body`.
    pub async fn command(&self, id: impl ToString, action: &str, body: &Value) -> Response {
        let id = id.to_string();
        self.0
            .post(&format!("/v1/licenses/{id}/{action}"), body)
            .await
    }

    pub async fn try_get(&self, id: impl ToString) -> Response {
        let id = id.to_string();
        self.0.get(&format!("/v1/licenses/{id}")).await
    }

    pub async fn get(&self, id: impl ToString) -> License {
        expect(self.try_get(id).await, 200, "reading a license").await
    }

    /// `GET /v1/licenses/{id}?as_of=…`: the license folded up to an instant.
    pub async fn try_get_as_of(&self, id: impl ToString, as_of: &str) -> Response {
        let id = id.to_string();
        self.0
            .get(&format!(
                "/v1/licenses/{id}{}",
                query(&[("as_of", Some(as_of.into()))])
            ))
            .await
    }

    /// `GET /v1/licenses{query}` (`query` from `helpers::query`, or "").
    pub async fn try_search(&self, query: &str) -> Response {
        self.0.get(&format!("/v1/licenses{query}")).await
    }

    pub async fn search(&self, query: &str) -> LicensePage {
        expect(self.try_search(query).await, 200, "searching licenses").await
    }

    /// `GET /v1/licenses/by-key` with the key in `X-License-Key`.
    pub async fn try_by_key_header(&self, key: &str) -> Response {
        let mut request = self.0.http.get(self.0.app.url("/v1/licenses/by-key"));
        if let Some(position) = self.0.position {
            request = request.header("x-consistency-position", position.to_string());
        }
        request.header("x-license-key", key).send().await.unwrap()
    }

    /// `POST /v1/licenses/by-key` with `{key}`.
    pub async fn try_by_key(&self, key: &str) -> Response {
        self.0
            .post("/v1/licenses/by-key", &json!({ "key": key }))
            .await
    }

    pub async fn by_key(&self, key: &str) -> License {
        expect(self.try_by_key(key).await, 200, "finding a license by key").await
    }

    /// `GET /v1/licenses/{id}/usage{query}`.
    pub async fn try_usage(&self, id: impl ToString, query: &str) -> Response {
        let id = id.to_string();
        self.0.get(&format!("/v1/licenses/{id}/usage{query}")).await
    }

    pub async fn usage(&self, id: impl ToString, query: &str) -> UsagePage {
        expect(self.try_usage(id, query).await, 200, "reading usage").await
    }

    /// `GET /v1/licenses/{id}/events{query}`: the license's history.
    pub async fn try_history(&self, id: impl ToString, query: &str) -> Response {
        let id = id.to_string();
        self.0
            .get(&format!("/v1/licenses/{id}/events{query}"))
            .await
    }

    pub async fn history(&self, id: impl ToString) -> EventPage {
        expect(self.try_history(id, "").await, 200, "a license's history").await
    }

    pub async fn try_installations(&self, id: impl ToString) -> Response {
        let id = id.to_string();
        self.0
            .get(&format!("/v1/licenses/{id}/installations"))
            .await
    }

    pub async fn installations(&self, id: impl ToString) -> InstallationPage {
        expect(self.try_installations(id).await, 200, "installations").await
    }
}
