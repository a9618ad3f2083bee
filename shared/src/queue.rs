//! The job queue: a Redis list per deployment, pushed with `RPUSH` and popped with a blocking
//! `BLMPOP`, so an idle worker wakes the moment a job lands.
//!
//! Jobs are small serde structs. Postgres stays the source of truth: a job only says "run R may
//! be ready". A duplicate is harmless (the claim in Postgres fails and the job is dropped), and a
//! lost one (worker died between pop and claim, Redis flushed) is re-pushed by the reconciler.

use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};

use crate::id::{RunId, WorkspaceId};

/// "Run `run` may start." Carries the trace context so the worker's spans join the API's trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub run: RunId,
    pub workspace: WorkspaceId,
    /// When the job was pushed, in microseconds since the Unix epoch (enqueue → start latency).
    pub pushed_at_us: i64,
    /// W3C `traceparent` of the span that enqueued the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Job {
    pub fn new(run: RunId, workspace: WorkspaceId) -> Self {
        Self { run, workspace, pushed_at_us: now_us(), traceparent: crate::telemetry::current_traceparent() }
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The list key of the deployment's queue.
pub fn key(prefix: &str) -> String {
    format!("{prefix}:jobs")
}

/// Most jobs one `RPUSH` carries; a 10,000-run batch goes as a few pipelined commands.
const PUSH_CHUNK: usize = 1000;

/// Pushes jobs in one round trip.
pub async fn push(conn: &mut impl ConnectionLike, key: &str, jobs: &[Job]) -> redis::RedisResult<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for chunk in jobs.chunks(PUSH_CHUNK) {
        let encoded: Vec<String> =
            chunk.iter().map(|job| serde_json::to_string(job).expect("jobs always serialize")).collect();
        pipe.cmd("RPUSH").arg(key).arg(encoded).ignore();
    }
    pipe.query_async(conn).await
}

/// Pops up to `max` jobs, blocking up to `timeout_secs` for the first. Undecodable entries are
/// dropped (logged): they cannot be retried into validity.
pub async fn pop(
    conn: &mut impl ConnectionLike,
    key: &str,
    max: usize,
    timeout_secs: f64,
) -> redis::RedisResult<Vec<Job>> {
    let popped: Option<(String, Vec<String>)> = redis::cmd("BLMPOP")
        .arg(timeout_secs)
        .arg(1)
        .arg(key)
        .arg("LEFT")
        .arg("COUNT")
        .arg(max.max(1))
        .query_async(conn)
        .await?;
    Ok(popped
        .map(|(_, raw)| raw)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|raw| {
            serde_json::from_str(&raw).map_err(|e| tracing::warn!(error = %e, raw, "dropping undecodable job")).ok()
        })
        .collect())
}
