//! The license slice's projections.

pub mod installations;
pub mod licenses;
pub mod usage;
pub mod validation;
pub mod view;
