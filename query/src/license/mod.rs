//! License queries.

pub mod get;
pub mod usage;
