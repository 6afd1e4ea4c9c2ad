//! A validation's writes alone: what the service writes for each validation, replayed by
//! pgbench without HTTP or the service.

use anyhow::Context;
use serde_json::json;
use tokio_postgres::Config;

use super::BenchArgs;
use super::pgbench::{ScratchDir, connect, pgbench, quote_ident, recreate_database};

/// pgbench clients replaying a validation's writes: the writer keeps two batches in flight,
/// and the projectors write beside it.
pub(super) const CEILING_CLIENTS: u32 = 4;
/// Validations per transaction in the ceiling's runs: about what 32 clients give the writer,
/// and a batch large enough that the transaction's fixed cost no longer counts.
pub(super) const CEILING_BATCHES: [u32; 2] = [16, 256];
/// Licenses whose day counts the ceiling's validations update.
pub(super) const CEILING_LICENSES: i32 = 1000;

/// What the service writes for `:n` validations, as pgbench replays it: the append writer's
/// transaction (the lock, the head and the streams' versions, one usage event and one request
/// record per validation inserted like the writer does, the day's VALID counts, the
/// notification), then the transactions of the two projections that apply them, each with its
/// checkpoint. Hashes are computed in SQL here (the service computes them itself).
pub(super) fn ceiling_script(batch: u32) -> String {
    format!(
        "\\set n {batch}\n\
BEGIN;\n\
SELECT pg_advisory_xact_lock({lock});\n\
SELECT (SELECT position FROM events ORDER BY position DESC LIMIT 1), \
(SELECT hash FROM events ORDER BY position DESC LIMIT 1), \
ARRAY(SELECT coalesce((SELECT max(e.version) FROM events e WHERE e.stream_id = s.id), 0) \
FROM (SELECT 'license_usage-' || gen_random_uuid() AS id FROM generate_series(1, 2 * :n)) s);\n\
INSERT INTO events (position, event_id, stream_id, version, event_type, schema_version, data, \
metadata, recorded_at, hash, hash_rule) \
SELECT h.p + g, gen_random_uuid(), \
CASE WHEN g % 2 = 0 THEN 'license_usage-' ELSE 'request-' END || gen_random_uuid(), 1, \
CASE WHEN g % 2 = 0 THEN 'LicenseValidated' ELSE 'ApiRequestRecorded' END, 1, \
(CASE WHEN g % 2 = 0 THEN :usage ELSE :record END)::json, :metadata::json, now(), \
sha256(convert_to(g::text || :usage, 'UTF8')), 2 \
FROM (SELECT coalesce(max(position), 0) AS p FROM events) h, generate_series(1, 2 * :n) g;\n\
INSERT INTO license_daily_usage (license_id, day, valid) \
SELECT license_id, current_date, count(*) FROM bench_licenses \
JOIN (SELECT (random() * {last})::int + 1 AS i FROM generate_series(1, :n)) r USING (i) \
GROUP BY license_id \
ON CONFLICT (license_id, day) DO UPDATE SET valid = license_daily_usage.valid + excluded.valid;\n\
SELECT pg_notify('keyledger_events', '0');\n\
COMMIT;\n\
{usage_projection}{request_projection}",
        lock = keyledger_events::writer::APPEND_LOCK_KEY,
        last = CEILING_LICENSES - 1,
        usage_projection = projector_transaction(
            "license_usage",
            "LicenseValidated",
            "INSERT INTO license_usage (license_id, position, validated_at, code, feature, \
             metadata, installation_id) \
             SELECT gen_random_uuid(), g, now(), 'VALID', NULL, '{}'::json, NULL \
             FROM generate_series(1, :n) g"
        ),
        request_projection = projector_transaction(
            "api_requests",
            "ApiRequestRecorded",
            "INSERT INTO api_requests (record_id, request_id, service, method, route, path, \
             query, caller, status, duration_ms, request_body, response_body, at, position) \
             SELECT gen_random_uuid(), gen_random_uuid()::text, 'keyledger', 'POST', \
             '/v1/licenses/validate', '/v1/licenses/validate', NULL, 'lic_7Hq3xKpZ', 200, 12.1, \
             '{\"key\":\"[REDACTED]\"}', :response, now(), g FROM generate_series(1, :n) g"
        ),
    )
}

/// One projector step over `:n` events of `event_type`, as the projector runtime makes it:
/// lock the checkpoint, read the events, write the rows (`insert`), move the checkpoint, notify.
pub(super) fn projector_transaction(name: &str, event_type: &str, insert: &str) -> String {
    format!(
        "BEGIN;\n\
SELECT position FROM checkpoints WHERE name = '{name}' FOR UPDATE;\n\
SELECT position, event_id, stream_id, version, event_type, schema_version, data, metadata, \
recorded_at, hash FROM events WHERE event_type = '{event_type}' \
ORDER BY position DESC LIMIT :n;\n\
{insert};\n\
UPDATE checkpoints SET position = position + :n, updated_at = now() WHERE name = '{name}';\n\
SELECT pg_notify('keyledger_checkpoints', '{name}');\n\
COMMIT;\n"
    )
}

/// A validation's usage event, request record and metadata, as the service writes them.
pub(super) fn ceiling_variables() -> anyhow::Result<[(&'static str, String); 4]> {
    let response = json!({
        "code": "VALID",
        "entitlements": ["api", "core", "export", "reports"],
        "expires_at": "2027-11-30T16:46:37.702008Z",
        "license_id": "20545385-5cb8-4805-88e5-e0f034a7d3e7",
        "position": 99963,
        "tier": "pro",
        "valid": true
    })
    .to_string();
    let usage = json!({
        "code": "VALID",
        "license_id": "157f064a-310f-40bb-a7f8-47606b872f3a",
        "metadata": {},
        "validated_at": "2026-11-30T16:46:37.722533Z"
    });
    let record = json!({
        "at": "2026-11-30T16:46:52.121697Z",
        "duration_ms": 12.148945,
        "method": "POST",
        "path": "/v1/licenses/validate",
        "record_id": "5af3d091-4290-433e-836b-aa932deb4abf",
        "request_body": "{\"key\":\"[REDACTED]\"}",
        "request_id": "1a2c744f-712f-4e80-806b-aae60e06f082",
        "response_body": response,
        "route": "/v1/licenses/validate",
        "service": "keyledger",
        "status": 200
    });
    let metadata = json!({
        "actor": "anonymous",
        "causation_id": "1f28edcb-cdc1-4ae9-9819-b511d67840d5",
        "correlation_id": "1f28edcb-cdc1-4ae9-9819-b511d67840d5"
    });
    Ok([
        ("usage", serde_json::to_string(&usage)?),
        ("record", serde_json::to_string(&record)?),
        ("metadata", serde_json::to_string(&metadata)?),
        ("response", response),
    ])
}

/// Replays a validation's writes with pgbench in a migrated database of its own (dropped
/// afterwards), in transactions of each of [`CEILING_BATCHES`] validations; returns the
/// validations per second of each.
pub(super) async fn measure_ceiling(
    args: &BenchArgs,
    config: &Config,
    database: &str,
) -> anyhow::Result<Vec<(u32, f64)>> {
    let scratch = format!("{database}_writes");
    recreate_database(config, &scratch).await?;
    let mut scratch_config = config.clone();
    scratch_config.dbname(&scratch);
    keyledger_events::db::migrate_config_to(&scratch_config, None)
        .await
        .context("Failed to migrate the database of the writes' baseline")?;
    let measured = async {
        let (client, driver) = connect(&scratch_config)
            .await
            .with_context(|| format!("Failed to connect to the database `{scratch}`"))?;
        client
            .batch_execute(&format!(
                "CREATE TABLE bench_licenses AS \
                   SELECT g AS i, gen_random_uuid() AS license_id \
                   FROM generate_series(1, {CEILING_LICENSES}) AS g; \
                 ALTER TABLE bench_licenses ADD PRIMARY KEY (i); \
                 ANALYZE bench_licenses; \
                 INSERT INTO checkpoints (name, position, version) \
                   VALUES ('license_usage', 0, 0), ('api_requests', 0, 0)"
            ))
            .await
            .context("Failed to prepare the database of the writes' baseline")?;
        drop(client);
        driver.abort();
        let variables = ceiling_variables()?;
        let variables: Vec<(&str, &str)> = variables
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let scripts = ScratchDir::create()?;
        let mut results = Vec::new();
        for batch in CEILING_BATCHES {
            let script = scripts.write(&format!("writes-{batch}.sql"), &ceiling_script(batch));
            let script = match script {
                Ok(script) => script,
                Err(error) => {
                    scripts.remove();
                    return Err(error);
                }
            };
            eprintln!(
                "bench: pgbench, a validation's writes, {batch} a transaction, {} s",
                args.seconds
            );
            let run = pgbench(
                args,
                CEILING_CLIENTS,
                &scratch_config,
                &scratch,
                &script,
                &variables,
            )
            .await;
            match run {
                Ok((tps, _)) => results.push((batch, tps * f64::from(batch))),
                Err(error) => {
                    scripts.remove();
                    return Err(error);
                }
            }
        }
        scripts.remove();
        Ok::<_, anyhow::Error>(results)
    }
    .await;
    let mut admin = config.clone();
    admin.dbname("postgres");
    if let Ok((client, driver)) = connect(&admin).await {
        let _ = client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&scratch)
            ))
            .await;
        drop(client);
        driver.abort();
    }
    measured
}
