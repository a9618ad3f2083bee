//! The job queue: one Redis list per workspace, served round-robin, so a workspace with a
//! 10,000-run batch queued does not hold back another workspace's single run.
//!
//! Keys under the deployment prefix: `jobs:<workspace>` (a list of jobs), `ready` (a list of
//! workspaces with queued jobs, rotated as they are served), `ready:set` (the same workspaces,
//! so each is listed once) and `bell` (what wakes an idle worker). Pushing and popping are Lua
//! scripts, so the four stay consistent.
//!
//! An idle worker blocks on the bell (`BLMPOP`, taking all it holds). The bell holds a job, a
//! ring (an empty element), or a job then a ring:
//! - a job pushed alone to an empty queue goes in the bell: the worker that wakes gets the job
//!   itself and starts it at once, with no pop after the wake-up (fairness has nothing to order);
//! - any other push rings the bell (unless it is rung already): jobs wait in the workspace lists,
//!   and the worker that takes the ring pops them. A pop that leaves jobs behind rings again, so
//!   idle workers wake one after another while there is work, not all at once for every job.
//!
//! A pop empties the bell first (its job is taken, its ring dropped): a bell that is not empty has
//! something no pop has seen.
//!
//! Postgres stays the source of truth: a job only says "run R may be ready". A duplicate is
//! harmless (the claim in Postgres fails and the job is dropped), and a lost one (worker died
//! between pop and claim, Redis flushed) is pushed again by the reconciler.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chat::ChatMessage;
use crate::id::{RunId, VersionId, WorkspaceId};

/// "Run `run` may start." Carries the trace context so the worker's spans join the API's trace,
/// and the id of the request that created the run so the worker's log lines carry it too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub run: RunId,
    pub workspace: WorkspaceId,
    /// When the job was pushed, in microseconds since the Unix epoch (enqueue → start latency).
    pub pushed_at_us: i64,
    /// The workspace's cap on concurrently running runs, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<i32>,
    /// W3C `traceparent` of the span that enqueued the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// `X-Request-ID` of the request that created the run (or of the request being served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The run's first provider request, for a worker to send while it claims the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening: Option<Opening>,
    /// Pushed while the run's admission was being committed: a claim that finds no run yet
    /// looks again for a while (see [`EARLY_WAIT`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub early: bool,
}

/// How long the claim of an [early](Job::early) job waits for its run's admission to commit.
/// A run still missing then was never recorded (its admission failed): the job is dropped.
pub const EARLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Job {
    pub fn new(run: RunId, workspace: WorkspaceId, cap: Option<i32>) -> Self {
        Self {
            run,
            workspace,
            pushed_at_us: now_us(),
            cap,
            traceparent: crate::telemetry::current_traceparent(),
            request_id: crate::telemetry::current_request_id(),
            opening: None,
            early: false,
        }
    }
}

/// What a new run of a new thread sends the provider first, as the API rendered it: the rest
/// (model, tools, provider) is its version's, which a worker keeps from earlier claims. A worker
/// sends this request while the claim is in flight and keeps the answer only if the claim
/// succeeds and the request it would have sent is the same; otherwise it drops the connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opening {
    pub version: VersionId,
    /// The rendered prelude, then the run's input.
    pub messages: Vec<ChatMessage>,
    /// The request's overrides of the version's parameters.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
}

impl Opening {
    /// Most bytes of message text a job carries: a larger run is claimed before its first call.
    pub const MAX_TEXT: usize = 8 * 1024;
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The queue's keys under a deployment prefix.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    ready: String,
    ready_set: String,
    bell: String,
    jobs_prefix: String,
}

impl QueueKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            ready: format!("{prefix}:ready"),
            ready_set: format!("{prefix}:ready:set"),
            bell: format!("{prefix}:bell"),
            jobs_prefix: format!("{prefix}:jobs:"),
        }
    }
}

// KEYS: ready, ready set, bell. ARGV: jobs key prefix, then per workspace: id, count, jobs...
// A lone job for an empty queue goes in the bell; any other push rings it (unless it is rung).
static PUSH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        if #ARGV == 4 and ARGV[3] == '1' and redis.call('SCARD', KEYS[2]) == 0
            and redis.call('LLEN', KEYS[3]) == 0 then
            redis.call('RPUSH', KEYS[3], ARGV[4])
            return 1
        end
        local i = 2
        while i <= #ARGV do
            local ws, n = ARGV[i], tonumber(ARGV[i + 1])
            local key, first, last = ARGV[1] .. ws, i + 2, i + 1 + n
            for s = first, last, 500 do
                redis.call('RPUSH', key, unpack(ARGV, s, math.min(s + 499, last)))
            end
            if redis.call('SADD', KEYS[2], ws) == 1 then redis.call('RPUSH', KEYS[1], ws) end
            i = last + 1
        end
        if redis.call('LINDEX', KEYS[3], -1) ~= '' then redis.call('RPUSH', KEYS[3], '') end
        return 1
        ",
    )
});

// KEYS: ready, ready set, bell. ARGV: jobs key prefix, most jobs to take. The bell's job first
// (the bell is emptied), then one job per ready workspace in turn; rings when jobs are left.
static POP: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local out, max = {}, tonumber(ARGV[2])
        for _, rung in ipairs(redis.call('LPOP', KEYS[3], 2) or {}) do
            if rung ~= '' then out[#out + 1] = rung end
        end
        while #out < max do
            local ws = redis.call('LMOVE', KEYS[1], KEYS[1], 'LEFT', 'RIGHT')
            if not ws then break end
            local key = ARGV[1] .. ws
            local job = redis.call('LPOP', key)
            if job then out[#out + 1] = job end
            if not job or redis.call('LLEN', key) == 0 then
                redis.call('LREM', KEYS[1], 0, ws)
                redis.call('SREM', KEYS[2], ws)
            end
        end
        if redis.call('LLEN', KEYS[1]) > 0 then redis.call('RPUSH', KEYS[3], '') end
        return out
        ",
    )
});

// KEYS: ready set, bell. ARGV: jobs key prefix. Returns {jobs waiting, oldest push time in µs
// (0: none)}.
static DEPTH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local total, oldest = 0, 0
        local function count(head)
            if not head or head == '' then return end
            local ok, job = pcall(cjson.decode, head)
            local at = ok and tonumber(job.pushed_at_us)
            if at and (oldest == 0 or at < oldest) then oldest = at end
        end
        local rung = redis.call('LINDEX', KEYS[2], 0)
        if rung and rung ~= '' then total = 1 end
        count(rung)
        for _, ws in ipairs(redis.call('SMEMBERS', KEYS[1])) do
            local key = ARGV[1] .. ws
            total = total + redis.call('LLEN', key)
            count(redis.call('LINDEX', key, 0))
        end
        return {total, oldest}
        ",
    )
});

/// What waits in the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Jobs waiting, all workspaces together.
    pub jobs: u64,
    /// Push time of the oldest waiting job, in microseconds since the Unix epoch.
    pub oldest_pushed_at_us: Option<i64>,
}

/// Counts waiting jobs and finds the oldest, in one round trip (one list per ready workspace:
/// cache the answer rather than asking on every scrape).
pub async fn depth(conn: &mut impl ConnectionLike, keys: &QueueKeys) -> redis::RedisResult<Depth> {
    let (jobs, oldest): (u64, i64) =
        DEPTH.key(&keys.ready_set).key(&keys.bell).arg(&keys.jobs_prefix).invoke_async(conn).await?;
    Ok(Depth { jobs, oldest_pushed_at_us: (oldest > 0).then_some(oldest) })
}

/// Pushes jobs (of any workspaces) in one round trip. A lone job for an empty queue goes to the
/// bell, and so straight to the worker it wakes.
pub async fn push(conn: &mut impl ConnectionLike, keys: &QueueKeys, jobs: &[Job]) -> redis::RedisResult<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut by_workspace: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for job in jobs {
        let encoded = serde_json::to_string(job).expect("jobs always serialize");
        by_workspace.entry(job.workspace.to_string()).or_default().push(encoded);
    }
    let mut invocation = PUSH.key(&keys.ready);
    invocation.key(&keys.ready_set).key(&keys.bell).arg(&keys.jobs_prefix);
    for (workspace, encoded) in &by_workspace {
        invocation.arg(workspace).arg(encoded.len()).arg(encoded);
    }
    invocation.invoke_async(conn).await
}

/// Takes up to `max` jobs without blocking: the bell's, then one per ready workspace in turn.
pub async fn pop(conn: &mut impl ConnectionLike, keys: &QueueKeys, max: usize) -> redis::RedisResult<Vec<Job>> {
    let raw: Vec<String> = POP
        .key(&keys.ready)
        .key(&keys.ready_set)
        .key(&keys.bell)
        .arg(&keys.jobs_prefix)
        .arg(max.max(1))
        .invoke_async(conn)
        .await?;
    Ok(raw.iter().filter_map(|raw| decode(raw)).collect())
}

/// A job as queued; undecodable entries are dropped (logged): they cannot be retried into
/// validity.
fn decode(raw: &str) -> Option<Job> {
    serde_json::from_str(raw).map_err(|e| tracing::warn!(error = %e, raw, "dropping undecodable job")).ok()
}

/// What ended an idle worker's wait: the bell's job and its ring, either or both, or neither when
/// the wait timed out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wake {
    /// A job pushed alone to the empty queue: it is this worker's, with no pop needed.
    pub job: Option<Job>,
    /// Jobs wait in the workspace lists: pop them.
    pub rung: bool,
}

impl Wake {
    /// Whether the worker pops next: jobs wait in the lists, or the wait timed out (a pop then
    /// looks anyway). After a job alone, it waits again.
    pub fn pops(&self) -> bool {
        self.rung || self.job.is_none()
    }
}

/// Blocks until the bell rings or holds a job (or `timeout_secs` pass), and empties it. Use a
/// connection of its own: a blocking command stalls everything queued behind it on a shared
/// connection. The wait takes what it gets from Redis, so it must be awaited to the end (not
/// dropped) for a job it gets to reach the worker.
pub async fn wait(conn: &mut impl ConnectionLike, keys: &QueueKeys, timeout_secs: f64) -> redis::RedisResult<Wake> {
    let taken: Option<(String, Vec<String>)> = redis::cmd("BLMPOP")
        .arg(timeout_secs)
        .arg(1)
        .arg(&keys.bell)
        .arg("LEFT")
        .arg("COUNT")
        .arg(2)
        .query_async(conn)
        .await?;
    let mut wake = Wake::default();
    for raw in taken.map(|(_, taken)| taken).unwrap_or_default() {
        match raw.as_str() {
            "" => wake.rung = true,
            raw => match decode(raw) {
                Some(job) => wake.job = Some(job),
                // dropped (logged): pop, as after a ring
                None => wake.rung = true,
            },
        }
    }
    Ok(wake)
}
