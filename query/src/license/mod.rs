//! License queries.

pub mod as_of;
pub mod get;
pub mod history;
pub mod search;
pub mod usage;
