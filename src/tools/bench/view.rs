//! The validation view as a command node loads it at start.

use std::time::{Duration, Instant};

use anyhow::Context;

/// The validation view as a node loads it at start.
pub(super) struct ViewResult {
    pub(super) licenses: usize,
    pub(super) bytes: usize,
    pub(super) load: Duration,
}

impl ViewResult {
    pub(super) fn bytes_per_license(&self) -> f64 {
        if self.licenses == 0 {
            0.0
        } else {
            self.bytes as f64 / self.licenses as f64
        }
    }
}

/// Loads the validation view from the bench's database, as a command node does at start.
pub(super) async fn measure_view(database_url: &str) -> anyhow::Result<ViewResult> {
    let pool = keyledger_events::db::pool(database_url, 1)
        .context("Failed to connect to load the validation view")?;
    let started = Instant::now();
    let view = keyledger_projections::license::view::ValidationView::load(&pool)
        .await
        .context("Failed to load the validation view")?;
    Ok(ViewResult {
        licenses: view.len(),
        bytes: view.memory_bytes(),
        load: started.elapsed(),
    })
}
