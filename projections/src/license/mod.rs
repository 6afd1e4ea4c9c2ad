//! The license slice's projections.

#[cfg(test)]
mod fixtures;
pub mod installations;
pub mod licenses;
pub mod usage;
pub mod validation;
pub mod view;
