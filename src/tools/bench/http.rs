//! The HTTP phases: clients issuing licenses and validating keys against the service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use uuid::Uuid;

/// Licenses issued before the validate phase; each validation picks one of their keys.
pub(super) const KEY_POOL: usize = 1000;

/// A request slower than this counts as an error.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(super) struct Target {
    pub(super) client: reqwest::Client,
    /// `Authorization` of the issue calls.
    pub(super) authorization: Option<String>,
    pub(super) issue_url: String,
    pub(super) validate_url: String,
    pub(super) metrics_url: String,
    pub(super) owners: Arc<AtomicU64>,
}

#[derive(Clone)]
pub(super) enum Workload {
    Issue,
    /// Validate keys drawn at random from these, sent in the body or as `Authorization:
    /// License <key>`.
    Validate {
        keys: Arc<Vec<String>>,
        in_header: bool,
    },
}

impl Target {
    pub(super) fn new(
        base_url: &str,
        clients: u32,
        token: Option<String>,
    ) -> anyhow::Result<Target> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::try_from(clients).unwrap_or(usize::MAX))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("Failed to build the HTTP client")?;
        Ok(Target {
            client,
            authorization: token.map(|token| format!("Bearer {token}")),
            issue_url: format!("{base_url}/v1/licenses"),
            validate_url: format!("{base_url}/v1/licenses/validate"),
            metrics_url: format!("{base_url}/metrics"),
            owners: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The service's append batches so far: (commands, transactions), from `/metrics`.
    pub(super) async fn append_batches(&self) -> Option<(f64, f64)> {
        let text = self
            .client
            .get(&self.metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
        };
        Some((
            value("keyledger_append_batch_commands_sum")?,
            value("keyledger_append_batch_commands_count")?,
        ))
    }

    /// POST /v1/licenses → 201 with the new key.
    pub(super) async fn issue(&self) -> Result<String, String> {
        let owner = format!("bench-{}", self.owners.fetch_add(1, Ordering::Relaxed));
        let body = self
            .post(
                &self.issue_url,
                self.authorization.as_deref(),
                &json!({"owner": owner, "tier": "pro"}),
                StatusCode::CREATED,
            )
            .await?;
        body.get("key")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("201 from POST /v1/licenses without a key: {body}"))
    }

    /// POST /v1/licenses/validate → 200 with `"valid": true`.
    pub(super) async fn validate(&self, key: &str, in_header: bool) -> Result<(), String> {
        let body = if in_header {
            let authorization = format!("License {key}");
            self.post(
                &self.validate_url,
                Some(&authorization),
                &json!({}),
                StatusCode::OK,
            )
            .await?
        } else {
            self.post(
                &self.validate_url,
                None,
                &json!({"key": key}),
                StatusCode::OK,
            )
            .await?
        };
        if body.get("valid") == Some(&Value::Bool(true)) {
            Ok(())
        } else {
            Err(format!(
                "200 from POST /v1/licenses/validate, not valid: {body}"
            ))
        }
    }

    pub(super) async fn post(
        &self,
        url: &str,
        authorization: Option<&str>,
        body: &Value,
        expected: StatusCode,
    ) -> Result<Value, String> {
        let mut request = self.client.post(url).json(body);
        if let Some(authorization) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("POST {url}: reading the body: {e}"))?;
        if status != expected {
            let text = String::from_utf8_lossy(&bytes);
            return Err(format!(
                "POST {url}: {status} (expected {expected}): {}",
                text.chars().take(300).collect::<String>()
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("POST {url}: body is not JSON: {e}"))
    }
}

/// Issues the validate phase's licenses, `clients` at a time; any failure stops the bench.
pub(super) async fn issue_key_pool(target: &Target, clients: u32) -> anyhow::Result<Vec<String>> {
    let results: Vec<Result<String, String>> = futures::stream::iter(0..KEY_POOL)
        .map(|_| target.issue())
        .buffer_unordered(usize::try_from(clients).unwrap_or(1))
        .collect()
        .await;
    results
        .into_iter()
        .collect::<Result<Vec<_>, String>>()
        .map_err(anyhow::Error::msg)
        .context("Failed to issue the licenses for the validate phase")
}

#[derive(Default)]
pub(super) struct PhaseResult {
    /// Latencies of the requests answered as expected, sorted.
    pub(super) latencies: Vec<Duration>,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    pub(super) elapsed: Duration,
    /// Commands per append transaction during the phase (all of the service's appends,
    /// request records included).
    pub(super) commands_per_batch: Option<f64>,
}

impl PhaseResult {
    pub(super) fn per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.latencies.len() as f64 / seconds
        } else {
            0.0
        }
    }

    /// Nearest-rank percentile, in milliseconds.
    pub(super) fn percentile_ms(&self, percent: f64) -> Option<f64> {
        percentile_ms(&self.latencies, percent)
    }
}

/// Nearest-rank percentile of `sorted`, in milliseconds.
pub(super) fn percentile_ms(sorted: &[Duration], percent: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((percent / 100.0) * n as f64).ceil() as usize;
    let index = rank.clamp(1, n) - 1;
    Some(sorted[index].as_secs_f64() * 1000.0)
}

/// `clients` tasks send requests back to back until `duration` has passed.
pub(super) async fn run_phase(
    target: &Target,
    workload: &Workload,
    clients: u32,
    duration: Duration,
) -> anyhow::Result<PhaseResult> {
    let batches_before = target.append_batches().await;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let target = target.clone();
        let workload = workload.clone();
        tasks.spawn(async move {
            let mut result = PhaseResult::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = match &workload {
                    Workload::Issue => target.issue().await.map(drop),
                    Workload::Validate { keys, in_header } => {
                        let pick = (Uuid::new_v4().as_u128() % keys.len().max(1) as u128) as usize;
                        match keys.get(pick) {
                            Some(key) => target.validate(key, *in_header).await,
                            None => Err("no keys to validate".to_owned()),
                        }
                    }
                };
                let latency = sent.elapsed();
                match outcome {
                    Ok(()) => result.latencies.push(latency),
                    Err(error) => {
                        result.errors += 1;
                        result.first_error.get_or_insert(error);
                    }
                }
            }
            result
        });
    }
    let mut total = PhaseResult::default();
    while let Some(joined) = tasks.join_next().await {
        let result = joined.context("Failed to join a benchmark client task")?;
        total.latencies.extend(result.latencies);
        total.errors += result.errors;
        if total.first_error.is_none() {
            total.first_error = result.first_error;
        }
    }
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    // Before the first append the histogram is not exported yet: nothing committed so far.
    let (commands_before, batches_before) = batches_before.unwrap_or((0.0, 0.0));
    if let Some((commands, batches)) = target.append_batches().await
        && batches > batches_before
    {
        total.commands_per_batch = Some((commands - commands_before) / (batches - batches_before));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let phase = PhaseResult {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            elapsed: Duration::from_secs(2),
            ..PhaseResult::default()
        };
        assert_eq!(phase.percentile_ms(50.0), Some(50.0));
        assert_eq!(phase.percentile_ms(99.0), Some(99.0));
        assert!((phase.per_second() - 50.0).abs() < 1e-9);
        assert_eq!(PhaseResult::default().percentile_ms(50.0), None);
    }
}
