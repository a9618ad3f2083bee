//! `runq-mock` binary: serves the mock provider until SIGINT/SIGTERM.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use runq_mock::{MockConfig, MockServer};
use tracing_subscriber::EnvFilter;

/// Offline mock LLM provider (OpenAI and Anthropic wire protocols).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "RUNQ_MOCK_BIND", default_value = "127.0.0.1:8089")]
    bind: SocketAddr,
    /// Default delay before the first token, in milliseconds.
    #[arg(long, env = "RUNQ_MOCK_TTFT_MS", default_value_t = 0)]
    ttft_ms: u64,
    /// Default delay between tokens, in milliseconds.
    #[arg(long, env = "RUNQ_MOCK_DELAY_MS", default_value_t = 0)]
    delay_ms: u64,
    /// Default reply length in tokens (`tok0 tok1 ...`); echo when unset.
    #[arg(long, env = "RUNQ_MOCK_TOKENS")]
    tokens: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // Scripts grep for `listening addr=`; colour codes would split it.
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = MockConfig {
        ttft: Duration::from_millis(args.ttft_ms),
        delay: Duration::from_millis(args.delay_ms),
        tokens: args.tokens,
    };
    let server = MockServer::bind(args.bind, config).await?;
    tracing::info!(addr = %server.addr(), "listening");
    shutdown_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
