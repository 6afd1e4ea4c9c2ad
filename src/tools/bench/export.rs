//! The export: `GET /v1/events/export` of a log topped up to a million events.

use std::time::{Duration, Instant};

use anyhow::Context;

/// Events in the log when the export is measured.
pub(super) const EXPORT_EVENTS: i64 = 1_000_000;

/// `GET /v1/events/export` of a log of [`EXPORT_EVENTS`] events.
pub(super) struct ExportResult {
    pub(super) events: u64,
    pub(super) bytes: u64,
    pub(super) took: Duration,
    /// The process's resident high-water mark during the export over its resident size
    /// before it (`None` where /proc cannot tell).
    pub(super) peak_growth: Option<u64>,
}

/// Tops the log up to [`EXPORT_EVENTS`] with copies of its events under a type no projection
/// reads (under the append lock, as a writer would), then streams the export from the service
/// over HTTP, counting lines and bytes, with the process's peak memory reset before it.
pub(super) async fn measure_export(
    database_url: &str,
    base_url: &str,
    token: &str,
) -> anyhow::Result<ExportResult> {
    let pool = keyledger_events::db::pool(database_url, 1)?;
    let mut client = pool
        .get()
        .await
        .context("Failed to connect to fill the log")?;
    let count: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .try_get(0)?;
    // In transactions of at most 20k rows: each holds the append lock well under the writers
    // lock timeout.
    let mut count = count;
    while count < EXPORT_EVENTS {
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&keyledger_events::writer::APPEND_LOCK_KEY],
        )
        .await?;
        let missing = (EXPORT_EVENTS - count).min(20_000);
        // Copies of the log's first events, positions after the head.
        let inserted = tx
            .execute(
                "INSERT INTO events (position, event_id, stream_id, version, event_type, \
                                     schema_version, data, metadata, recorded_at, hash, \
                                     hash_rule) \
                 SELECT h.p + n, gen_random_uuid(), 'bench_export-' || gen_random_uuid(), 1, \
                        'BenchFiller', e.schema_version, e.data, e.metadata, e.recorded_at, \
                        e.hash, e.hash_rule \
                 FROM (SELECT max(position) AS p FROM events) h, \
                      generate_series(1, $1::bigint) AS n \
                 JOIN events e ON e.position = 1 + (n - 1) % (SELECT count(*) FROM events)",
                &[&missing],
            )
            .await
            .context("Failed to fill the log for the export")?;
        tx.commit().await?;
        anyhow::ensure!(inserted > 0, "the log could not be filled for the export");
        count += i64::try_from(inserted).unwrap_or(i64::MAX);
    }
    drop(client);

    let http = reqwest::Client::builder()
        .build()
        .context("Failed to build the HTTP client")?;
    let rss_before = proc_status_kib("VmRSS");
    // Writing 5 to clear_refs resets the peak resident size (Linux 4.0 and later).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let started = Instant::now();
    let mut response = http
        .get(format!("{base_url}/v1/events/export"))
        .bearer_auth(token)
        .send()
        .await
        .context("Failed to start the export")?;
    anyhow::ensure!(
        response.status().is_success(),
        "the export answered {}",
        response.status()
    );
    let (mut events, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = response.chunk().await.context("The export broke off")? {
        bytes += chunk.len() as u64;
        events += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let took = started.elapsed();
    let peak_growth = match (reset, rss_before, proc_status_kib("VmHWM")) {
        (true, Some(before), Some(peak)) => Some(peak.saturating_sub(before) * 1024),
        _ => None,
    };
    Ok(ExportResult {
        events,
        bytes,
        took,
        peak_growth,
    })
}

/// A `kB` line of /proc/self/status.
pub(super) fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .trim_start_matches(':')
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}
