//! keyledger's process wiring: configuration, telemetry, the `serve` application (HTTP,
//! writer, projectors, relay) and the operator commands.

pub mod api_keys;
pub mod app;
pub mod cli;
pub mod config;
pub mod health;
pub mod jobs;
pub mod mcp;
pub mod openapi;
pub mod supervise;
pub mod telemetry;
pub mod tools;
pub mod users;
