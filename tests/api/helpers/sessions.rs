//! `/v1/sessions/**`: agent sessions.

use chrono::{DateTime, Utc};
use reqwest::{Method, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::TestApp;
use super::client::{Api, expect, query};

/// `POST /v1/sessions`: only the fields set are sent.
#[derive(Serialize, Clone, Debug, Default)]
pub struct NewSession {
    pub agent_role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl NewSession {
    pub fn new(agent_role: &str) -> NewSession {
        NewSession {
            agent_role: agent_role.into(),
            ..NewSession::default()
        }
    }

    pub fn task(mut self, task_id: Uuid) -> NewSession {
        self.task_id = Some(task_id);
        self
    }

    pub fn metadata(mut self, metadata: Value) -> NewSession {
        self.metadata = Some(metadata);
        self
    }
}

/// The 201 of `POST /v1/sessions`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct SessionCreated {
    pub session_id: Uuid,
    pub agent_role: String,
    pub task_id: Option<Uuid>,
    pub status: String,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub position: i64,
}

/// The 200 of `POST /v1/sessions/{id}/transition`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Transitioned {
    pub session_id: Uuid,
    pub status: String,
    pub position: i64,
}

/// The 200 of `PATCH /v1/sessions/{id}`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct SessionUpdated {
    pub session_id: Uuid,
    pub status: String,
    pub task_id: Option<Uuid>,
    pub metadata: Value,
    pub position: i64,
}

/// An item of `GET /v1/sessions`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct Session {
    pub session_id: Uuid,
    pub agent_role: String,
    pub task_id: Option<Uuid>,
    pub status: String,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub position: i64,
}

/// A move in a session's history.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct SessionTransition {
    pub from: String,
    pub to: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    pub actor: Option<String>,
}

/// `GET /v1/sessions/{id}`: the session and its history.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub session: Session,
    pub history: Vec<SessionTransition>,
}

/// `GET /v1/sessions`.
#[derive(Deserialize, Debug, PartialEq, Clone)]
pub struct SessionPage {
    pub sessions: Vec<Session>,
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
}

impl TestApp {
    pub fn sessions(&self) -> Sessions<'_> {
        self.api().sessions()
    }
}

impl<'a> Api<'a> {
    pub fn sessions(self) -> Sessions<'a> {
        Sessions(self)
    }
}

/// `/v1/sessions/**`.
pub struct Sessions<'a>(Api<'a>);

impl Sessions<'_> {
    pub async fn try_create(&self, session: &(impl Serialize + ?Sized)) -> Response {
        self.0.post("/v1/sessions", session).await
    }

    pub async fn create(&self, session: &NewSession) -> SessionCreated {
        expect(self.try_create(session).await, 201, "creating a session").await
    }

    /// A move to `to` with the reason "test".
    pub async fn try_transition(&self, id: impl ToString, to: &str) -> Response {
        self.try_transition_with(id, &json!({ "to": to, "reason": "test" }))
            .await
    }

    pub async fn try_transition_with(&self, id: impl ToString, body: &Value) -> Response {
        let id = id.to_string();
        self.0
            .post(&format!("/v1/sessions/{id}/transition"), body)
            .await
    }

    pub async fn transition(&self, id: impl ToString, to: &str) -> Transitioned {
        expect(self.try_transition(id, to).await, 200, "a transition").await
    }

    /// `PATCH /v1/sessions/{id}` with `{task_id?, metadata?}`.
    pub async fn try_update(&self, id: impl ToString, patch: &Value) -> Response {
        let id = id.to_string();
        self.0
            .send(Method::PATCH, &format!("/v1/sessions/{id}"), Some(patch))
            .await
    }

    pub async fn update(&self, id: impl ToString, patch: &Value) -> SessionUpdated {
        expect(self.try_update(id, patch).await, 200, "updating a session").await
    }

    pub async fn try_get(&self, id: impl ToString) -> Response {
        let id = id.to_string();
        self.0.get(&format!("/v1/sessions/{id}")).await
    }

    pub async fn get(&self, id: impl ToString) -> SessionDetail {
        expect(self.try_get(id).await, 200, "reading a session").await
    }

    /// `GET /v1/sessions/{id}?as_of=…`: the session folded up to an instant.
    pub async fn try_get_as_of(&self, id: impl ToString, as_of: &str) -> Response {
        let id = id.to_string();
        self.0
            .get(&format!(
                "/v1/sessions/{id}{}",
                query(&[("as_of", Some(as_of.into()))])
            ))
            .await
    }

    /// `GET /v1/sessions{query}`.
    pub async fn try_list(&self, query: &str) -> Response {
        self.0.get(&format!("/v1/sessions{query}")).await
    }

    pub async fn list(&self, query: &str) -> SessionPage {
        expect(self.try_list(query).await, 200, "listing sessions").await
    }
}
