//! License queries.

pub mod get;
pub mod history;
pub mod search;
pub mod usage;
