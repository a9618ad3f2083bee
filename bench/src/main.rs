//! `runq-bench`: measures runq against the performance targets of DESIGN.md on one machine.
//!
//! It starts its own stack from the binaries next to it (`target/release/`): the mock provider,
//! one `runq-api` and one `runq-worker`, on ports picked by the OS, with a database of its own
//! (`runq_bench`, recreated each run and dropped at the end) and a Redis prefix of its own
//! (`runq_bench_<pid>`). It then runs the scenarios, prints one markdown table (runq beside the
//! direct-to-provider baseline and the target) and writes it under `bench/results/`. It only
//! reports: no figure ever fails the run. `make bench` (full) and `make bench-quick` build the
//! binaries first and raise the open-files limit the streams scenario needs.
//!
//! # Layout
//! - `main.rs` — flags, and the start → scenarios → teardown sequence (also on Ctrl-C).
//! - [`stack`] — starting and stopping the processes, the database, the agent under test.
//! - [`scenarios`] — the plan (N values per mode) and one module per scenario:
//!   `growth`, `ttft`, `sync`, `ratelimit`, `observability`, `queue_wait`, `sustained` (one and four
//!   workspaces), `batch`, `streams`; `pairs` runs interleaved
//!   direct/runq request pairs, `sse` scans SSE frames.
//! - [`procfs`] — CPU time, RSS, process lookup and machine facts from `/proc`.
//! - [`stats`] — percentiles.
//! - [`report`] — the table and the results file.

mod procfs;
mod report;
mod scenarios;
mod stack;
mod stats;

use std::path::PathBuf;

use clap::Parser;
use scenarios::{Mode, Plan, Scenario};
use stack::{Stack, StackOptions};

/// Measures runq against DESIGN.md's performance targets (reports only, never fails on a figure).
#[derive(Debug, Parser)]
#[command(name = "runq-bench")]
struct Args {
    /// Small N values: about a minute and a half (the default).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// The N values of the targets (10,000 streams, 30 s sustained): several minutes.
    #[arg(long)]
    full: bool,
    /// Where the results file goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// Number of concurrent SSE streams (default: 1,000 quick, 10,000 full).
    #[arg(long)]
    streams: Option<usize>,
    /// Run only these scenarios (repeat or comma-separate).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Postgres server URL, without a database name.
    #[arg(long, env = "RUNQ_BENCH_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres_url: String,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mode = if args.full { Mode::Full } else { Mode::Quick };
    let plan = Plan::new(mode, args.streams, &args.only);
    let options = StackOptions::new(args.postgres_url, args.redis_url, plan.worker_concurrency())?;

    let load = procfs::load_average().unwrap_or_default();
    eprintln!("runq-bench: {mode} run; load average {load} on {} CPUs (other work skews the figures)", procfs::nproc());

    let mut stack = Stack::new(options).await?;
    // `None`: interrupted by a signal.
    let outcome: anyhow::Result<Option<_>> = tokio::select! {
        outcome = async {
            stack.launch().await?;
            Ok(Some(scenarios::run(&mut stack, &plan).await))
        } => outcome,
        signal = stop_signal() => signal.map(|()| None).map_err(Into::into),
    };
    let logs = stack.log_summary();
    stack.shutdown().await;
    let Some(rows) = outcome? else {
        eprintln!("runq-bench: interrupted; the stack is stopped");
        std::process::exit(130);
    };

    let report = report::Report::new(&plan, rows, &logs, &load);
    println!("{}", report.markdown());
    let path = report.write(&args.out)?;
    eprintln!("runq-bench: results written to {}", path.display());
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        res = tokio::signal::ctrl_c() => res,
        _ = term.recv() => Ok(()),
    }
}
