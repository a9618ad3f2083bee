//! Whether a run's cost grows with the runs table: Postgres CPU per run of sequential sync runs
//! (`stream: false`) beside streamed ones (`stream: true`), first with the table as the bench
//! starts it (no finished run but the smoke test's), then with 100,000 finished runs in it, and
//! again once `analyze` has given the planner statistics of that table.
//!
//! The finished runs are copies of one of this scenario's own completed sync runs (the run row,
//! its thread and its two messages, with ids and times of their own, 1 ms apart and older than
//! every live run), written by one `insert … select generate_series` statement. The API and the
//! worker keep their connections (and the plans Postgres cached for their prepared statements)
//! throughout, as a long-running deployment does: the first 100,000 row shows the plans and
//! statistics the server keeps by itself (none while autovacuum is off), the second what a fresh
//! `analyze` gives. Afterwards the runs, threads and messages are truncated, so the scenarios
//! after this one see the table they always saw. The copy names the columns of the runs table:
//! a migration that moves them must update [`SEED`] (the row says `n/a` until then).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use super::Plan;
use super::pairs::{self, Endpoints};
use crate::procfs::{CpuSnapshot, Group};
use crate::report::{Row, thousands};
use crate::stack::Stack;
use crate::stats::{Summary, millis, ms};

const PROMPT: &str = "[[mock tokens=5]] short answer please";
/// Runs before each measurement, not counted (connections opened, caches warm).
const WARMUP_RUNS: usize = 10;
/// Finished runs written into the table between the two measurements.
pub const SEEDED: i64 = 100_000;

/// Copies run `$1` (finished, with its thread and messages) `$2` times. Ids are UUIDv7-shaped
/// (millisecond time first) like runq's own, so the indexes grow as they do in use.
const SEED: &str = "
with t as (select * from runs where id = $1),
s as materialized (
    select t.created_at - ($2 - g + 1) * interval '1 millisecond' as at,
           (lpad(to_hex((extract(epoch from t.created_at - ($2 - g + 1) * interval '1 millisecond') * 1000)::bigint),
                 12, '0')
            || '7' || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid as id
    from t, generate_series(1, $2) g),
named as (select s.*, 'thr_' || replace(s.id::text, '-', '') as thread from s),
new_threads as (
    insert into threads (workspace_id, id, created_at, updated_at)
    select t.workspace_id, n.thread, n.at, n.at from named n, t),
new_runs as (
    insert into runs (id, workspace_id, agent_id, version_id, thread_id, status, attempt, max_attempts, prelude,
                      input, parameters, metadata, output, transcript, usage, error, events, cancel_on_disconnect,
                      timeout_ms, deadline_at, created_at, enqueued_at, queue_wait_us, started_at, first_token_at,
                      finished_at)
    select n.id, t.workspace_id, t.agent_id, t.version_id, n.thread, t.status, t.attempt, t.max_attempts, t.prelude,
           t.input, t.parameters, '{\"bench\": \"seed\"}', t.output, t.transcript, t.usage, t.error, t.events,
           t.cancel_on_disconnect, t.timeout_ms, n.at + t.timeout_ms * interval '1 millisecond', n.at, n.at,
           t.queue_wait_us, n.at, n.at, n.at
    from named n, t)
insert into messages (id, workspace_id, thread_id, run_id, role, content, created_at)
select case when m.id = t.id then n.id else gen_random_uuid() end, t.workspace_id, n.thread, n.id, m.role,
       m.content, n.at
from named n, t join messages m on m.run_id = t.id";

/// How a measured run is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Sync,
    Stream,
}

impl Delivery {
    fn tag(self) -> &'static str {
        match self {
            Delivery::Sync => "growth-sync",
            Delivery::Stream => "growth-stream",
        }
    }
}

/// Per-run figures of one measurement.
#[derive(Debug)]
struct Measured {
    /// CPU of runq's Postgres backends per run, in milliseconds.
    postgres_ms: f64,
    /// CPU of the API and the worker per run, in milliseconds.
    runq_ms: f64,
    /// Request → whole answer (sync JSON, or the stream up to `[DONE]`).
    latency: Summary,
}

impl Measured {
    fn describe(&self) -> String {
        format!(
            "{:.2} ms Postgres CPU/run (api + worker {:.2} ms; p50 {} ms)",
            self.postgres_ms,
            self.runq_ms,
            ms(self.latency.p50)
        )
    }
}

pub async fn run(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let outcome = measure_all(stack, plan.growth_runs).await;
    truncate(stack).await?;
    let (empty, seeded) = outcome?;

    let metric = |finished: &str| format!("sync run c=1: Postgres CPU per run, {finished} finished runs in the table");
    let metric_with = |finished: &str, statistics: &str| format!("{}, {statistics}", metric(finished));
    let mut rows =
        vec![Row::new(metric("0"), empty[0].describe()).baseline(format!("stream: true: {}", empty[1].describe()))];
    let seeded_count = thousands(SEEDED as f64);
    let Seeded { took, autovacuum, kept, analyzed } = match seeded {
        Ok(seeded) => seeded,
        Err(e) => {
            rows.push(Row::na(metric(&seeded_count), format!("seeding failed: {e:#}")));
            return Ok(rows);
        }
    };
    let growth = |after: &[Measured; 2]| {
        let ratio = |i: usize| after[i].postgres_ms / empty[i].postgres_ms.max(1e-9);
        (ratio(0), ratio(1))
    };
    let (sync, stream) = growth(&kept);
    rows.push(
        Row::new(
            metric_with(&seeded_count, &format!("statistics as the server keeps them (autovacuum {autovacuum})")),
            format!("{} (×{sync:.2} vs 0; seeded in {:.1} s)", kept[0].describe(), took.as_secs_f64()),
        )
        .baseline(format!("stream: true: {} (×{stream:.2} vs 0)", kept[1].describe())),
    );
    let (sync, stream) = growth(&analyzed);
    rows.push(
        Row::new(metric_with(&seeded_count, "after analyze"), format!("{} (×{sync:.2} vs 0)", analyzed[0].describe()))
            .baseline(format!("stream: true: {} (×{stream:.2} vs 0)", analyzed[1].describe())),
    );
    Ok(rows)
}

/// The table after seeding, and the measurements on it.
struct Seeded {
    took: Duration,
    /// The server's `autovacuum` setting (`on`/`off`).
    autovacuum: String,
    /// Measured before anything analyzed the seeded table.
    kept: [Measured; 2],
    /// Measured after `analyze`.
    analyzed: [Measured; 2],
}

/// Sync and stream measurements on the empty table, then (unless seeding fails) on the seeded
/// one, before and after `analyze`.
async fn measure_all(stack: &Stack, n: usize) -> anyhow::Result<([Measured; 2], anyhow::Result<Seeded>)> {
    let empty = [measure(stack, Delivery::Sync, n).await?, measure(stack, Delivery::Stream, n).await?];
    let template: Uuid = sqlx::query_scalar(
        "select id from runs where metadata->>'bench' = $1 and status = 'completed' order by created_at desc limit 1",
    )
    .bind(Delivery::Sync.tag())
    .fetch_optional(stack.db())
    .await?
    .context("no completed sync run to copy")?;
    let took = match seed(stack, template, SEEDED).await {
        Ok(took) => took,
        Err(e) => return Ok((empty, Err(e))),
    };
    let autovacuum: String = sqlx::query_scalar("select current_setting('autovacuum')").fetch_one(stack.db()).await?;
    let kept = [measure(stack, Delivery::Sync, n).await?, measure(stack, Delivery::Stream, n).await?];
    sqlx::query("analyze runs, threads, messages").execute(stack.db()).await?;
    let analyzed = [measure(stack, Delivery::Sync, n).await?, measure(stack, Delivery::Stream, n).await?];
    Ok((empty, Ok(Seeded { took, autovacuum, kept, analyzed })))
}

/// `n` sequential runs (after a few unmeasured ones), with the CPU the API, the worker and
/// runq's Postgres backends spent on them.
async fn measure(stack: &Stack, delivery: Delivery, n: usize) -> anyhow::Result<Measured> {
    let endpoints = Endpoints::of(stack);
    for _ in 0..WARMUP_RUNS {
        one(&endpoints, delivery).await?;
    }
    let before = CpuSnapshot::take(&cpu_groups(stack).await?);
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        latencies.push(millis(one(&endpoints, delivery).await?));
    }
    let after = CpuSnapshot::take(&cpu_groups(stack).await?);
    let used = after.ms_since(&before);
    let per_run = |names: &[&str]| {
        used.iter().filter(|(label, _)| names.contains(&label.as_str())).map(|(_, ms)| ms).sum::<f64>() / n as f64
    };
    Ok(Measured {
        postgres_ms: per_run(&["postgres"]),
        runq_ms: per_run(&["api", "worker"]),
        latency: Summary::of_ms(&latencies).context("no runs measured")?,
    })
}

/// One run, answered whole: the sync JSON, or the stream up to `[DONE]`.
async fn one(endpoints: &Endpoints, delivery: Delivery) -> anyhow::Result<Duration> {
    let stream = delivery == Delivery::Stream;
    let request = endpoints.runq(PROMPT, delivery.tag(), json!({"stream": stream}));
    if !stream {
        let (elapsed, body) = pairs::time_whole(request, StatusCode::OK).await?;
        ensure!(body["status"] == "completed", "run not completed: {body}");
        return Ok(elapsed);
    }
    let start = Instant::now();
    let res = request.send().await?;
    let status = res.status();
    let body = res.bytes().await?;
    let elapsed = start.elapsed();
    ensure!(status == StatusCode::OK, "{status}: {}", String::from_utf8_lossy(&body));
    let text = String::from_utf8_lossy(&body);
    ensure!(text.contains("\"type\":\"finish\"") && text.contains("[DONE]"), "stream did not finish: {text}");
    Ok(elapsed)
}

async fn cpu_groups(stack: &Stack) -> anyhow::Result<Vec<(String, Group)>> {
    let mut groups = vec![("postgres".to_owned(), Group::Pids(stack.postgres_backends().await?))];
    for name in ["api", "worker"] {
        if let Some(pid) = stack.pid(name) {
            groups.push((name.to_owned(), Group::Pid(pid)));
        }
    }
    Ok(groups)
}

/// Writes `n` finished copies of run `template`; returns how long it took. Foreign keys are not checked for the copies (`session_replication_role = replica`):
/// they reference what the template references.
async fn seed(stack: &Stack, template: Uuid, n: i64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut tx = stack.db().begin().await?;
    sqlx::query("set local session_replication_role = replica").execute(&mut *tx).await?;
    sqlx::query(SEED).bind(template).bind(n).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(start.elapsed())
}

/// Empties the tables the runs filled and forgets the statistics `analyze` gathered on them, so
/// later scenarios start from the table (and the plans) they always started from.
async fn truncate(stack: &Stack) -> anyhow::Result<()> {
    sqlx::query("truncate messages, idempotency_keys, approvals, runs, threads").execute(stack.db()).await?;
    sqlx::query(
        "delete from pg_statistic
         where starelid in ('messages'::regclass, 'idempotency_keys'::regclass, 'runs'::regclass, 'threads'::regclass)",
    )
    .execute(stack.db())
    .await?;
    Ok(())
}
