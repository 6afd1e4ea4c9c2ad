//! Who calls and how: the core of the typed clients of each area (`app.licenses()`,
//! `app.sessions()`, …). A client calls as the bootstrap admin unless told otherwise
//! (`app.as_bearer(token).licenses()`, `app.anonymous().auth()`, `app.with(&client)…`).
//!
//! A call that names the answer it expects (`issue`, `revoke`, `get`, …) asserts the success
//! status and returns the parsed body; its `try_…` twin returns the raw response, for the
//! refusals a test asserts on with `problem`.

use reqwest::{Method, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::TestApp;

/// Who calls, and how consistent the reads must be.
#[derive(Clone)]
pub struct Api<'a> {
    pub(super) app: &'a TestApp,
    pub(super) http: reqwest::Client,
    /// Sent as `X-Consistency-Position` on reads.
    pub(super) position: Option<i64>,
    /// Sent as `Idempotency-Key`.
    idempotency_key: Option<String>,
}

/// The body of a success answer, after checking its status.
pub async fn expect<T: DeserializeOwned>(response: Response, status: u16, what: &str) -> T {
    let actual = response.status();
    let url = response.url().path().to_owned();
    if actual != status {
        let body = response.text().await.unwrap_or_default();
        panic!("{what} ({url}): expected {status}, got {actual}: {body}");
    }
    response.json().await.unwrap()
}

impl TestApp {
    /// Calls as the bootstrap admin.
    pub fn api(&self) -> Api<'_> {
        self.with(&self.http)
    }

    /// Calls through `http` (whatever credentials it sends).
    pub fn with(&self, http: &reqwest::Client) -> Api<'_> {
        Api {
            app: self,
            http: http.clone(),
            position: None,
            idempotency_key: None,
        }
    }

    /// Calls without credentials.
    pub fn anonymous(&self) -> Api<'_> {
        self.with(&self.anonymous)
    }

    /// Calls with `Authorization: License <key>`.
    pub fn as_license(&self, key: &str) -> Api<'_> {
        self.with(&super::client_with(&format!("License {key}")))
    }
}

impl<'a> Api<'a> {
    /// Reads wait until the projections have applied `position`.
    pub fn at(mut self, position: i64) -> Api<'a> {
        self.position = Some(position);
        self
    }

    /// Commands carry `Idempotency-Key: key`.
    pub fn idempotency_key(mut self, key: &str) -> Api<'a> {
        self.idempotency_key = Some(key.into());
        self
    }

    /// A request to `path`, with the JSON of `body` if any (sent as a `serde_json::Value`, so
    /// its members go out in the order `json!` would send them).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Response {
        let mut request = self.http.request(method, self.app.url(path));
        if let Some(position) = self.position {
            request = request.header("x-consistency-position", position.to_string());
        }
        if let Some(key) = &self.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(&serde_json::to_value(body).unwrap());
        }
        request.send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, None::<&Value>).await
    }

    pub async fn post(&self, path: &str, body: &(impl Serialize + ?Sized)) -> Response {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.send(Method::DELETE, path, None::<&Value>).await
    }
}

/// A query string of the parameters that are set, each percent-encoded.
pub fn query(params: &[(&str, Option<String>)]) -> String {
    let set: Vec<(&str, &str)> = params
        .iter()
        .filter_map(|(name, value)| value.as_deref().map(|v| (*name, v)))
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("?{}", serde_urlencoded::to_string(set).unwrap())
    }
}

/// An instant as `as_of` takes it: RFC 3339 in UTC, to the microsecond.
pub fn instant(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
