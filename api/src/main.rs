//! `runq-api`: parse settings, start telemetry, serve until SIGINT/SIGTERM.

use clap::{Parser, Subcommand};
use runq_api::Application;
use runq_api::config::ApiConfig;
use runq_shared::{shutdown, telemetry};

/// jemalloc: cheaper than glibc's malloc for the many small, short-lived buffers of a run
/// (events, frames, statements), moved between threads (bench: 0.12 → 0.10 ms of API and 0.20 →
/// 0.17 ms of worker CPU per run).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "runq-api", version, about = "The runq HTTP API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: ApiConfig,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Create a workspace and print its first management key, once, as JSON.
    Bootstrap {
        #[arg(long)]
        workspace: String,
    },
    /// Apply database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::install_crypto_provider();
    let _telemetry = telemetry::init("runq-api", &cli.config.telemetry)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(cli.config).await?;
            tracing::info!(addr = %app.local_addr()?, version = runq_shared::VERSION, "listening");
            app.run_until_stopped(shutdown::on_signal()).await;
        }
        Command::Bootstrap { workspace } => {
            let created = runq_api::bootstrap(&cli.config, &workspace).await?;
            println!("{created}");
        }
        Command::Migrate => {
            let db = runq_shared::db::pool(&cli.config.store, cli.config.store.dependency_timeout())?;
            runq_shared::db::migrate(&db).await?;
        }
    }
    Ok(())
}
