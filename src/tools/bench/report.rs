//! The report printed at the end of a run.

use std::time::Duration;

use super::BenchArgs;
use super::baseline::Baseline;
use super::ceiling::CEILING_CLIENTS;
use super::export::{EXPORT_EVENTS, ExportResult};
use super::http::{KEY_POOL, PhaseResult, percentile_ms};
use super::lag::{CHECKPOINT_POLL_INTERVAL, LAG_GRACE, LAG_SAMPLE_INTERVAL, LagResult};
use super::mcp;
use super::pgbench::PGBENCH_THREADS;
use super::replay::ReplayResult;
use super::view::ViewResult;

pub(super) struct Report<'a> {
    pub(super) args: &'a BenchArgs,
    pub(super) server_version: &'a str,
    pub(super) service: &'a str,
    pub(super) baseline: &'a Baseline,
    /// A validation's writes replayed by pgbench, without HTTP or the service.
    pub(super) ceiling: &'a [(u32, f64)],
    pub(super) issue: &'a PhaseResult,
    pub(super) validate: &'a PhaseResult,
    /// Validation with the key as `Authorization: License <key>`.
    pub(super) validate_header: &'a PhaseResult,
    /// The validate phase against a service with the request log off.
    pub(super) unlogged: Option<&'a PhaseResult>,
    /// The projection lag during each phase of the in-process service.
    pub(super) lag: [(&'static str, Option<LagResult>); 3],
    /// The log replayed into each asynchronous projection (in-process runs).
    pub(super) replay: Option<&'a ReplayResult>,
    /// The log exported over HTTP (in-process runs).
    pub(super) export: Option<&'a ExportResult>,
    /// The validation view loaded from the bench's database (in-process runs).
    pub(super) view: Option<&'a ViewResult>,
    /// Each MCP tool's latency over HTTP: one client alone, and the bench's clients at once.
    pub(super) mcp: Option<(&'a [mcp::ToolLatency], &'a [mcp::ToolLatency])>,
}

pub(super) const LABEL: usize = 30;

pub(super) fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

pub(super) fn ratio(service: f64, baseline: f64) -> String {
    if baseline > 0.0 {
        format!("{:.2}", service / baseline)
    } else {
        "-".to_owned()
    }
}

pub(super) fn service_line(
    label: &str,
    phase: &PhaseResult,
    baseline: f64,
    against: &str,
) -> String {
    format!(
        "  {label:<width$}{:>9.1}{:>8}{:>8}{:>8}{:>8}{:>7}  {} × pgbench {against}",
        phase.per_second(),
        ms(phase.percentile_ms(50.0)),
        ms(phase.percentile_ms(95.0)),
        ms(phase.percentile_ms(99.0)),
        phase.errors,
        phase
            .commands_per_batch
            .map_or_else(|| "-".to_owned(), |b| format!("{b:.1}")),
        ratio(phase.per_second(), baseline),
        width = LABEL - 2,
    )
}

/// The design's bound on the projection lag's p99.
pub(super) const LAG_TARGET_MS: f64 = 50.0;
/// The design's floor for replay speed.
pub(super) const REPLAY_TARGET_PER_SECOND: f64 = 100_000.0;

pub(super) fn lag_header() -> String {
    format!(
        "{:<LABEL$}{:>9}{:>8}{:>8}{:>8}{:>8}",
        "projection lag", "samples", "p50 ms", "p99 ms", "max ms", "behind"
    )
}

pub(super) fn replay_header(events: i64) -> String {
    format!(
        "{:<LABEL$}{:>9}{:>8}",
        format!("replay, {events} events"),
        "events/s",
        "seconds"
    )
}

pub(super) fn lag_line(label: &str, lag: &LagResult) -> String {
    let p99 = percentile_ms(&lag.lags, 99.0);
    format!(
        "  {label:<width$}{:>9}{:>8}{:>8}{:>8}{:>8}  {}",
        lag.lags.len(),
        ms(percentile_ms(&lag.lags, 50.0)),
        ms(p99),
        ms(percentile_ms(&lag.lags, 100.0)),
        lag.max_behind,
        match p99 {
            Some(p99) if p99 < LAG_TARGET_MS => "p99 under the 50 ms target",
            Some(_) => "p99 OVER the 50 ms target",
            None => "no samples",
        },
        width = LABEL - 2,
    )
}

pub(super) fn replay_line(label: &str, replay: &ReplayResult, took: Duration) -> String {
    format!(
        "  {label:<width$}{:>9.0}{:>8.2}",
        replay.per_second(took),
        took.as_secs_f64(),
        width = LABEL - 2,
    )
}

pub(super) fn print_lag(lag: &[(&'static str, Option<LagResult>)]) {
    if lag.iter().all(|(_, result)| result.is_none()) {
        return;
    }
    println!("{}", lag_header());
    for (label, result) in lag {
        if let Some(result) = result {
            println!("{}", lag_line(label, result));
        }
    }
}

pub(super) fn print_replay(replay: &ReplayResult) {
    println!("{}", replay_header(replay.events));
    println!("{}", replay_line("read the log only", replay, replay.read));
    for (name, took) in &replay.rebuilds {
        println!("{}", replay_line(&format!("rebuild {name}"), replay, *took));
    }
    let total = replay.total();
    println!(
        "{}  {}",
        replay_line("all of them, in turn", replay, total),
        if replay.per_second(total) >= REPLAY_TARGET_PER_SECOND {
            "at or over the 100k events/s target"
        } else {
            "UNDER the 100k events/s target"
        }
    );
}

pub(super) fn print_report(report: &Report<'_>) {
    let args = report.args;
    let baseline = report.baseline;
    println!(
        "keyledger bench: {} clients, {} s per phase, PostgreSQL {}",
        args.clients, args.seconds, report.server_version
    );
    println!("{:<LABEL$}{:>9}", "baseline (pgbench)", "tps");
    println!(
        "  {:<width$}{:>9.1}",
        "insert one event-sized row",
        baseline.insert_tps,
        width = LABEL - 2
    );
    println!(
        "  {:<width$}{:>9.1}",
        "primary-key lookup",
        baseline.lookup_tps,
        width = LABEL - 2
    );
    println!(
        "{:<LABEL$}{:>9}  ratio",
        "a validation's writes alone", "valid./s"
    );
    for (batch, per_second) in report.ceiling {
        println!(
            "  {:<width$}{:>9.1}  {} × pgbench lookup",
            format!("{batch} a transaction"),
            per_second,
            ratio(*per_second, baseline.lookup_tps),
            width = LABEL - 2
        );
    }
    println!(
        "{:<LABEL$}{:>9}{:>8}{:>8}{:>8}{:>8}{:>7}  ratio",
        "service (HTTP)", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "batch"
    );
    println!(
        "{}",
        service_line("issue license", report.issue, baseline.insert_tps, "insert")
    );
    println!(
        "{}",
        service_line(
            "validate, key in body",
            report.validate,
            baseline.lookup_tps,
            "lookup"
        )
    );
    println!(
        "{}",
        service_line(
            "validate, License header",
            report.validate_header,
            baseline.lookup_tps,
            "lookup"
        )
    );
    if let Some(unlogged) = report.unlogged {
        println!(
            "{}",
            service_line(
                "validate, request log off",
                unlogged,
                baseline.lookup_tps,
                "lookup"
            )
        );
    }
    if let Some(unlogged) = report.unlogged {
        let (on, off) = (report.validate.per_second(), unlogged.per_second());
        if off > 0.0 {
            println!(
                "  {:<width$}{:>8.1} %  validations/s with it on against off (target: under 15 %)",
                "request log's cost",
                (1.0 - on / off) * 100.0,
                width = LABEL - 2
            );
        }
    }
    print_lag(&report.lag);
    if let Some(replay) = report.replay {
        print_replay(replay);
    }
    if let Some(export) = report.export {
        print_export(export);
    }
    if let Some((alone, loaded)) = report.mcp {
        print_mcp(alone, loaded, report.args.clients);
    }
    if let Some(view) = report.view {
        println!(
            "{:<LABEL$}{:>9}{:>8}{:>8}",
            "validation view", "licenses", "B each", "load ms"
        );
        println!(
            "  {:<width$}{:>9}{:>8.0}{:>8.1}  ≈ {:.1} GiB at 10 M licenses",
            "in memory, per node",
            view.licenses,
            view.bytes_per_license(),
            view.load.as_secs_f64() * 1000.0,
            view.bytes_per_license() * 10e6 / f64::from(1u32 << 30),
            width = LABEL - 2
        );
    }
    println!();
    println!(
        "pgbench: -n -M prepared -c {} -j {} -T {}{}",
        args.clients,
        PGBENCH_THREADS.min(args.clients),
        args.seconds,
        if baseline.failed_transactions > 0 {
            format!(", {} failed transactions", baseline.failed_transactions)
        } else {
            String::new()
        }
    );
    println!(
        "a validation's writes alone: what the service writes for each validation (its usage \
         event and its request record, inserted with the append writer's statements under the \
         append lock, the day's VALID count, the license_usage and api_requests rows the \
         projectors add, each projection in a transaction with its checkpoint), N validations \
         a transaction, by pgbench with {CEILING_CLIENTS} clients in a database of its own: \
         what this PostgreSQL can take before HTTP, the service or the load generator cost \
         anything"
    );
    println!("service: {}", report.service);
    println!(
        "req/s counts the expected answers (201, 200 with \"valid\": true); each validation \
         picks one of {KEY_POOL} keys issued before its phase"
    );
    println!("ratio: the service's requests/s over pgbench's transactions/s");
    println!(
        "authentication on: licenses are issued with a bearer token; a key in the body is a \
         public call, a License header authenticates its holder first"
    );
    if report.lag.iter().any(|(_, result)| result.is_some()) {
        println!(
            "projection lag: every {} ms of a phase the head of the log is read; a sample's lag \
             is the time until the checkpoint of every asynchronous projection ({}) reached \
             that head, read every {} ms; behind: the most events from the lowest checkpoint to \
             the head in one sample; both read on a thread and connections of the bench's own",
            LAG_SAMPLE_INTERVAL.as_millis(),
            keyledger_projections::asynchronous()
                .iter()
                .map(|projection| projection.name())
                .collect::<Vec<_>>()
                .join(", "),
            CHECKPOINT_POLL_INTERVAL.as_millis(),
        );
    }
    for (label, result) in &report.lag {
        if let Some(result) = result.as_ref().filter(|result| result.late > 0) {
            println!(
                "projection lag, {label}: {} samples not caught up with {} s after the phase, \
                 counted at the time waited",
                result.late,
                LAG_GRACE.as_secs()
            );
        }
    }
    if report.export.is_some() {
        println!(
            "export: the log topped up to {EXPORT_EVENTS} events with copies of its own under a \
             type no projection reads, then streamed from the in-process service over HTTP and \
             counted; peak MiB: the bench process's resident high-water mark during the export \
             (reset before it) over its resident size before it, service and client together"
        );
    }
    if report.replay.is_some() {
        println!(
            "replay: after the phases, with the service idle, each asynchronous projection rebuilt \
             from position 0 into shadow tables and swapped in (`keyledger projections rebuild`); \
             events/s: the events in the log over the seconds it took (a rebuild reads only its \
             projection's event types); read the log only: every event, {} a batch, read and \
             decoded, nothing applied",
            keyledger_projections::rebuild::BATCH
        );
    }
    for (name, phase) in [
        ("issue", report.issue),
        ("validate", report.validate),
        ("validate (License header)", report.validate_header),
    ] {
        if let Some(error) = &phase.first_error {
            println!("first {name} error: {error}");
        }
    }
}

pub(super) fn print_mcp(alone: &[mcp::ToolLatency], loaded: &[mcp::ToolLatency], clients: u32) {
    println!(
        "{:<LABEL$}{:>9}{:>8}{:>8}{:>9}{:>8}{:>8}",
        "MCP tool over HTTP", "1 client", "p50 ms", "p95 ms", "clients", "p50 ms", "p95 ms"
    );
    for (one, many) in alone.iter().zip(loaded) {
        let refusals = [one, many]
            .iter()
            .filter_map(|t| {
                t.first_refusal
                    .as_ref()
                    .map(|why| format!("{} refused, first: {why}", t.refused))
            })
            .collect::<Vec<_>>()
            .join("; ");
        println!(
            "  {:<width$}{:>9}{:>8}{:>8}{:>9}{:>8}{:>8}{}",
            one.tool,
            one.calls,
            ms(one.p50_ms),
            ms(one.p95_ms),
            clients,
            ms(many.p50_ms),
            ms(many.p95_ms),
            if refusals.is_empty() {
                String::new()
            } else {
                format!("  {refusals}")
            },
            width = LABEL - 2
        );
    }
}

pub(super) fn print_export(export: &ExportResult) {
    let seconds = export.took.as_secs_f64().max(f64::EPSILON);
    println!(
        "{:<LABEL$}{:>9}{:>8}{:>8}{:>10}",
        format!("export, {} events", export.events),
        "events/s",
        "MB/s",
        "seconds",
        "peak MiB"
    );
    println!(
        "  {:<width$}{:>9.0}{:>8.1}{:>8.2}{:>10}",
        "GET /v1/events/export",
        export.events as f64 / seconds,
        export.bytes as f64 / 1e6 / seconds,
        seconds,
        export.peak_growth.map_or("?".to_owned(), |b| format!(
            "+{:.1}",
            b as f64 / f64::from(1u32 << 20)
        )),
        width = LABEL - 2
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each column after the label, `widths` wide, ends on a figure in `line` as in `header`.
    fn assert_columns_line_up(header: &str, line: &str, widths: &[usize]) {
        let mut end = LABEL;
        for width in widths {
            end += width;
            for text in [header, line] {
                let column = text.get(end - width..end).unwrap_or_default();
                assert!(
                    column.starts_with(' ') && !column.ends_with(' '),
                    "the column ending at {end} does not line up:\n{header}\n{line}"
                );
            }
        }
    }

    #[test]
    fn lag_and_replay_lines_line_up_with_their_headers() {
        let lag = LagResult {
            lags: (1..=200).map(Duration::from_millis).collect(),
            late: 0,
            max_behind: 42,
        };
        let line = lag_line("validate, License header", &lag);
        assert_columns_line_up(&lag_header(), &line, &[9, 8, 8, 8, 8]);
        assert!(line.contains(" 100.00 "), "{line}");
        assert!(line.ends_with("OVER the 50 ms target"), "{line}");

        let replay = ReplayResult {
            events: 150_000,
            read: Duration::from_millis(500),
            rebuilds: vec![
                ("licenses", Duration::from_secs(1)),
                ("api_requests", Duration::from_secs(2)),
            ],
        };
        assert_eq!(replay.total(), Duration::from_secs(3));
        assert!((replay.per_second(replay.read) - 300_000.0).abs() < 1e-6);
        let line = replay_line("rebuild licenses", &replay, Duration::from_secs(1));
        assert_columns_line_up(&replay_header(replay.events), &line, &[9, 8]);
        assert!(line.ends_with(" 150000    1.00"), "{line}");
    }
}
