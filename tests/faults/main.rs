//! Fault injection against the real binary. Each test runs a PostgreSQL cluster of its own
//! (and, for the NATS test, a nats-server of its own), so that it may stop, kill, freeze and
//! lock them without touching the shared servers, and `keyledger serve` as a child process; it
//! puts the service under load, injects the fault, and checks what clients saw and what the log
//! holds afterwards. Figures are printed (`--nocapture` shows them).
//!
//! Needs root (PostgreSQL runs as the `postgres` user through `runuser`), PostgreSQL's binaries
//! (`PG_BIN`, or the newest `/usr/lib/postgresql/<version>/bin`) and `/usr/sbin/nats-server`.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on broken set-up"
)]
mod harness;
mod hung_postgres;
mod kill_9;
mod nats_outage;
mod postgres_outage;
mod slow_postgres;
