//! Enqueue → worker start: `queue_wait_us` (job push to the worker taking it, written by the
//! worker) of sync runs sent one after the other (the idle-wake latency), and of sync runs from
//! 64 concurrent clients (at most 64 outstanding, so the worker is busy but never behind).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::ensure;
use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

use super::Plan;
use super::pairs::{self, Endpoints};
use crate::report::{Row, Target};
use crate::stack::Stack;
use crate::stats::{Summary, ms};

const PROMPT: &str = "[[mock tokens=2]] ping";

pub async fn run(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let (loaded_concurrency, loaded_runs) = plan.queue_loaded;
    for (label, concurrency, runs) in [
        ("idle, sequential sync runs".to_owned(), 1, plan.queue_idle_runs),
        (format!("loaded, sync runs at c={loaded_concurrency}"), loaded_concurrency, loaded_runs),
    ] {
        let tag = format!("queue-c{concurrency}");
        let failed = sync_runs(Endpoints::of(stack), &tag, concurrency, runs).await;
        let waits = stack.queue_waits(&tag).await?;
        rows.extend(wait_rows(&label, &waits, failed));
    }
    Ok(rows)
}

/// `runs` sync runs from `concurrency` clients; returns the first failure, if any.
async fn sync_runs(endpoints: Endpoints, tag: &str, concurrency: usize, runs: usize) -> Option<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = JoinSet::new();
    for _ in 0..concurrency {
        let (next, endpoints, tag) = (next.clone(), endpoints.clone(), tag.to_owned());
        clients.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < runs {
                let request = endpoints.runq(PROMPT, &tag, json!({}));
                let outcome = pairs::time_whole(request, StatusCode::OK).await.and_then(|(_, body)| {
                    ensure!(body["status"] == "completed", "run not completed: {body}");
                    Ok(())
                });
                if let Err(e) = outcome {
                    return Some(format!("{e:#}"));
                }
            }
            None
        });
    }
    clients.join_all().await.into_iter().flatten().next()
}

/// p50 and p99 of `waits_us` judged against the targets, p90 and the count beside them.
pub fn wait_rows(label: &str, waits_us: &[i64], failed: Option<String>) -> Vec<Row> {
    let metric = |p: &str| format!("enqueue → worker start, {label}, {p}");
    let Some(summary) = Summary::of_us(waits_us) else {
        let reason = failed.unwrap_or_else(|| "no run recorded queue_wait_us".into());
        return vec![
            Row::na(metric("p50"), &reason).unjudged(Target::MaxMs(0.5)),
            Row::na(metric("p99"), &reason).unjudged(Target::MaxMs(2.0)),
        ];
    };
    let note = match failed {
        Some(e) => format!(" (some runs failed: {e})"),
        None => String::new(),
    };
    vec![
        Row::new(
            metric("p50"),
            format!("{} ms (p90 {} ms, {} runs){note}", ms(summary.p50), ms(summary.p90), summary.n),
        )
        .judged(Target::MaxMs(0.5), summary.p50),
        Row::new(metric("p99"), format!("{} ms", ms(summary.p99))).judged(Target::MaxMs(2.0), summary.p99),
    ]
}
