//! Agent sessions: the aggregate, its command routes and the retention job.

pub mod aggregate;
pub mod merge_patch;
