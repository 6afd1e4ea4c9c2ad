//! `license_usage`: every validation of a license, newest first by position.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use keyledger_events::license::UsageEvent;
use keyledger_events::{Envelope, EventPayload, Projection, ProjectionError};
use serde_json::Value;
use uuid::Uuid;

pub struct LicenseUsage;

pub const NAME: &str = "license_usage";

#[async_trait]
impl Projection for LicenseUsage {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["license_usage"]
    }

    fn event_types(&self) -> &'static [&'static str] {
        UsageEvent::EVENT_TYPES
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut license_ids: Vec<Uuid> = Vec::new();
        let mut positions: Vec<i64> = Vec::new();
        let mut at: Vec<DateTime<Utc>> = Vec::new();
        let mut codes: Vec<&'static str> = Vec::new();
        let mut features: Vec<Option<String>> = Vec::new();
        let mut installations: Vec<Option<String>> = Vec::new();
        let mut metadata: Vec<Value> = Vec::new();
        for envelope in events {
            if let Some(UsageEvent::LicenseValidated(e)) = UsageEvent::decode(envelope)? {
                license_ids.push(e.license_id);
                positions.push(envelope.position);
                at.push(e.validated_at);
                codes.push(e.code.as_str());
                features.push(e.feature);
                installations.push(e.installation_id);
                metadata.push(e.metadata);
            }
        }
        if license_ids.is_empty() {
            return Ok(());
        }
        let statement = tx
            .prepare_cached(
                "INSERT INTO license_usage (license_id, position, validated_at, code, feature, metadata, \
                                            installation_id) \
                 SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[], $4::text[], \
                                      $5::text[], $6::json[], $7::text[])",
            )
            .await?;
        tx.execute(
            &statement,
            &[
                &license_ids,
                &positions,
                &at,
                &codes,
                &features,
                &metadata,
                &installations,
            ],
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use keyledger_events::license::ValidationCode;
    use serde_json::json;

    use super::*;
    use crate::license::fixtures::*;
    use crate::testing::TestDatabase;

    #[tokio::test]
    async fn every_validation_is_a_row_and_license_events_are_not() {
        let db = TestDatabase::create().await;
        db.apply(
            &LicenseUsage,
            &[
                on_license(1, A, issued_a()),
                validated(2, A, ValidationCode::Valid, Some("sso"), 2),
                validated(3, B, ValidationCode::Revoked, None, 3),
            ],
        )
        .await;
        assert_eq!(
            db.rows(
                "SELECT license_id, position, validated_at, code, feature, metadata, \
                        installation_id \
                 FROM license_usage ORDER BY position"
            )
            .await,
            json!([
                {
                    "license_id": A,
                    "position": 2,
                    "validated_at": "2027-01-15T08:00:02+00:00",
                    "code": "VALID",
                    "feature": "sso",
                    "metadata": {},
                    "installation_id": null,
                },
                {
                    "license_id": B,
                    "position": 3,
                    "validated_at": "2027-01-15T08:00:03+00:00",
                    "code": "REVOKED",
                    "feature": null,
                    "metadata": {},
                    "installation_id": null,
                },
            ])
        );
        db.drop().await;
    }
}
