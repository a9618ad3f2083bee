//! The `runq` binary: parse the command line, run the command, exit with its code.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    runq_cli::main(runq_cli::args::Cli::parse()).await
}
