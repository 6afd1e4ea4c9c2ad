//! `users` (who may log in, with which role) and `refresh_tokens` (token hash → family and
//! state), maintained inline in the append transaction: a user created can log in at once,
//! and a rotated or revoked refresh token is refused by the very next request.
//!
//! `users.token_generation` moves on with each event that ends a user's access tokens
//! (`UserPasswordChanged`, `UserTokensRevoked`, `UserDisabled`); an access token carries the
//! generation it was issued in.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use keyledger_events::user::{RefreshFamilyEvent, UserEvent};
use keyledger_events::{Envelope, EventPayload, Projection, ProjectionError, event_types};

pub struct Users;

pub const NAME: &str = "users";

const EVENT_TYPES: &[&str] = event_types![UserEvent, RefreshFamilyEvent];

#[async_trait]
impl Projection for Users {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["users", "refresh_tokens"]
    }

    fn event_types(&self) -> &'static [&'static str] {
        EVENT_TYPES
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        // Users and logins change rarely: one statement per event, in order.
        for envelope in events {
            if let Some(event) = UserEvent::decode(envelope)? {
                apply_user(tx, envelope.position, event).await?;
            } else if let Some(event) = RefreshFamilyEvent::decode(envelope)? {
                apply_family(tx, envelope.position, event).await?;
            }
        }
        Ok(())
    }
}

async fn apply_user(
    tx: &Transaction<'_>,
    position: i64,
    event: UserEvent,
) -> Result<(), ProjectionError> {
    match event {
        UserEvent::UserCreated(e) => {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO users (user_id, email, role, password_hash, disabled, \
                                        created_at, updated_at, position) \
                     VALUES ($1, $2, $3, $4, false, $5, $5, $6)",
                )
                .await?;
            tx.execute(
                &statement,
                &[
                    &e.user_id,
                    &e.email,
                    &e.role.as_str(),
                    &e.password_hash,
                    &e.at,
                    &position,
                ],
            )
            .await?;
        }
        UserEvent::UserRoleChanged(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE users SET role = $2, updated_at = $3, position = $4 WHERE user_id = $1",
                )
                .await?;
            tx.execute(&statement, &[&e.user_id, &e.to.as_str(), &e.at, &position])
                .await?;
        }
        UserEvent::UserPasswordChanged(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE users SET password_hash = $2, updated_at = $3, position = $4, \
                                      token_generation = token_generation + 1 \
                     WHERE user_id = $1",
                )
                .await?;
            tx.execute(
                &statement,
                &[&e.user_id, &e.password_hash, &e.at, &position],
            )
            .await?;
        }
        UserEvent::UserDisabled(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE users SET disabled = true, updated_at = $2, position = $3, \
                                      token_generation = token_generation + 1 \
                     WHERE user_id = $1",
                )
                .await?;
            tx.execute(&statement, &[&e.user_id, &e.at, &position])
                .await?;
        }
        UserEvent::UserEnabled(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE users SET disabled = false, updated_at = $2, position = $3 \
                     WHERE user_id = $1",
                )
                .await?;
            tx.execute(&statement, &[&e.user_id, &e.at, &position])
                .await?;
        }
        UserEvent::UserTokensRevoked(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE users SET updated_at = $2, position = $3, \
                                      token_generation = token_generation + 1 \
                     WHERE user_id = $1",
                )
                .await?;
            tx.execute(&statement, &[&e.user_id, &e.at, &position])
                .await?;
        }
    }
    Ok(())
}

async fn apply_family(
    tx: &Transaction<'_>,
    position: i64,
    event: RefreshFamilyEvent,
) -> Result<(), ProjectionError> {
    let insert = "INSERT INTO refresh_tokens \
                      (token_hash, family_id, user_id, state, expires_at, position) \
                  VALUES ($1, $2, $3, 'current', $4, $5)";
    match event {
        RefreshFamilyEvent::RefreshFamilyStarted(e) => {
            let statement = tx.prepare_cached(insert).await?;
            tx.execute(
                &statement,
                &[
                    &e.token_hash,
                    &e.family_id,
                    &e.user_id,
                    &e.expires_at,
                    &position,
                ],
            )
            .await?;
        }
        RefreshFamilyEvent::RefreshTokenRotated(e) => {
            let rotate = tx
                .prepare_cached(
                    "UPDATE refresh_tokens SET state = 'rotated', position = $2 \
                     WHERE token_hash = $1",
                )
                .await?;
            tx.execute(&rotate, &[&e.old_hash, &position]).await?;
            let statement = tx.prepare_cached(insert).await?;
            tx.execute(
                &statement,
                &[
                    &e.new_hash,
                    &e.family_id,
                    &e.user_id,
                    &e.expires_at,
                    &position,
                ],
            )
            .await?;
        }
        RefreshFamilyEvent::RefreshFamilyRevoked(e) => {
            let statement = tx
                .prepare_cached(
                    "UPDATE refresh_tokens SET state = 'revoked', position = $2 \
                     WHERE family_id = $1",
                )
                .await?;
            tx.execute(&statement, &[&e.family_id, &position]).await?;
        }
    }
    Ok(())
}

/// What the lookup table knows of a refresh token.
#[derive(Debug, Clone)]
pub struct RefreshTokenRow {
    pub family_id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    /// `current`, `rotated` or `revoked`.
    pub state: String,
}

/// The family a refresh token (by its hash) belongs to, with its state.
pub async fn refresh_token(
    client: &impl deadpool_postgres::GenericClient,
    token_hash: &str,
) -> Result<Option<RefreshTokenRow>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "SELECT family_id, user_id, state FROM refresh_tokens WHERE token_hash = $1",
        )
        .await?;
    let row = client.query_opt(&statement, &[&token_hash]).await?;
    row.map(|row| {
        Ok(RefreshTokenRow {
            family_id: row.try_get(0)?,
            user_id: row.try_get(1)?,
            state: row.try_get(2)?,
        })
    })
    .transpose()
}

/// A user as login needs it.
#[derive(Debug, Clone)]
pub struct LoginRow {
    pub user_id: uuid::Uuid,
    pub role: String,
    pub password_hash: String,
    pub disabled: bool,
    /// The generation an access token issued now carries.
    pub token_generation: i64,
}

/// The user with this (lower-cased) email.
pub async fn user_by_email(
    client: &impl deadpool_postgres::GenericClient,
    email: &str,
) -> Result<Option<LoginRow>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "SELECT user_id, role, password_hash, disabled, token_generation \
             FROM users WHERE email = $1",
        )
        .await?;
    let row = client.query_opt(&statement, &[&email]).await?;
    row.map(|row| {
        Ok(LoginRow {
            user_id: row.try_get(0)?,
            role: row.try_get(1)?,
            password_hash: row.try_get(2)?,
            disabled: row.try_get(3)?,
            token_generation: row.try_get(4)?,
        })
    })
    .transpose()
}

/// The families with a live refresh token of a user.
pub async fn live_families(
    client: &impl deadpool_postgres::GenericClient,
    user_id: uuid::Uuid,
) -> Result<Vec<uuid::Uuid>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "SELECT DISTINCT family_id FROM refresh_tokens \
             WHERE user_id = $1 AND state = 'current'",
        )
        .await?;
    client
        .query(&statement, &[&user_id])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect()
}

/// A user as the API shows them (never the password's hash).
#[derive(Debug, Clone, serde::Serialize)]
pub struct UserRow {
    pub id: uuid::Uuid,
    pub email: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

const USER_COLUMNS: &str = "user_id, email, role, disabled, created_at";

fn user_row(row: &tokio_postgres::Row) -> Result<UserRow, tokio_postgres::Error> {
    Ok(UserRow {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        role: row.try_get(2)?,
        disabled: row.try_get(3)?,
        created_at: row.try_get(4)?,
    })
}

/// Every user, oldest first.
pub async fn users(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<Vec<UserRow>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, user_id"
        ))
        .await?;
    client
        .query(&statement, &[])
        .await?
        .iter()
        .map(user_row)
        .collect()
}

/// One user by id.
pub async fn user(
    client: &impl deadpool_postgres::GenericClient,
    user_id: uuid::Uuid,
) -> Result<Option<UserRow>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE user_id = $1"
        ))
        .await?;
    client
        .query_opt(&statement, &[&user_id])
        .await?
        .as_ref()
        .map(user_row)
        .transpose()
}

/// How many users are admins and not disabled.
pub async fn enabled_admins(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<i64, tokio_postgres::Error> {
    let statement = client
        .prepare_cached("SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled")
        .await?;
    client.query_one(&statement, &[]).await?.try_get(0)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use keyledger_events::user::{
        RefreshFamilyRevoked, RefreshFamilyStarted, RefreshTokenRotated, RevokeReason, Role,
        UserCreated, UserDisabled, UserEnabled, UserPasswordChanged, UserRoleChanged,
        UserTokensRevoked, refresh_family_stream, user_stream,
    };
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::testing::{TestDatabase, envelope};

    const U: Uuid = Uuid::from_u128(0x1);
    const F: Uuid = Uuid::from_u128(0xf);

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn on_user(position: i64, event: UserEvent) -> Envelope {
        envelope(position, &user_stream(U), &event, at(position))
    }

    fn on_family(position: i64, event: RefreshFamilyEvent) -> Envelope {
        envelope(position, &refresh_family_stream(F), &event, at(position))
    }

    const USERS: &str = "SELECT user_id, email, role, password_hash, disabled, created_at, \
                                updated_at, position, token_generation FROM users";
    const TOKENS: &str = "SELECT token_hash, family_id, user_id, state, expires_at, position \
                          FROM refresh_tokens ORDER BY token_hash";

    #[tokio::test]
    async fn each_event_that_ends_access_tokens_moves_the_generation_on() {
        let db = TestDatabase::create().await;
        db.apply(
            &Users,
            &[
                on_user(
                    1,
                    UserEvent::UserCreated(UserCreated {
                        user_id: U,
                        email: "ops@example.com".into(),
                        role: Role::Operator,
                        password_hash: "$argon2id$one".into(),
                        at: at(1),
                    }),
                ),
                on_user(
                    2,
                    UserEvent::UserRoleChanged(UserRoleChanged {
                        user_id: U,
                        from: Role::Operator,
                        to: Role::Auditor,
                        at: at(2),
                    }),
                ),
                on_user(
                    3,
                    UserEvent::UserPasswordChanged(UserPasswordChanged {
                        user_id: U,
                        password_hash: "$argon2id$two".into(),
                        at: at(3),
                    }),
                ),
                on_user(
                    4,
                    UserEvent::UserTokensRevoked(UserTokensRevoked {
                        user_id: U,
                        at: at(4),
                    }),
                ),
                on_user(
                    5,
                    UserEvent::UserDisabled(UserDisabled {
                        user_id: U,
                        at: at(5),
                    }),
                ),
            ],
        )
        .await;
        let user = |disabled: bool, updated_at: &str, position: i64| {
            json!([{
                "user_id": U,
                "email": "ops@example.com",
                "role": "auditor",
                "password_hash": "$argon2id$two",
                "disabled": disabled,
                "created_at": "2027-01-15T08:00:01+00:00",
                "updated_at": updated_at,
                "position": position,
                "token_generation": 3,
            }])
        };
        assert_eq!(
            db.rows(USERS).await,
            user(true, "2027-01-15T08:00:05+00:00", 5)
        );
        // Enabling gives no old token back.
        db.apply(
            &Users,
            &[on_user(
                6,
                UserEvent::UserEnabled(UserEnabled {
                    user_id: U,
                    at: at(6),
                }),
            )],
        )
        .await;
        assert_eq!(
            db.rows(USERS).await,
            user(false, "2027-01-15T08:00:06+00:00", 6)
        );
        db.drop().await;
    }

    #[tokio::test]
    async fn a_family_has_one_current_token_and_revoking_it_revokes_them_all() {
        let db = TestDatabase::create().await;
        db.apply(
            &Users,
            &[
                on_family(
                    1,
                    RefreshFamilyEvent::RefreshFamilyStarted(RefreshFamilyStarted {
                        family_id: F,
                        user_id: U,
                        token_hash: "h1".into(),
                        expires_at: at(100),
                        at: at(1),
                    }),
                ),
                on_family(
                    2,
                    RefreshFamilyEvent::RefreshTokenRotated(RefreshTokenRotated {
                        family_id: F,
                        user_id: U,
                        old_hash: "h1".into(),
                        new_hash: "h2".into(),
                        expires_at: at(200),
                        at: at(2),
                    }),
                ),
            ],
        )
        .await;
        let token = |hash: &str, state: &str, expires_at: &str, position: i64| {
            json!({
                "token_hash": hash,
                "family_id": F,
                "user_id": U,
                "state": state,
                "expires_at": expires_at,
                "position": position,
            })
        };
        assert_eq!(
            db.rows(TOKENS).await,
            json!([
                token("h1", "rotated", "2027-01-15T08:01:40+00:00", 2),
                token("h2", "current", "2027-01-15T08:03:20+00:00", 2),
            ])
        );
        db.apply(
            &Users,
            &[on_family(
                3,
                RefreshFamilyEvent::RefreshFamilyRevoked(RefreshFamilyRevoked {
                    family_id: F,
                    user_id: U,
                    reason: RevokeReason::Reuse,
                    presented_hash: Some("h1".into()),
                    at: at(3),
                }),
            )],
        )
        .await;
        assert_eq!(
            db.rows(TOKENS).await,
            json!([
                token("h1", "revoked", "2027-01-15T08:01:40+00:00", 3),
                token("h2", "revoked", "2027-01-15T08:03:20+00:00", 3),
            ])
        );
        db.drop().await;
    }
}
