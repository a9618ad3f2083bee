//! Sustained durable runs/s: for a fixed time, many clients submit `async: true` runs against a
//! zero-latency provider; completions are counted in Postgres (`finished_at` inside the
//! measurement window, which skips the first second of ramp-up). Clients pause while more than
//! a backlog of runs is submitted but not yet answered by the provider (the mock's `completed`
//! counter): when submitting outpaces executing, the queue stays full without growing without
//! bound. CPU use of every process is sampled over the same window, and reported per run beside
//! the WAL the window wrote. The same scenario runs again with the clients spread over four
//! workspaces (three more made as an operator makes them).

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
use crate::stack::{Stack, Wal};

const PROMPT: &str = "[[mock tokens=5]] go";
const TAG: &str = "sustained";
/// Tag of the runs of the several-workspaces variant.
const TAG_WORKSPACES: &str = "sustained-workspaces";
/// Workspaces of the several-workspaces variant, the bench's own included.
const WORKSPACES: usize = 4;
/// Ramp-up left out of the measurement window.
const WARMUP: Duration = Duration::from_secs(1);
/// WAL the server writes without the bench, measured just before the clients start.
const WAL_BACKGROUND: Duration = Duration::from_secs(1);
/// The sustained target, for the per-run CPU budget it implies.
const TARGET_RUNS_PER_SEC: f64 = 3_000.0;

/// Counters shared by the submitting clients.
#[derive(Debug, Default)]
struct Progress {
    accepted: AtomicU64,
    /// Provider calls answered since the start (the mock's `completed`).
    answered: AtomicU64,
    rejected: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// One workspace: the bench's.
pub async fn run(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut rows = measure(stack, plan, TAG, std::slice::from_ref(&stack.admin_key)).await?;
    let waits = stack.queue_waits(TAG).await?;
    let label = "during the sustained scenario (includes waiting behind other jobs)";
    rows.extend(wait_rows(label, &waits, None).into_iter().map(|row| row.informational()));
    Ok(rows)
}

/// The clients spread over [`WORKSPACES`] workspaces.
pub async fn run_workspaces(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut keys = vec![stack.admin_key.clone()];
    for i in 2..=WORKSPACES {
        keys.push(stack.add_workspace(&format!("bench-{i}")).await?);
    }
    measure(stack, plan, TAG_WORKSPACES, &keys).await
}

/// Sustained runs/s with clients taking turns over `keys` (one per workspace), CPU of every
/// process, and CPU and WAL per completed run.
async fn measure(stack: &Stack, plan: &Plan, tag: &'static str, keys: &[String]) -> anyhow::Result<Vec<Row>> {
    let what = match keys.len() {
        1 => "sustained".to_owned(),
        n => format!("sustained, {n} workspaces"),
    };
    let idle0 = stack.wal().await?;
    tokio::time::sleep(WAL_BACKGROUND).await;
    let idle1 = stack.wal().await?;
    let background_wal_per_sec = (idle1.lsn - idle0.lsn) / WAL_BACKGROUND.as_secs_f64();

    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let end = start + plan.sustained_for;
    let mut tasks = JoinSet::new();
    tasks.spawn(watch_provider(stack.clone_mock_probe(), progress.clone(), end));
    for i in 0..plan.sustained_clients {
        let endpoints = Endpoints::of(stack).with_key(&keys[i % keys.len()]);
        tasks.spawn(submit(endpoints, tag, progress.clone(), end, plan.sustained_backlog));
    }

    tokio::time::sleep(WARMUP).await;
    let groups = cpu_groups(stack).await;
    let (cpu0, wal0) = (CpuSnapshot::take(&groups), stack.wal().await?);
    let (t0, accepted0) = (Utc::now(), progress.accepted.load(Ordering::Relaxed));
    tokio::time::sleep_until(end.into()).await;
    let groups = cpu_groups(stack).await;
    let (cpu1, wal1) = (CpuSnapshot::take(&groups), stack.wal().await?);
    let (t1, accepted1) = (Utc::now(), progress.accepted.load(Ordering::Relaxed));
    tasks.join_all().await;

    let drain_start = Instant::now();
    let drained = stack.quiesce(Duration::from_secs(120)).await?;
    let drain = drain_start.elapsed();

    let window = (t1 - t0).as_seconds_f64();
    let finished = finished_between(stack, tag, t0, t1).await?;
    let completed: i64 = finished.iter().map(|w| w.completed).sum();
    let failed: i64 = finished.iter().map(|w| w.other).sum();
    let completed_per_sec = completed as f64 / window;
    let submitted_per_sec = accepted1.saturating_sub(accepted0) as f64 / window;

    let mut notes = vec![format!("{} submitted/s", thousands(submitted_per_sec))];
    if keys.len() > 1 {
        let each: Vec<String> = finished.iter().map(|w| thousands(w.completed as f64 / window)).collect();
        notes.push(format!("per workspace {}", each.join(" / ")));
    }
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
    Ok(vec![
        Row::new(
            format!("{what} durable runs/s (async, zero-latency provider, {window:.0} s window)"),
            format!("{} completed/s ({})", thousands(completed_per_sec), notes.join("; ")),
        )
        .judged(Target::MinPerSec(TARGET_RUNS_PER_SEC), completed_per_sec),
        cpu_row(&what, &cpu0, &cpu1),
        cpu_per_run_row(&what, &cpu0, &cpu1, completed),
        wal_row(&what, &wal0, &wal1, completed, background_wal_per_sec * window),
    ])
}

/// Submits async runs until `end`, pausing while the backlog is full.
async fn submit(endpoints: Endpoints, tag: &'static str, progress: Arc<Progress>, end: Instant, backlog: u64) {
    while Instant::now() < end {
        let outstanding =
            progress.accepted.load(Ordering::Relaxed).saturating_sub(progress.answered.load(Ordering::Relaxed));
        if outstanding > backlog {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let outcome = endpoints.runq(PROMPT, tag, json!({"async": true})).send().await;
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

/// Runs of one workspace that finished inside the window.
#[derive(Debug, sqlx::FromRow)]
struct Finished {
    completed: i64,
    /// Other outcomes than `completed`.
    other: i64,
}

/// Runs tagged `tag` that finished inside the window, per workspace (busiest first).
async fn finished_between(
    stack: &Stack,
    tag: &str,
    t0: DateTime<Utc>,
    t1: DateTime<Utc>,
) -> anyhow::Result<Vec<Finished>> {
    Ok(sqlx::query_as(
        "select count(*) filter (where status = 'completed') as completed,
                count(*) filter (where status <> 'completed') as other
         from runs where metadata->>'bench' = $1 and finished_at >= $2 and finished_at < $3
         group by workspace_id order by 1 desc",
    )
    .bind(tag)
    .bind(t0)
    .bind(t1)
    .fetch_all(stack.db())
    .await?)
}

/// The processes to sample. Postgres is split in two: the backends serving runq's connections
/// in the bench database (runq's cost), and every other Postgres process (the WAL writer and
/// checkpointer, which work for runq too, but also other databases on a shared server).
async fn cpu_groups(stack: &Stack) -> Vec<(String, Group)> {
    let mut groups = Vec::new();
    for name in ["api", "worker", "mock"] {
        if let Some(pid) = stack.pid(name) {
            groups.push((name.to_owned(), Group::Pid(pid)));
        }
    }
    let backends = stack.postgres_backends().await.unwrap_or_default();
    groups.push(("postgres".into(), Group::Pids(backends.clone())));
    groups.push(("other postgres".into(), Group::NamedExcept("postgres", backends)));
    groups.push(("redis".into(), Group::Named("redis-server")));
    groups.push(("bench client".into(), Group::Pid(std::process::id())));
    groups
}

/// `label figure · label figure` of the groups named in `names`, in that order.
fn listed(used: &[(String, f64)], names: &[&str], figure: impl Fn(f64) -> String) -> String {
    names
        .iter()
        .filter_map(|name| used.iter().find(|(label, _)| label == name))
        .map(|(label, value)| format!("{label} {}", figure(*value)))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// runq's processes in the runq column, the rest (mock, bench client, whole machine) beside.
fn cpu_row(what: &str, before: &CpuSnapshot, after: &CpuSnapshot) -> Row {
    let used = after.percent_since(before);
    let list = |names: &[&str]| listed(&used, names, |pct| format!("{pct:.0}"));
    let mut others = list(&["mock", "other postgres", "bench client"]);
    if let Some(machine) = after.machine_percent_since(before) {
        let known: f64 = used.iter().map(|(_, pct)| pct).sum();
        others.push_str(&format!(
            " · anything else {:.0} · machine {machine:.0} of {}",
            (machine - known).max(0.0),
            crate::procfs::nproc() * 100
        ));
    }
    Row::new(
        format!("{what}: CPU, % of one core (postgres: runq's backends; Redis shared with others)"),
        list(&["api", "worker", "postgres", "redis"]),
    )
    .baseline(others)
}

/// CPU milliseconds per completed run: runq's processes (their sum first), then the rest, and
/// the budget the runs/s target leaves on this machine.
fn cpu_per_run_row(what: &str, before: &CpuSnapshot, after: &CpuSnapshot, completed: i64) -> Row {
    let metric = format!("{what}: CPU ms per completed run");
    if completed <= 0 {
        return Row::na(metric, "no run completed in the window");
    }
    let per_run: Vec<(String, f64)> =
        after.ms_since(before).into_iter().map(|(label, ms)| (label, ms / completed as f64)).collect();
    let runq = ["api", "worker", "postgres", "redis"];
    let total: f64 = per_run.iter().filter(|(label, _)| runq.contains(&label.as_str())).map(|(_, ms)| ms).sum();
    let budget = crate::procfs::nproc() as f64 * 1000.0 / TARGET_RUNS_PER_SEC;
    Row::new(metric, format!("{total:.2} ms: {}", listed(&per_run, &runq, |ms| format!("{ms:.2}")))).baseline(format!(
        "{}; budget at {} runs/s on {} cores: {budget:.2} ms",
        listed(&per_run, &["mock", "other postgres"], |ms| format!("{ms:.2}")),
        thousands(TARGET_RUNS_PER_SEC),
        crate::procfs::nproc()
    ))
}

/// WAL bytes (exact, from the WAL position) and records and full-page images (`pg_stat_wal`)
/// per completed run. Both count the whole server: the WAL written while idle just before is
/// shown beside, scaled to the window.
fn wal_row(what: &str, before: &Wal, after: &Wal, completed: i64, background_bytes: f64) -> Row {
    let metric = format!("{what}: WAL per completed run (whole server)");
    if completed <= 0 {
        return Row::na(metric, "no run completed in the window");
    }
    let (bytes, records, fpi) = after.per_run_since(before, completed as f64);
    let written = after.lsn - before.lsn;
    let share = if written > 0.0 { background_bytes / written * 100.0 } else { 0.0 };
    Row::new(metric, format!("{:.1} KiB (≈ {records:.0} records, {fpi:.2} full-page images)", bytes / 1024.0)).baseline(
        format!(
            "written while idle just before, at that rate over the window: {:.1} KiB/run ({share:.0} % of it)",
            background_bytes / completed as f64 / 1024.0
        ),
    )
}
