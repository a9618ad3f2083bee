//! `runq-worker`: parse settings, start telemetry, consume runs until SIGINT/SIGTERM.

use clap::Parser;
use runq_shared::{shutdown, telemetry};
use runq_worker::Worker;
use runq_worker::config::WorkerConfig;

/// jemalloc: cheaper than glibc's malloc for the many small, short-lived buffers of a run
/// (events, frames, statements), moved between threads (bench: 0.12 → 0.10 ms of API and 0.20 →
/// 0.17 ms of worker CPU per run).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "runq-worker", version, about = "The runq worker")]
struct Cli {
    #[command(flatten)]
    config: WorkerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::install_crypto_provider();
    let _telemetry = telemetry::init("runq-worker", &cli.config.telemetry)?;
    let worker = Worker::build(cli.config).await?;
    if let Some(addr) = worker.metrics_addr() {
        tracing::info!(addr = %addr, "metrics listening");
    }
    tracing::info!(worker_id = worker.id(), version = runq_shared::VERSION, "worker started");
    worker.run_until_stopped(shutdown::on_signal()).await
}
