//! The scenarios, their N values per mode, and the order they run in.
//!
//! Every run a scenario submits carries `metadata.bench = <tag>`, so figures kept in Postgres
//! (`queue_wait_us`, `finished_at`) are read back per scenario. Before each scenario the bench
//! waits until the previous one's runs have finished; the streams scenario restarts the API and
//! the worker first. A scenario that fails becomes an
//! `n/a (error: …)` row; the others still run.

mod batch;
mod growth;
mod observability;
mod pairs;
mod queue_wait;
mod ratelimit;
mod sse;
mod streams;
mod sustained;
mod sync;
mod ttft;

use std::fmt;
use std::time::Duration;

use crate::report::{Row, thousands};
use crate::stack::Stack;

/// `--quick` or `--full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Quick,
    Full,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Quick => "quick",
            Mode::Full => "full",
        })
    }
}

/// A scenario, as `--only` names it; declared in the order they run. Streams is last: it runs on
/// a freshly restarted API and worker (so their idle RSS is that of a process that served
/// nothing) and leaves thousands of runs in flight for the teardown to kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scenario {
    /// Postgres CPU per sync (and streamed) run with 0 and with 100,000 finished runs in the
    /// table. First, while the table is empty; it truncates what it wrote.
    Growth,
    /// Added time to first token vs the provider called directly (c=1 and c=64).
    Ttft,
    /// Sync `POST /v1/run` latency vs a direct non-streaming call (c=1 and c=64).
    Sync,
    /// What the rate-limit check adds to a request (limited vs unlimited key, c=1 and c=64).
    Ratelimit,
    /// What request logs and metrics cost a request (logged vs quiet API, c=1 and c=64).
    Observability,
    /// Enqueue → worker start (`queue_wait_us`), idle and at c=64.
    QueueWait,
    /// Sustained async runs/s with a zero-latency provider, CPU per process, CPU and WAL per run.
    Sustained,
    /// The same, with the clients spread over four workspaces.
    SustainedWorkspaces,
    /// Accepting a 10,000-query batch, and its drain rate.
    Batch,
    /// Memory per open SSE stream (API) and per in-flight run (worker).
    Streams,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = clap::ValueEnum::to_possible_value(self).expect("no skipped variants");
        f.write_str(value.get_name())
    }
}

/// What one bench run does: the scenarios and their N values.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    pub scenarios: Vec<Scenario>,
    /// Sequential runs per measurement of the growth scenario (sync and stream, at two table
    /// sizes).
    pub growth_runs: usize,
    /// (concurrency, measured pairs) of the TTFT comparison.
    pub ttft: [(usize, usize); 2],
    /// (concurrency, measured pairs) of the sync latency comparison.
    pub sync: [(usize, usize); 2],
    /// Sequential sync runs of the idle queue-wait measurement.
    pub queue_idle_runs: usize,
    /// (concurrency, runs) of the loaded queue-wait measurement.
    pub queue_loaded: (usize, usize),
    pub sustained_for: Duration,
    pub sustained_clients: usize,
    /// Most runs submitted but not yet answered by the provider before clients pause.
    pub sustained_backlog: u64,
    pub batch_size: usize,
    pub streams: usize,
    /// Streams being opened at once (bounded so the API's accept backlog never overflows).
    pub stream_opens: usize,
}

impl Plan {
    pub fn new(mode: Mode, streams: Option<usize>, only: &[Scenario]) -> Self {
        let mut scenarios = if only.is_empty() {
            vec![
                Scenario::Growth,
                Scenario::Ttft,
                Scenario::Sync,
                Scenario::Ratelimit,
                Scenario::Observability,
                Scenario::QueueWait,
                Scenario::Sustained,
                Scenario::SustainedWorkspaces,
                Scenario::Batch,
                Scenario::Streams,
            ]
        } else {
            only.to_vec()
        };
        scenarios.sort();
        scenarios.dedup();
        let full = mode == Mode::Full;
        Self {
            mode,
            scenarios,
            growth_runs: if full { 1_000 } else { 300 },
            ttft: if full { [(1, 2_000), (64, 5_000)] } else { [(1, 300), (64, 1_000)] },
            sync: if full { [(1, 2_000), (64, 5_000)] } else { [(1, 300), (64, 1_000)] },
            queue_idle_runs: if full { 1_000 } else { 200 },
            queue_loaded: if full { (64, 5_000) } else { (64, 1_000) },
            sustained_for: Duration::from_secs(if full { 30 } else { 10 }),
            sustained_clients: 128,
            sustained_backlog: 5_000,
            batch_size: 10_000,
            streams: streams.unwrap_or(if full { 10_000 } else { 1_000 }),
            stream_opens: 500,
        }
    }

    /// The worker must hold every stream's run at once.
    pub fn worker_concurrency(&self) -> usize {
        (self.streams + 1_024).max(16_384)
    }

    /// The N values, for the results header.
    pub fn describe(&self) -> String {
        let scenarios: Vec<String> = self.scenarios.iter().map(ToString::to_string).collect();
        format!(
            "scenarios: {}; growth: {} sequential runs per measurement, {} finished runs seeded; TTFT pairs c={}: {}, c={}: {}; sync pairs c={}: {}, c={}: {}; queue wait: {} idle runs, \
             {} runs at c={}; sustained: {} s, {} clients, backlog ≤ {} (again over 4 workspaces); batch: {}; streams: {} (opened {} at a \
             time); worker concurrency {}",
            scenarios.join(", "),
            self.growth_runs,
            thousands(growth::SEEDED as f64),
            self.ttft[0].0,
            self.ttft[0].1,
            self.ttft[1].0,
            self.ttft[1].1,
            self.sync[0].0,
            self.sync[0].1,
            self.sync[1].0,
            self.sync[1].1,
            self.queue_idle_runs,
            self.queue_loaded.1,
            self.queue_loaded.0,
            self.sustained_for.as_secs(),
            self.sustained_clients,
            self.sustained_backlog,
            self.batch_size,
            self.streams,
            self.stream_opens,
            self.worker_concurrency(),
        )
    }
}

/// Runs the plan's scenarios in order; a failed scenario becomes an `n/a` row.
pub async fn run(stack: &mut Stack, plan: &Plan) -> Vec<Row> {
    let mut rows = Vec::new();
    for &scenario in &plan.scenarios {
        match stack.quiesce(Duration::from_secs(120)).await {
            Ok(true) => {}
            Ok(false) => eprintln!("runq-bench: runs of the previous scenario are still active; going on"),
            Err(e) => eprintln!("runq-bench: could not check for active runs: {e:#}"),
        }
        if scenario == Scenario::Streams
            && let Err(e) = stack.restart_runq().await
        {
            rows.push(Row::na(scenario.to_string(), format!("restarting api and worker: {e:#}")));
            continue;
        }
        eprintln!("runq-bench: {scenario}…");
        let outcome = match scenario {
            Scenario::Growth => growth::run(stack, plan).await,
            Scenario::Ttft => ttft::run(stack, plan).await,
            Scenario::Sync => sync::run(stack, plan).await,
            Scenario::Ratelimit => ratelimit::run(stack, plan).await,
            Scenario::Observability => observability::run(stack, plan).await,
            Scenario::QueueWait => queue_wait::run(stack, plan).await,
            Scenario::Sustained => sustained::run(stack, plan).await,
            Scenario::SustainedWorkspaces => sustained::run_workspaces(stack, plan).await,
            Scenario::Batch => batch::run(stack, plan).await,
            Scenario::Streams => streams::run(stack, plan).await,
        };
        match outcome {
            Ok(scenario_rows) => rows.extend(scenario_rows),
            Err(e) => rows.push(Row::na(scenario.to_string(), format!("error: {e:#}"))),
        }
    }
    rows
}
