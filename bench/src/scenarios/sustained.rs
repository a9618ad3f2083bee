//! Sustained durable runs/s: for a fixed time, many clients submit `async: true` runs against a
//! zero-latency provider; completions are counted in Postgres (`finished_at` inside the
//! measurement window, which skips the first second of ramp-up). Clients pause while more than
//! a backlog of runs is submitted but not yet answered by the provider (the mock's `completed`
//! counter): when submitting outpaces executing, the queue stays full without growing without
//! bound. CPU use of every process is sampled over the same window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

use super::Plan;
use super::pairs::Endpoints;
use super::queue_wait::wait_rows;
use crate::procfs::{CpuSnapshot, Group};
use crate::report::{Row, Target, thousands};
use crate::stack::Stack;

const PROMPT: &str = "[[mock tokens=5]] go";
const TAG: &str = "sustained";
/// Ramp-up left out of the measurement window.
const WARMUP: Duration = Duration::from_secs(1);

/// Counters shared by the submitting clients.
#[derive(Debug, Default)]
struct Progress {
    accepted: AtomicU64,
    /// Provider calls answered since the start (the mock's `completed`).
    answered: AtomicU64,
    rejected: AtomicU64,
    first_error: Mutex<Option<String>>,
}

pub async fn run(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let groups = cpu_groups(stack);
    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let end = start + plan.sustained_for;
    let mut tasks = JoinSet::new();
    tasks.spawn(watch_provider(stack.clone_mock_probe(), progress.clone(), end));
    for _ in 0..plan.sustained_clients {
        tasks.spawn(submit(Endpoints::of(stack), progress.clone(), end, plan.sustained_backlog));
    }

    tokio::time::sleep(WARMUP).await;
    let (cpu0, t0, accepted0) = (CpuSnapshot::take(&groups), Utc::now(), progress.accepted.load(Ordering::Relaxed));
    tokio::time::sleep_until(end.into()).await;
    let (cpu1, t1, accepted1) = (CpuSnapshot::take(&groups), Utc::now(), progress.accepted.load(Ordering::Relaxed));
    tasks.join_all().await;

    let drain_start = Instant::now();
    let drained = stack.quiesce(Duration::from_secs(120)).await?;
    let drain = drain_start.elapsed();

    let window = (t1 - t0).as_seconds_f64();
    let (completed, failed) = finished_between(stack, t0, t1).await?;
    let completed_per_sec = completed as f64 / window;
    let submitted_per_sec = accepted1.saturating_sub(accepted0) as f64 / window;

    let mut notes = vec![format!("{} submitted/s", thousands(submitted_per_sec))];
    if failed > 0 {
        notes.push(format!("{failed} runs not completed"));
    }
    let rejected = progress.rejected.load(Ordering::Relaxed);
    if rejected > 0 {
        let first = progress.first_error.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default();
        notes.push(format!("{rejected} submissions refused, first: {first}"));
    }
    notes.push(if drained {
        format!("backlog drained {:.1} s after submission stopped", drain.as_secs_f64())
    } else {
        "backlog not drained after 120 s".into()
    });
    let mut rows = vec![
        Row::new(
            format!("sustained durable runs/s (async, zero-latency provider, {window:.0} s window)"),
            format!("{} completed/s ({})", thousands(completed_per_sec), notes.join("; ")),
        )
        .judged(Target::MinPerSec(3_000.0), completed_per_sec),
        cpu_row(&cpu0, &cpu1),
    ];
    let waits = stack.queue_waits(TAG).await?;
    let label = "during the sustained scenario (includes waiting behind other jobs)";
    rows.extend(wait_rows(label, &waits, None).into_iter().map(|row| row.informational()));
    Ok(rows)
}

/// Submits async runs until `end`, pausing while the backlog is full.
async fn submit(endpoints: Endpoints, progress: Arc<Progress>, end: Instant, backlog: u64) {
    while Instant::now() < end {
        let outstanding =
            progress.accepted.load(Ordering::Relaxed).saturating_sub(progress.answered.load(Ordering::Relaxed));
        if outstanding > backlog {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let outcome = endpoints.runq(PROMPT, TAG, json!({"async": true})).send().await;
        match outcome {
            Ok(res) if res.status() == StatusCode::ACCEPTED => {
                progress.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = res.bytes().await;
            }
            outcome => {
                progress.rejected.fetch_add(1, Ordering::Relaxed);
                let error = match outcome {
                    Ok(res) => format!("{} {}", res.status(), res.text().await.unwrap_or_default()),
                    Err(e) => e.to_string(),
                };
                progress.first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(error);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Keeps `progress.answered` up to date from the mock's counters until `end`.
async fn watch_provider(probe: crate::stack::MockProbe, progress: Arc<Progress>, end: Instant) {
    let base = probe.completed().await.unwrap_or(0);
    while Instant::now() < end {
        if let Ok(completed) = probe.completed().await {
            progress.answered.store(completed.saturating_sub(base), Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs of this scenario that finished inside the window: (completed, other outcomes).
async fn finished_between(stack: &Stack, t0: DateTime<Utc>, t1: DateTime<Utc>) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "select count(*) filter (where status = 'completed'), count(*) filter (where status <> 'completed')
         from runs where metadata->>'bench' = $1 and finished_at >= $2 and finished_at < $3",
    )
    .bind(TAG)
    .bind(t0)
    .bind(t1)
    .fetch_one(stack.db())
    .await?)
}

fn cpu_groups(stack: &Stack) -> Vec<(String, Group)> {
    let mut groups = Vec::new();
    for name in ["api", "worker", "mock"] {
        if let Some(pid) = stack.pid(name) {
            groups.push((name.to_owned(), Group::Pid(pid)));
        }
    }
    groups.push(("postgres".into(), Group::Named("postgres")));
    groups.push(("redis".into(), Group::Named("redis-server")));
    groups.push(("bench client".into(), Group::Pid(std::process::id())));
    groups
}

/// runq's processes in the runq column, the rest (mock, bench client, whole machine) beside.
fn cpu_row(before: &CpuSnapshot, after: &CpuSnapshot) -> Row {
    let used = after.percent_since(before);
    let list = |names: &[&str]| {
        used.iter()
            .filter(|(label, _)| names.contains(&label.as_str()))
            .map(|(label, pct)| format!("{label} {pct:.0}"))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    let mut others = list(&["mock", "bench client"]);
    if let Some(machine) = after.machine_percent_since(before) {
        let known: f64 = used.iter().map(|(_, pct)| pct).sum();
        others.push_str(&format!(
            " · anything else {:.0} · machine {machine:.0} of {}",
            (machine - known).max(0.0),
            crate::procfs::nproc() * 100
        ));
    }
    Row::new(
        "sustained: CPU, % of one core (Postgres/Redis shared with others)",
        list(&["api", "worker", "postgres", "redis"]),
    )
    .baseline(others)
}
