//! End-to-end tests against real PostgreSQL and NATS: one binary, one module per area.

mod bad_input;

mod event_log;
mod helpers;
mod licenses;
