//! Operator tools that run beside the service, never inside it: the benchmark and the legacy
//! import. `serve` (`crate::app`) uses nothing from here.

pub mod bench;
pub mod import;
