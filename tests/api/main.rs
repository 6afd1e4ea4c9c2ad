//! End-to-end tests against real PostgreSQL and NATS: one binary, one module per area.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on broken set-up"
)]
mod admin_login;
mod api_keys;
mod as_of;
mod audit;
mod auth;
mod bad_input;
mod certificate;
mod crash;
mod event_log;
mod export;
mod found;
mod helpers;
mod idempotency;
mod import;
mod licenses;
mod lifecycle;
mod mcp;
mod nodes;
mod openapi;
mod permissions;
mod perpetual;
mod projections;
mod rate_limit;
mod record;
mod relay;
mod replay;
mod request_log;
mod resilience;
mod secrets;
mod sessions;
mod tail;
mod users;
