//! The `keyledger` command: parses the CLI and hands it to the library.

use clap::Parser;

/// mimalloc instead of glibc's malloc: a profile of the issue and validate paths under load
/// spent a quarter of the service's CPU in glibc's malloc and free (docs/ARCHITECTURE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    keyledger::cli::run(keyledger::cli::Cli::parse()).await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        keyledger::cli::Cli::command().debug_assert();
    }
}
