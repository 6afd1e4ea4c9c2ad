//! The read side's builders: the projector runtime (checkpoints, leases, wake-ups, rebuilds),
//! consistency waits, and each projection of the log.

pub mod api_key;
pub mod consistency;
pub mod license;
pub mod rebuild;
pub mod request;
pub mod runtime;
pub mod session;
#[cfg(test)]
mod testing;
pub mod user;

use std::sync::Arc;

use keyledger_events::Projection;

/// Projections applied inside the append transaction.
pub fn inline() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(license::validation::LicenseValidation),
        Arc::new(user::Users),
        Arc::new(api_key::ApiKeys),
    ]
}

/// Projections applied by projector workers after commit.
pub fn asynchronous() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(license::licenses::Licenses),
        Arc::new(license::usage::LicenseUsage),
        Arc::new(license::installations::Installations),
        Arc::new(session::Sessions),
        Arc::new(request::ApiRequests),
    ]
}
