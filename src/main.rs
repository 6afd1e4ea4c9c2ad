//! The `keyledger` command: parses the CLI and hands it to the library.

use clap::Parser;

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
