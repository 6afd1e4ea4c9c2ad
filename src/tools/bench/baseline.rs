//! The pgbench baselines the service is compared with: one event-sized INSERT per
//! transaction, and one primary-key lookup.

use anyhow::Context;
use serde_json::{Value, json};
use tokio_postgres::Config;

use super::BenchArgs;
use super::pgbench::{ScratchDir, connect, pgbench};

/// Rows of the pgbench lookup table.
pub(super) const LOOKUP_ROWS: u32 = 100_000;

/// Scratch tables, copies of the migrated tables (their columns, constraints and indexes, as
/// the migrations leave them): `bench_events` of `events`, numbering its own positions, and
/// `bench_lookup` of `license_validation`, the table a validation reads.
pub(super) const SCRATCH_SETUP: &str = r"
CREATE TABLE bench_events (LIKE events INCLUDING ALL);
ALTER TABLE bench_events ALTER COLUMN position ADD GENERATED ALWAYS AS IDENTITY;
CREATE TABLE bench_lookup (LIKE license_validation INCLUDING ALL);
";

pub(super) const SCRATCH_TEARDOWN: &str = "DROP TABLE IF EXISTS bench_events, bench_lookup";

/// One event per transaction, its data and metadata sent as parameters like the writer's.
pub(super) const INSERT_SCRIPT: &str = "\
INSERT INTO bench_events (event_id, stream_id, version, event_type, schema_version, data, \
metadata, recorded_at, hash, hash_rule) VALUES (gen_random_uuid(), 'license-' || gen_random_uuid(), \
1, 'LicenseIssued', 1, :data::json, :metadata::json, now(), sha256(uuid_send(gen_random_uuid())), 2);
";

/// The validation lookup: a random existing row by its 64-hex-character key hash.
pub(super) fn lookup_script() -> String {
    format!(
        "\\set id random(1, {LOOKUP_ROWS})\n\
         SELECT license_id, tier, status, expires_at, entitlements, installations \
         FROM bench_lookup \
         WHERE key_hash = encode(sha256(convert_to('key-' || :id, 'UTF8')), 'hex');\n"
    )
}

/// The data of a `LicenseIssued` event as the service stores it (about 300 bytes of JSON).
pub(super) fn event_data() -> Value {
    json!({
        "license_id": "0b6f3e52-9a1d-4c47-8f2e-3d5a7c9e1b24",
        "key_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "key_prefix": "lic_7Hq3xKpZ",
        "owner": "bench-1234",
        "tier": "pro",
        "issued_at": "2026-11-22T10:00:00.123456Z",
        "expires_at": "2027-11-22T10:00:00.123456Z",
        "metadata": {}
    })
}

pub(super) fn event_metadata() -> Value {
    json!({
        "correlation_id": "5c2e8f0a-7d41-4b9e-a3c6-1f8d2e4b6a90",
        "actor": "api"
    })
}

pub(super) struct Baseline {
    pub(super) insert_tps: f64,
    pub(super) lookup_tps: f64,
    pub(super) failed_transactions: u64,
}

pub(super) async fn pgbench_baseline(
    args: &BenchArgs,
    config: &Config,
    database: &str,
) -> anyhow::Result<Baseline> {
    let (client, driver) = connect(config)
        .await
        .with_context(|| format!("Failed to connect to the database `{database}`"))?;
    // The scratch copy of `events` is made from the table the migrations create.
    keyledger_events::db::migrate_config_to(config, None)
        .await
        .with_context(|| format!("Failed to migrate the database `{database}`"))?;
    client
        .batch_execute(SCRATCH_SETUP)
        .await
        .context("Failed to create the pgbench scratch tables")?;
    eprintln!("bench: filling the lookup table with {LOOKUP_ROWS} rows");
    client
        .execute(
            "INSERT INTO bench_lookup (key_hash, license_id, tier, status, expires_at) \
             SELECT encode(sha256(convert_to('key-' || g, 'UTF8')), 'hex'), gen_random_uuid(), \
                    'pro', 'active', now() + interval '365 days' \
             FROM generate_series(1, $1::integer) AS g",
            &[&i32::try_from(LOOKUP_ROWS).context("Failed to size the lookup table")?],
        )
        .await
        .context("Failed to fill the pgbench lookup table")?;
    client
        .batch_execute("VACUUM ANALYZE bench_lookup")
        .await
        .context("Failed to vacuum the pgbench lookup table")?;
    // Flush the setup's writes now rather than during the measurements (needs superuser or
    // pg_checkpoint; skipped without).
    if let Err(error) = client.batch_execute("CHECKPOINT").await {
        eprintln!("bench: skipping CHECKPOINT: {error}");
    }

    let scripts = ScratchDir::create()?;
    let measured = async {
        let insert = scripts.write("insert.sql", INSERT_SCRIPT)?;
        let lookup = scripts.write("lookup.sql", &lookup_script())?;
        let data = serde_json::to_string(&event_data()).context("Failed to encode event data")?;
        let metadata =
            serde_json::to_string(&event_metadata()).context("Failed to encode event metadata")?;
        eprintln!("bench: pgbench insert, {} s", args.seconds);
        let (insert_tps, insert_failed) = pgbench(
            args,
            args.clients,
            config,
            database,
            &insert,
            &[("data", &data), ("metadata", &metadata)],
        )
        .await?;
        eprintln!("bench: pgbench lookup, {} s", args.seconds);
        let (lookup_tps, lookup_failed) =
            pgbench(args, args.clients, config, database, &lookup, &[]).await?;
        Ok::<_, anyhow::Error>(Baseline {
            insert_tps,
            lookup_tps,
            failed_transactions: insert_failed + lookup_failed,
        })
    }
    .await;

    scripts.remove();
    let dropped = client
        .batch_execute(SCRATCH_TEARDOWN)
        .await
        .context("Failed to drop the pgbench scratch tables");
    drop(client);
    driver.abort();
    let baseline = measured?;
    dropped?;
    Ok(baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_row_is_event_sized() {
        let data = serde_json::to_string(&event_data()).unwrap();
        assert!((280..=320).contains(&data.len()), "{} bytes", data.len());
    }
}
