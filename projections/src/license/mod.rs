//! The license slice's projections.

pub mod licenses;
pub mod usage;
pub mod validation;
