//! Runs: recorded by the API, claimed and finished by workers. Every state change is a
//! conditional update, so a duplicate job or a worker that lost its lease changes nothing.
//!
//! A run is looked up by its id alone and its workspace compared on the row it returns. With
//! `and workspace_id = $2` in the query, the plan Postgres caches for a prepared statement while
//! the table is small (or has no statistics) may walk the workspace's runs through an index led
//! by `workspace_id` and filter them by id: a read that grows with every run the workspace ever
//! had, on every sync run (issue 11).
//!
//! For the same reason, a statement that names its runs by id (`id = any($1)`, or a join on the
//! ids it was given) checks only their `status`, never `finished_at is null`: that is the
//! predicate of `runs_live`, the index of live runs, and a planner without statistics may AND
//! that index with the key. A finish of 32 runs then read every live-run entry the table ever had
//! (76,000 at 100,000 runs, 5–18 ms), since nothing vacuumed the entries of runs that moved on.
//!
//! A run is live (queued, running, or waiting for a person) exactly while it has no
//! `finished_at` (a check constraint says so). Statements that look for live runs say
//! `finished_at is null` to read `runs_live`, and none of them needs `status` in an index: the
//! updates that change only a run's status, lease or progress (claims, renewals, pauses) are HOT.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool};

use crate::chat::{ChatMessage, Usage};
use crate::db::Paged;
use crate::db::approvals::NewApproval;
use crate::db::operations::NewOperation;
use crate::db::tools::ToolDef;
use crate::domain::Page;
use crate::events::{self, Event};
use crate::group::Statement;
use crate::id::{AgentId, ApprovalId, MessageId, OperationId, RunId, VersionId, WorkspaceId};
use crate::{Error, Result};

/// Where a run is in its life: `queued → running → completed | failed | cancelled | timed_out`
/// (retries go `running → queued`); a run whose tool call waits for a person is
/// `requires_action` until it is decided, then `queued` again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    RequiresAction,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl RunStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::RequiresAction => "requires_action",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    /// Whether the run has ended for good.
    pub const fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running | Self::RequiresAction)
    }
}

/// A run as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRecord {
    pub id: RunId,
    pub workspace_id: WorkspaceId,
    pub agent_id: AgentId,
    pub version_id: VersionId,
    pub thread_id: String,
    pub operation_id: Option<OperationId>,
    pub item_index: Option<i32>,
    pub status: RunStatus,
    pub attempt: i32,
    pub input: Json<Vec<ChatMessage>>,
    pub output: Option<String>,
    pub usage: Option<Json<Usage>>,
    pub error: Option<Json<Value>>,
    pub metadata: Json<Value>,
    /// Stop the run when a streaming client goes away.
    pub cancel_on_disconnect: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub first_token_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl RunRecord {
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// Wall time from start to finish, in milliseconds.
    pub fn execution_time_ms(&self) -> Option<i64> {
        Some((self.finished_at? - self.started_at?).num_milliseconds())
    }
}

macro_rules! record_columns {
    () => {
        "id, workspace_id, agent_id, version_id, thread_id, operation_id, item_index, status, attempt, input,
         output, usage, error, metadata, cancel_on_disconnect, created_at, started_at, first_token_at, finished_at"
    };
}

/// A run ready to be recorded (built by [`crate::admission`]).
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: RunId,
    pub workspace_id: WorkspaceId,
    pub agent_id: AgentId,
    pub version_id: VersionId,
    pub thread_id: String,
    pub prelude: Vec<ChatMessage>,
    pub input: Vec<ChatMessage>,
    pub parameters: Map<String, Value>,
    pub metadata: Value,
    pub cancel_on_disconnect: bool,
    /// Time limit from the first start, in milliseconds.
    pub timeout_ms: i32,
    /// The request's `webhook` URL, posted to when the run ends.
    pub webhook_url: Option<String>,
    /// Who the run acts for (sent to tools as `X-End-User-ID`).
    pub end_user_id: Option<String>,
    /// The run starts a thread of its own (one the request did not name): no history to read.
    pub opens_thread: bool,
}

/// Inserts runs (of any workspaces) and the operation that collects them if any, in one statement
/// (a 10,000-item batch is one round trip). The threads they name need no row: a thread started
/// by a run exists through its runs (see [`crate::db::threads`]).
pub async fn insert_many<R: Borrow<NewRun>>(
    db: impl PgExecutor<'_>,
    operation: Option<&NewOperation>,
    runs: &[R],
) -> Result<()> {
    insert_admissions(db, &[(operation, runs)]).await
}

/// [`insert_many`] for many admissions at once (a group of concurrent ones): each with its runs
/// and its operation, one statement for all.
pub async fn insert_admissions<R: Borrow<NewRun>>(
    db: impl PgExecutor<'_>,
    admissions: &[(Option<&NewOperation>, &[R])],
) -> Result<()> {
    let operations: Vec<&NewOperation> = admissions.iter().filter_map(|(operation, _)| *operation).collect();
    let mut runs: Vec<&NewRun> = Vec::new();
    let mut collected: Vec<Option<OperationId>> = Vec::new();
    let mut indexes: Vec<Option<i32>> = Vec::new();
    for (operation, admitted) in admissions {
        for (index, run) in admitted.iter().enumerate() {
            runs.push(run.borrow());
            collected.push(operation.map(|op| op.id));
            indexes.push(operation.map(|_| i32::try_from(index).unwrap_or(i32::MAX)));
        }
    }
    let ids: Vec<RunId> = runs.iter().map(|r| r.id).collect();
    let workspaces: Vec<WorkspaceId> = runs.iter().map(|r| r.workspace_id).collect();
    let agents: Vec<AgentId> = runs.iter().map(|r| r.agent_id).collect();
    let versions: Vec<VersionId> = runs.iter().map(|r| r.version_id).collect();
    let threads: Vec<&str> = runs.iter().map(|r| r.thread_id.as_str()).collect();
    let preludes: Vec<Json<&Vec<ChatMessage>>> = runs.iter().map(|r| Json(&r.prelude)).collect();
    let inputs: Vec<Json<&Vec<ChatMessage>>> = runs.iter().map(|r| Json(&r.input)).collect();
    let parameters: Vec<Json<&Map<String, Value>>> = runs.iter().map(|r| Json(&r.parameters)).collect();
    let metadata: Vec<Json<&Value>> = runs.iter().map(|r| Json(&r.metadata)).collect();
    let cancel: Vec<bool> = runs.iter().map(|r| r.cancel_on_disconnect).collect();
    let timeouts: Vec<i32> = runs.iter().map(|r| r.timeout_ms).collect();
    let webhooks: Vec<Option<&str>> = runs.iter().map(|r| r.webhook_url.as_deref()).collect();
    let end_users: Vec<Option<&str>> = runs.iter().map(|r| r.end_user_id.as_deref()).collect();
    let op_ids: Vec<OperationId> = operations.iter().map(|o| o.id).collect();
    let op_workspaces: Vec<WorkspaceId> = operations.iter().map(|o| o.workspace_id).collect();
    let op_kinds: Vec<&str> = operations.iter().map(|o| o.kind).collect();
    let op_totals: Vec<i32> = operations.iter().map(|o| o.total).collect();
    sqlx::query(
        "with new_operations as (
             insert into operations (id, workspace_id, kind, total)
             select * from unnest($16::uuid[], $17::uuid[], $18::text[], $19::int[]))
         insert into runs (id, workspace_id, agent_id, version_id, operation_id, thread_id, item_index,
                           prelude, input, parameters, metadata, cancel_on_disconnect, timeout_ms, webhook_url,
                           end_user_id)
         select r.id, r.workspace_id, r.agent_id, r.version_id, r.operation_id, r.thread_id, r.item_index,
                r.prelude, r.input, r.parameters, r.metadata, r.cancel, r.timeout_ms, r.webhook_url, r.end_user_id
         from unnest($5::uuid[], $6::text[], $7::int[], $8::jsonb[], $9::jsonb[], $10::jsonb[], $11::jsonb[],
                     $12::bool[], $13::int[], $2::uuid[], $3::uuid[], $14::text[], $15::text[], $1::uuid[],
                     $4::uuid[])
              as r(id, thread_id, item_index, prelude, input, parameters, metadata, cancel, timeout_ms,
                   agent_id, version_id, webhook_url, end_user_id, workspace_id, operation_id)",
    )
    .bind(&workspaces)
    .bind(&agents)
    .bind(&versions)
    .bind(&collected)
    .bind(&ids)
    .bind(&threads)
    .bind(&indexes)
    .bind(&preludes)
    .bind(&inputs)
    .bind(&parameters)
    .bind(&metadata)
    .bind(&cancel)
    .bind(&timeouts)
    .bind(&webhooks)
    .bind(&end_users)
    .bind(&op_ids)
    .bind(&op_workspaces)
    .bind(&op_kinds)
    .bind(&op_totals)
    .execute(db)
    .await?;
    Ok(())
}

/// What a worker needs to execute a claimed run, read in the same round trip as the claim.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: RunId,
    pub workspace_id: WorkspaceId,
    pub version_id: VersionId,
    pub thread_id: String,
    pub attempt: i32,
    pub prelude: Json<Vec<ChatMessage>>,
    pub input: Json<Vec<ChatMessage>>,
    pub history: Json<Vec<ChatMessage>>,
    pub parameters: Json<Map<String, Value>>,
    pub version_parameters: Json<Map<String, Value>>,
    pub model: String,
    pub tools: Vec<String>,
    pub max_steps: i32,
    pub provider_kind: String,
    pub base_url: String,
    pub api_key_sealed: Option<Vec<u8>>,
    pub deadline_at: DateTime<Utc>,
    /// What earlier attempts did that must not be done again (tool steps), if anything.
    pub progress: Option<Json<Progress>>,
    pub end_user_id: Option<String>,
    /// The workspace tools the version names.
    pub http_tools: Json<Vec<ToolDef>>,
}

/// A run's tool steps so far: the messages after its input, and the tokens they cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub messages: Vec<ChatMessage>,
    pub usage: Usage,
}

/// The claim statement, for one run (`id = $1`) or many (`id = any($1)`). A lone claim names its
/// run as a scalar: with a one-element array, a table without statistics (grown from empty,
/// autovacuum off) was read whole on each claim in the bench's growth scenario (40–50 ms of
/// Postgres CPU per run at 100,000 finished runs), which the scalar form never is.
///
/// "Does an earlier run of the thread still live?" is a scalar subquery (`limit 1`), not `not
/// exists`: Postgres turns `not exists` into an anti-join, and a plan made while the table was
/// small walked every live run (or, for a group, the workspace's whole history through
/// `runs_workspace_created`) and filtered by thread, 6.9 ms per lone claim behind the bench's
/// sustained backlog (pg_stat_statements). The subquery is run per claimed run with its
/// workspace, thread and position bound, one range of `runs_live`.
macro_rules! claim_sql {
    ($runs:literal) => {
        concat!(
            "with claimed as (
         update runs set status = 'running', attempt = attempt + 1, lease_owner = $2,
                lease_expires_at = now() + $3 * interval '1 millisecond', started_at = coalesce(started_at, now()),
                deadline_at = coalesce(deadline_at, now() + timeout_ms * interval '1 millisecond')
         where ",
            $runs,
            " and status = 'queued'
           and (select true from runs earlier
                where earlier.workspace_id = runs.workspace_id and earlier.thread_id = runs.thread_id
                  and earlier.finished_at is null
                  and (earlier.created_at, earlier.id) < (runs.created_at, runs.id)
                limit 1) is null
           and ($4::int is null or (select count(*) from runs busy
                                    where busy.workspace_id = runs.workspace_id and busy.finished_at is null
                                      and busy.status = 'running') < $4)
         returning id, workspace_id, version_id, thread_id, attempt, prelude, input, parameters, deadline_at,
                   progress, end_user_id)
     select c.id, c.workspace_id, c.version_id, c.thread_id, c.attempt, c.prelude, c.input, c.parameters, c.deadline_at,
            c.progress, c.end_user_id,
            coalesce((select jsonb_agg(jsonb_build_object(
                          'name', t.name, 'description', t.description, 'parameters', t.parameters, 'url', t.url,
                          'method', t.method, 'headers', t.headers, 'auth_header', t.auth_header,
                          'auth_value_sealed', encode(t.auth_value_sealed, 'hex'), 'timeout_ms', t.timeout_ms,
                          'requires_approval', t.requires_approval))
                      from tools t where t.workspace_id = c.workspace_id and t.name = any (v.tools)), '[]')
                as http_tools,
            coalesce((select jsonb_agg(m.content order by m.run_id, m.id) from messages m
                      where m.workspace_id = c.workspace_id and m.thread_id = c.thread_id), '[]') as history,
            v.parameters as version_parameters, v.model, v.tools, v.max_steps,
            p.kind as provider_kind, p.base_url, p.api_key_sealed
     from claimed c
     join agent_versions v on v.id = c.version_id
     join providers p on p.id = v.provider_id"
        )
    };
}

const CLAIM_ONE: &str = claim_sql!("id = $1");
const CLAIM_MANY: &str = claim_sql!("id = any($1)");

/// Takes a queued run for `owner` (attempt + 1, lease until now + `lease`). Returns `None` when
/// the run is not queued (a duplicate job), an earlier run of its thread has not finished (it is
/// started when that one finishes), or its workspace already runs `cap` runs (it is started when
/// one of them finishes). Claims under a cap are serialized per workspace by an advisory lock, so
/// the cap holds across any number of workers; claims without one are better made together
/// ([`Claims`]).
pub async fn claim(
    db: &PgPool,
    run: RunId,
    workspace: WorkspaceId,
    owner: &str,
    lease: Duration,
    cap: Option<i32>,
) -> Result<Option<Claimed>> {
    let claim = sqlx::query_as(CLAIM_ONE).bind(run).bind(owner).bind(millis(lease)).bind(cap);
    let Some(_) = cap else { return Ok(claim.fetch_optional(db).await?) };
    let mut tx = db.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::text, 0))")
        .bind(workspace)
        .execute(&mut *tx)
        .await?;
    let claimed = claim.fetch_optional(&mut *tx).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// A run's status, or `None` if no run has this id (yet: an admission may still be committing).
pub async fn status(db: &PgPool, run: RunId) -> Result<Option<RunStatus>> {
    Ok(sqlx::query_scalar("select status from runs where id = $1").bind(run).fetch_optional(db).await?)
}

/// Claims of runs whose workspace has no concurrency cap, made together: one statement takes
/// every run of the group that can start (see [`crate::group`]).
pub struct Claims {
    pub db: PgPool,
    pub owner: String,
    pub lease: Duration,
}

impl Statement for Claims {
    type Item = RunId;
    type Output = Option<Claimed>;

    async fn write(&self, runs: &[RunId]) -> Result<Vec<Option<Claimed>>> {
        let claimed: Vec<Claimed> = match runs {
            [run] => sqlx::query_as(CLAIM_ONE).bind(run),
            _ => sqlx::query_as(CLAIM_MANY).bind(runs),
        }
        .bind(&self.owner)
        .bind(millis(self.lease))
        .bind(None::<i32>)
        .fetch_all(&self.db)
        .await?;
        let mut claimed: HashMap<RunId, Claimed> = claimed.into_iter().map(|c| (c.id, c)).collect();
        // a run named twice (a duplicate job) goes to its first caller only
        Ok(runs.iter().map(|run| claimed.remove(run)).collect())
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The oldest queued runs of a capped workspace, to start when one of its runs finishes.
pub async fn next_in_workspace(db: &PgPool, workspace: WorkspaceId, limit: i64) -> Result<Vec<RunId>> {
    let rows: Vec<(RunId,)> = sqlx::query_as(
        "select id from runs where workspace_id = $1 and finished_at is null and status = 'queued'
         order by created_at, id limit $2",
    )
    .bind(workspace)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// The end of an attempt, as the worker saw it.
#[derive(Debug, Clone)]
pub struct Finish {
    pub status: RunStatus,
    pub output: Option<String>,
    /// What the thread keeps: the new turn and the model's answer (with tool steps).
    pub thread_messages: Vec<ChatMessage>,
    pub usage: Usage,
    pub error: Option<Value>,
    /// The run's whole event log.
    pub events: Vec<Event>,
    pub first_token_at: Option<DateTime<Utc>>,
    /// Microseconds between the job's push and the worker taking it.
    pub queue_wait_us: Option<i64>,
}

/// The finish statement over `ending`, one row per attempt that ends (`id, attempt, status, output,
/// usage, error, event_log, first_token_at, queue_wait_us`, from the arrays `$1`–`$9`).
/// A group's rows are drawn from the arrays once (materialized: the join reads them per run) and
/// its runs found by key, one by one. A lone finish reads the first elements instead: told it
/// unnests a one-element array, Postgres prices a plan for each call below the plan it would keep,
/// and plans every call again (0.3 ms, as long as the statement itself).
macro_rules! finish_sql {
    ($ending:literal) => {
        concat!(
            "with ending as ",
            $ending,
            ",
         done as (
             update runs set status = e.status, output = e.output, usage = e.usage,
                    error = e.error, event_log = e.event_log, first_token_at = e.first_token_at,
                    queue_wait_us = e.queue_wait_us, finished_at = now(), lease_owner = null, lease_expires_at = null
             from ending e
             where runs.id = e.id and runs.attempt = e.attempt and runs.status = 'running'
             returning runs.id, runs.workspace_id, runs.thread_id),
         appended as (
             insert into messages (id, workspace_id, thread_id, run_id, role, content)
             select m.id, done.workspace_id, done.thread_id, m.run_id, m.role, m.content
             from unnest($10::uuid[], $11::uuid[], $12::text[], $13::jsonb[]) as m(id, run_id, role, content)
             join done on done.id = m.run_id)
         select done.id,
                (select next.id from runs next
                 where next.workspace_id = done.workspace_id and next.thread_id = done.thread_id
                   and next.finished_at is null and next.status = 'queued'
                 order by next.created_at, next.id limit 1)
         from done"
        )
    };
}

const FINISH_ONE: &str = finish_sql!(
    "(select ($1::uuid[])[1] as id, ($2::int[])[1] as attempt, ($3::text[])[1] as status, ($4::text[])[1] as output,
             ($5::jsonb[])[1] as usage, ($6::jsonb[])[1] as error, ($7::text[])[1] as event_log,
             ($8::timestamptz[])[1] as first_token_at, ($9::bigint[])[1] as queue_wait_us)"
);
const FINISH_MANY: &str = finish_sql!(
    "materialized (
             select * from unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[],
                                  $7::text[], $8::timestamptz[], $9::bigint[])
                 as e(id, attempt, status, output, usage, error, event_log, first_token_at, queue_wait_us))"
);

/// Records the end of `attempt` and appends the turn to the thread, in one statement. Returns
/// `None` (and changes nothing) when the run is no longer this attempt's: its lease expired and
/// another worker took it over. Otherwise returns the thread's next queued run, which waited for
/// this one.
pub async fn finish(db: &PgPool, run: RunId, attempt: i32, finish: &Finish) -> Result<Option<Option<RunId>>> {
    Ok(finish_many(db, &[(run, attempt, finish)]).await?.remove(0))
}

/// Ends of attempts written together (see [`crate::group`]), each as [`finish`] would.
pub struct Finishes {
    pub db: PgPool,
}

impl Statement for Finishes {
    type Item = (RunId, i32, Finish);
    type Output = Option<Option<RunId>>;

    async fn write(&self, ends: &[(RunId, i32, Finish)]) -> Result<Vec<Option<Option<RunId>>>> {
        finish_many(&self.db, ends).await
    }
}

/// [`finish`] for many attempts in one statement: one answer per attempt, in order.
pub async fn finish_many<F: Borrow<Finish>>(
    db: &PgPool,
    ends: &[(RunId, i32, F)],
) -> Result<Vec<Option<Option<RunId>>>> {
    let runs: Vec<RunId> = ends.iter().map(|(run, _, _)| *run).collect();
    let attempts: Vec<i32> = ends.iter().map(|(_, attempt, _)| *attempt).collect();
    let finishes: Vec<&Finish> = ends.iter().map(|(_, _, f)| f.borrow()).collect();
    let statuses: Vec<&str> = finishes.iter().map(|f| f.status.as_str()).collect();
    let outputs: Vec<Option<&str>> = finishes.iter().map(|f| f.output.as_deref()).collect();
    let usages: Vec<Json<&Usage>> = finishes.iter().map(|f| Json(&f.usage)).collect();
    let errors: Vec<Option<Json<&Value>>> = finishes.iter().map(|f| f.error.as_ref().map(Json)).collect();
    let logs: Vec<String> = finishes.iter().map(|f| events::encode_batch(&f.events)).collect();
    let first_tokens: Vec<Option<DateTime<Utc>>> = finishes.iter().map(|f| f.first_token_at).collect();
    let waits: Vec<Option<i64>> = finishes.iter().map(|f| f.queue_wait_us).collect();
    // the turn's first message is known by its run's id from admission on (a session lists it
    // before the run finishes); the rest are numbered now, after it
    let mut message_ids = Vec::new();
    let mut message_runs = Vec::new();
    let mut roles = Vec::new();
    let mut contents = Vec::new();
    for (run, finish) in runs.iter().zip(&finishes) {
        for (i, message) in finish.thread_messages.iter().enumerate() {
            message_ids.push(if i == 0 { MessageId(run.0) } else { MessageId::new() });
            message_runs.push(*run);
            roles.push(message.role.as_str());
            contents.push(Json(message));
        }
    }
    let statement = if ends.len() == 1 { FINISH_ONE } else { FINISH_MANY };
    let rows: Vec<(RunId, Option<RunId>)> = sqlx::query_as(statement)
        .bind(&runs)
        .bind(&attempts)
        .bind(&statuses)
        .bind(&outputs)
        .bind(&usages)
        .bind(&errors)
        .bind(&logs)
        .bind(&first_tokens)
        .bind(&waits)
        .bind(&message_ids)
        .bind(&message_runs)
        .bind(&roles)
        .bind(&contents)
        .fetch_all(db)
        .await?;
    let done: HashMap<RunId, Option<RunId>> = rows.into_iter().collect();
    Ok(runs.iter().map(|run| done.get(run).copied()).collect())
}

/// Records what the run did so far (after a tool result), so a retried attempt does not repeat
/// it. Changes nothing when `attempt` lost the run.
pub async fn save_progress(db: &PgPool, run: RunId, attempt: i32, progress: &Progress) -> Result<()> {
    sqlx::query("update runs set progress = $3 where id = $1 and attempt = $2 and status = 'running'")
        .bind(run)
        .bind(attempt)
        .bind(Json(progress))
        .execute(db)
        .await?;
    Ok(())
}

/// Pauses the run on tool calls that need a person (`requires_action`, no lease), with its
/// progress, its event log so far and the approvals it waits for, in one statement. `false`
/// when `attempt` no longer holds the run.
pub async fn pause(
    db: &PgPool,
    run: RunId,
    attempt: i32,
    progress: &Progress,
    events: &[Event],
    approvals: &[NewApproval],
    expires_in: Duration,
) -> Result<bool> {
    let ids: Vec<ApprovalId> = approvals.iter().map(|a| a.id).collect();
    let calls: Vec<&str> = approvals.iter().map(|a| a.tool_call_id.as_str()).collect();
    let names: Vec<&str> = approvals.iter().map(|a| a.tool_name.as_str()).collect();
    let arguments: Vec<Json<&Value>> = approvals.iter().map(|a| Json(&a.arguments)).collect();
    let hashes: Vec<&str> = approvals.iter().map(|a| a.payload_hash.as_str()).collect();
    let expires_ms = millis(expires_in);
    let row: Option<(RunId,)> = sqlx::query_as(
        "with paused as (
             update runs set status = 'requires_action', progress = $3, event_log = $4, usage = $11,
                    lease_owner = null, lease_expires_at = null
             where id = $1 and attempt = $2 and status = 'running'
             returning id, workspace_id),
         asked as (
             insert into approvals (id, workspace_id, run_id, tool_call_id, tool_name, arguments, payload_hash,
                                    expires_at)
             select a.id, paused.workspace_id, paused.id, a.call, a.name, a.arguments, a.hash,
                    now() + $10 * interval '1 millisecond'
             from paused, unnest($5::uuid[], $6::text[], $7::text[], $8::jsonb[], $9::text[])
                  as a(id, call, name, arguments, hash)
             on conflict (run_id, tool_call_id) do nothing)
         select id from paused",
    )
    .bind(run)
    .bind(attempt)
    .bind(Json(progress))
    .bind(events::encode_batch(events))
    .bind(&ids)
    .bind(&calls)
    .bind(&names)
    .bind(&arguments)
    .bind(&hashes)
    .bind(expires_ms)
    .bind(Json(&progress.usage))
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

fn run_not_found() -> Error {
    Error::NotFound { code: "run_not_found", message: "Run not found" }
}

pub async fn get(db: impl PgExecutor<'_>, workspace: WorkspaceId, run: RunId) -> Result<RunRecord> {
    let record: Option<RunRecord> = sqlx::query_as(concat!("select ", record_columns!(), " from runs where id = $1"))
        .bind(run)
        .fetch_optional(db)
        .await?;
    record.filter(|r| r.workspace_id == workspace).ok_or_else(run_not_found)
}

/// The stored event log of a finished run, when Redis no longer has it.
pub async fn stored_events(db: &PgPool, workspace: WorkspaceId, run: RunId) -> Result<Option<Vec<Event>>> {
    let row: Option<StoredLog> = sqlx::query_as("select workspace_id, event_log, events from runs where id = $1")
        .bind(run)
        .fetch_optional(db)
        .await?;
    Ok(row.filter(|row| row.workspace_id == workspace).and_then(|row| match row.event_log {
        Some(log) => Some(events::decode_batch(&log).collect()),
        None => row.events.map(|events| events.0),
    }))
}

/// A run's stored log: the compact form, or (runs stored before it) a jsonb array of events.
#[derive(sqlx::FromRow)]
struct StoredLog {
    workspace_id: WorkspaceId,
    event_log: Option<String>,
    events: Option<Json<Vec<Event>>>,
}

/// Filters of `GET /v1/runs`.
#[derive(Debug, Default)]
pub struct RunFilter {
    pub agent: Option<AgentId>,
    pub status: Option<RunStatus>,
    pub thread: Option<String>,
}

pub async fn list(db: &PgPool, workspace: WorkspaceId, filter: &RunFilter, page: Page) -> Result<Paged<RunRecord>> {
    const WHERE: &str = "where workspace_id = $1 and ($2::uuid is null or agent_id = $2)
                           and ($3::text is null or status = $3) and ($4::text is null or thread_id = $4)";
    let items = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {} from runs {WHERE} order by created_at desc, id desc limit $5 offset $6",
        record_columns!()
    )))
    .bind(workspace)
    .bind(filter.agent)
    .bind(filter.status)
    .bind(&filter.thread)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let (total,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("select count(*) from runs {WHERE}")))
        .bind(workspace)
        .bind(filter.agent)
        .bind(filter.status)
        .bind(&filter.thread)
        .fetch_one(db)
        .await?;
    Ok(Paged { items, total })
}

/// Runs of an operation in item order (batch results).
pub async fn of_operation(db: &PgPool, operation: OperationId, page: Page) -> Result<Vec<RunRecord>> {
    Ok(sqlx::query_as(concat!(
        "select ",
        record_columns!(),
        " from runs where operation_id = $1 order by item_index, created_at limit $2 offset $3"
    ))
    .bind(operation)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?)
}

/// Extends the leases of the runs `owner` is executing: one statement per worker, however many
/// runs it holds. Only live executions are renewed, so a run whose execution died is recovered
/// when its lease runs out. A run another statement holds (a finish being written) is skipped
/// rather than waited for: it is ending, and otherwise the next renewal extends it. Waiting made
/// the renewal queue behind each finish in turn (0.5 s at 1,500 runs/s), and the finishes
/// behind it.
pub async fn renew_leases(db: &PgPool, owner: &str, runs: &[RunId], lease: Duration) -> Result<u64> {
    let done = sqlx::query(
        "update runs set lease_expires_at = now() + $3 * interval '1 millisecond'
         where id in (select id from runs where id = any($2) and lease_owner = $1 and status = 'running'
                      for update skip locked)",
    )
    .bind(owner)
    .bind(runs)
    .bind(millis(lease))
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// A run the reconciler handed back to the queue.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Requeued {
    pub id: RunId,
    pub workspace_id: WorkspaceId,
    /// The workspace's concurrency cap, for the job.
    pub cap: Option<i32>,
}

/// Puts runs whose worker stopped renewing its lease back in the queue (`running → queued`).
/// Safe to run from every worker at once: rows are taken with `skip locked`.
pub async fn requeue_expired(db: &PgPool, limit: i64) -> Result<Vec<Requeued>> {
    Ok(sqlx::query_as(
        "update runs set status = 'queued', lease_owner = null, lease_expires_at = null, enqueued_at = now()
         where id in (select id from runs where finished_at is null and status = 'running'
                        and lease_expires_at < now() and attempt < max_attempts and cancel_requested_at is null
                      order by lease_expires_at limit $1 for update skip locked)
         returning id, workspace_id,
                   (select concurrency_limit from workspaces w where w.id = runs.workspace_id) as cap",
    )
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Ends runs whose lease expired and that must not run again: cancelled ones, and those on their
/// last allowed attempt (a run that kills its worker every time must not loop forever).
pub async fn end_lost(db: &PgPool, limit: i64) -> Result<Vec<Lost>> {
    Ok(sqlx::query_as(
        "update runs set lease_owner = null, lease_expires_at = null, finished_at = now(),
                status = case when cancel_requested_at is not null then 'cancelled' else 'failed' end,
                error = case when cancel_requested_at is not null
                    then jsonb_build_object('code', 'cancelled', 'message', 'the run was cancelled')
                    else jsonb_build_object('code', 'worker_lost',
                        'message', 'the run lost its worker on every allowed attempt') end
         where id in (select id from runs where finished_at is null and status = 'running'
                        and lease_expires_at < now() and (attempt >= max_attempts or cancel_requested_at is not null)
                      order by lease_expires_at limit $1 for update skip locked)
         returning id, workspace_id, status, error",
    )
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// A run the reconciler ended.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Lost {
    pub id: RunId,
    pub workspace_id: WorkspaceId,
    pub status: RunStatus,
    pub error: Json<Value>,
}

/// Hands a run back to the queue at once (a worker shutting down): only if `attempt` still
/// holds it.
pub async fn hand_back(db: &PgPool, run: RunId, attempt: i32) -> Result<bool> {
    let done = sqlx::query(
        "update runs set status = 'queued', lease_owner = null, lease_expires_at = null, enqueued_at = now()
         where id = $1 and attempt = $2 and status = 'running'",
    )
    .bind(run)
    .bind(attempt)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What a cancel request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// It was queued: now `cancelled`, nobody else to tell.
    Cancelled,
    /// It is running: its worker must be told.
    Cancelling,
    /// It had already finished.
    Finished,
}

/// Asks for a run to stop. A queued run is cancelled on the spot; a running one is marked, and
/// its worker (told by signal, or at its next lease renewal) stops it.
pub async fn cancel(db: &PgPool, workspace: WorkspaceId, run: RunId) -> Result<Cancel> {
    let row: Option<(RunStatus,)> = sqlx::query_as(
        "with before as (select id, status, workspace_id from runs where id = $1 for update)
         update runs set
             cancel_requested_at = coalesce(cancel_requested_at, now()),
             status = case when before.status in ('queued', 'requires_action') then 'cancelled' else runs.status end,
             finished_at = case when before.status in ('queued', 'requires_action') then now() else runs.finished_at end,
             error = case when before.status in ('queued', 'requires_action')
                          then '{\"code\": \"cancelled\", \"message\": \"the run was cancelled\"}'::jsonb
                          else runs.error end
         from before where runs.id = before.id and before.workspace_id = $2
         returning before.status",
    )
    .bind(run)
    .bind(workspace)
    .fetch_optional(db)
    .await?;
    match row {
        None => Err(run_not_found()),
        Some((RunStatus::Queued | RunStatus::RequiresAction,)) => Ok(Cancel::Cancelled),
        Some((RunStatus::Running,)) => Ok(Cancel::Cancelling),
        Some(_) => Ok(Cancel::Finished),
    }
}

/// Stores the event log of a run finished outside a worker (cancelled while queued).
pub async fn store_events(db: &PgPool, run: RunId, events: &[Event]) -> Result<()> {
    sqlx::query("update runs set event_log = $2 where id = $1")
        .bind(run)
        .bind(events::encode_batch(events))
        .execute(db)
        .await?;
    Ok(())
}

/// Runs `owner` holds whose cancellation was asked for (the fallback when a signal was missed).
pub async fn cancel_requested(db: &PgPool, owner: &str) -> Result<Vec<RunId>> {
    let rows: Vec<(RunId,)> = sqlx::query_as(
        "select id from runs where finished_at is null and status = 'running' and lease_owner = $1
           and cancel_requested_at is not null",
    )
    .bind(owner)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Removes runs recorded by a request that then failed to enqueue them, so the refused request
/// leaves nothing behind.
pub async fn discard(db: &PgPool, runs: &[RunId], operation: Option<OperationId>) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("delete from idempotency_keys where run_id = any($1) or ($2::uuid is not null and operation_id = $2)")
        .bind(runs)
        .bind(operation)
        .execute(&mut *tx)
        .await?;
    sqlx::query("delete from runs where id = any($1) and status = 'queued'").bind(runs).execute(&mut *tx).await?;
    if let Some(operation) = operation {
        sqlx::query("delete from operations where id = $1").bind(operation).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Runs queued for longer than `after` since their last push: their job was lost (the gap
/// between insert and push, a flushed Redis). They are pushed again; a duplicate is harmless.
pub async fn requeue_stale(db: &PgPool, after: Duration, limit: i64) -> Result<Vec<Requeued>> {
    Ok(sqlx::query_as(
        "update runs set enqueued_at = now()
         where id in (select id from runs where finished_at is null and status = 'queued'
                        and enqueued_at < now() - $1 * interval '1 millisecond'
                      order by enqueued_at limit $2 for update skip locked)
         returning id, workspace_id,
                   (select concurrency_limit from workspaces w where w.id = runs.workspace_id) as cap",
    )
    .bind(millis(after))
    .bind(limit)
    .fetch_all(db)
    .await?)
}
