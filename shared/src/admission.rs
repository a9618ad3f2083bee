//! Admission: from a client's run request to recorded, ready-to-enqueue runs.
//!
//! Resolves the agent and its deployed version in the caller's workspace, renders the version's
//! prompts with the request's variables, and records the runs (and their threads and operation)
//! in one transaction. Pushing the jobs is left to the caller, so it can subscribe to a run's
//! events before the run can start.

use serde_json::{Map, Value};
use sqlx::PgPool;
use sqlx::types::Json;

use crate::chat::ChatMessage;
use crate::db::agents::Agent;
use crate::db::operations::NewOperation;
use crate::db::runs::{self, NewRun};
use crate::domain::{AgentRef, PromptMessage, PromptRole, ThreadId};
use crate::group::{GroupCommit, Statement};
use crate::id::{OperationId, RunId, VersionId, WorkspaceId};
use crate::queue::{Job, Opening};
use crate::render::render;
use crate::{Error, Result};

/// An agent that can take runs: not archived, with a deployed version on an existing provider.
#[derive(Debug, Clone)]
pub struct Target {
    pub agent: Agent,
    pub version: VersionId,
    /// The workspace's cap on concurrently running runs (carried in the jobs).
    pub concurrency_limit: Option<i32>,
    system_prompt: Option<String>,
    messages: Vec<PromptMessage>,
}

/// One run as the client asked for it.
#[derive(Debug, Clone, Default)]
pub struct RunInput {
    pub variables: Map<String, Value>,
    /// The new turn (at least one message).
    pub turn: Vec<ChatMessage>,
    /// Overrides of the version's provider parameters.
    pub parameters: Map<String, Value>,
    pub thread: Option<ThreadId>,
    pub metadata: Value,
    pub cancel_on_disconnect: bool,
    /// Time limit from the run's first start, in milliseconds.
    pub timeout_ms: i32,
    /// Where the run's completion is posted (signed with the workspace's default secret);
    /// checked by [`crate::outbound::check`] before it gets here.
    pub webhook_url: Option<String>,
    /// Who the run acts for (`X-End-User-ID`, or the body's `user`).
    pub end_user_id: Option<String>,
}

/// An agent with its deployed version, its provider's presence and its workspace's cap: all
/// admission needs, in one round trip.
#[derive(sqlx::FromRow)]
struct Resolved {
    #[sqlx(flatten)]
    agent: Agent,
    system_prompt: Option<String>,
    messages: Option<Json<Vec<PromptMessage>>>,
    has_provider: bool,
    concurrency_limit: Option<i32>,
}

/// Finds the agent and its deployed version, checking in reference `000_…`'s order: the agent
/// exists, it is the caller's workspace's, it has a deployed version.
pub async fn resolve(db: &PgPool, workspace: WorkspaceId, agent: &AgentRef) -> Result<Target> {
    let (id, slug) = match agent {
        AgentRef::Id(id) => (Some(*id), None),
        AgentRef::Slug(slug) => (None, Some(slug.as_str())),
    };
    let row: Option<Resolved> = sqlx::query_as(
        "select a.id, a.workspace_id, a.name, a.slug, a.description, a.tags, v.id as deployed_version_id,
                'active' as status, a.archived_at is not null as archived, a.created_at, a.updated_at,
                v.system_prompt, v.messages, p.id is not null as has_provider, w.concurrency_limit
         from agents a
         join workspaces w on w.id = a.workspace_id
         left join agent_versions v on v.agent_id = a.id and v.deployed
         left join providers p on p.id = v.provider_id
         where a.id = $1 or (a.workspace_id = $2 and a.slug = $3)",
    )
    .bind(id)
    .bind(workspace)
    .bind(slug)
    .fetch_optional(db)
    .await?;
    let row = row.ok_or_else(Error::agent_not_found)?;
    if row.agent.workspace_id != workspace {
        return Err(Error::OtherWorkspace { what: "Agent" });
    }
    if row.agent.archived {
        return Err(Error::agent_not_found());
    }
    let (Some(version), Some(messages)) = (row.agent.deployed_version_id, row.messages) else {
        return Err(Error::NotFound {
            code: "agent_not_deployed",
            message: "No deployed version found for this agent",
        });
    };
    if !row.has_provider {
        return Err(Error::provider_not_found());
    }
    Ok(Target {
        agent: row.agent,
        version,
        concurrency_limit: row.concurrency_limit,
        system_prompt: row.system_prompt,
        messages: messages.0,
    })
}

impl Target {
    /// Renders the version's prompts for `input` and builds the run to record.
    ///
    /// A run needs no input of its own: without one, the version's rendered system prompt and
    /// messages are the whole conversation (reference `000_…`). Only an empty conversation is
    /// refused.
    pub fn prepare(&self, input: RunInput) -> Result<NewRun> {
        let mut prelude = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = &self.system_prompt {
            prelude.push(ChatMessage::system(render(system, &input.variables)?));
        }
        for message in &self.messages {
            let content = render(&message.content, &input.variables)?;
            prelude.push(match message.role {
                PromptRole::System => ChatMessage::system(content),
                PromptRole::User => ChatMessage::user(content),
                PromptRole::Assistant => ChatMessage::assistant(content),
            });
        }
        if prelude.is_empty() && input.turn.is_empty() {
            return Err(Error::invalid(
                "prompt",
                "the agent's deployed version has no prompt or messages, so a run needs a prompt, query, input or messages",
            ));
        }
        Ok(NewRun {
            opens_thread: input.thread.is_none(),
            id: RunId::new(),
            workspace_id: self.agent.workspace_id,
            agent_id: self.agent.id,
            version_id: self.version,
            thread_id: input.thread.unwrap_or_else(ThreadId::generate).as_str().to_owned(),
            prelude,
            input: input.turn,
            parameters: input.parameters,
            metadata: input.metadata,
            cancel_on_disconnect: input.cancel_on_disconnect,
            timeout_ms: input.timeout_ms,
            webhook_url: input.webhook_url,
            end_user_id: input.end_user_id,
        })
    }
}

/// How the client will collect the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collect {
    /// Streamed or waited for: no operation unless the wait runs out.
    Direct,
    /// `async: true`: one operation for the one run.
    Async,
    /// `batch: [...]`: one operation for all the runs.
    Batch,
}

/// A client's `Idempotency-Key` and the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: [u8; 32],
}

/// What was recorded, or found already recorded under the same idempotency key.
#[derive(Debug, Clone)]
pub enum Admitted {
    New { runs: Vec<NewRun>, operation: Option<OperationId> },
    Existing { run: Option<RunId>, operation: Option<OperationId> },
}

/// Records the runs with their threads and operation. Without an idempotency key they go through
/// the group commit. With one, in a transaction of their own: a second request (even a concurrent
/// one: it waits on the key's row) gets the first one's runs; a different request under the same
/// key is a conflict.
pub async fn record(
    group: &Admissions,
    db: &PgPool,
    workspace: WorkspaceId,
    runs: Vec<NewRun>,
    collect: Collect,
    idempotency: Option<&Idempotency>,
) -> Result<Admitted> {
    let operation = match collect {
        Collect::Direct => None,
        Collect::Async => Some(NewOperation::new(workspace, "run", runs.len())),
        Collect::Batch => Some(NewOperation::new(workspace, "batch", runs.len())),
    };
    let Some(idem) = idempotency else {
        let ((_, runs), ()) = group.submit((operation, runs)).await?;
        return Ok(Admitted::New { runs, operation: operation.map(|op| op.id) });
    };
    // boxed: a transaction's futures are large (about 14 KiB), and inline they would make every
    // admission's future as large, idempotent or not
    Box::pin(record_once(db, workspace, runs, operation, idem)).await
}

/// [`record`] under an idempotency key: in a transaction that takes the key first.
async fn record_once(
    db: &PgPool,
    workspace: WorkspaceId,
    runs: Vec<NewRun>,
    operation: Option<NewOperation>,
    idem: &Idempotency,
) -> Result<Admitted> {
    let mut tx = db.begin().await?;
    let claimed = sqlx::query(
        "insert into idempotency_keys (workspace_id, key, request_hash) values ($1, $2, $3)
         on conflict do nothing",
    )
    .bind(workspace)
    .bind(&idem.key)
    .bind(&idem.request_hash[..])
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 0 {
        return existing(&mut tx, workspace, idem).await;
    }
    runs::insert_many(&mut *tx, operation.as_ref(), &runs).await?;
    let operation = operation.map(|op| op.id);
    sqlx::query("update idempotency_keys set run_id = $3, operation_id = $4 where workspace_id = $1 and key = $2")
        .bind(workspace)
        .bind(&idem.key)
        .bind(runs.first().map(|r| r.id))
        .bind(operation)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Admitted::New { runs, operation })
}

async fn existing(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    workspace: WorkspaceId,
    idem: &Idempotency,
) -> Result<Admitted> {
    let (hash, run, operation): (Vec<u8>, Option<RunId>, Option<OperationId>) = sqlx::query_as(
        "select request_hash, run_id, operation_id from idempotency_keys where workspace_id = $1 and key = $2",
    )
    .bind(workspace)
    .bind(&idem.key)
    .fetch_one(&mut **tx)
    .await?;
    if hash != idem.request_hash {
        return Err(Error::conflict(
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request",
        ));
    }
    Ok(Admitted::Existing { run, operation })
}

/// The run created under an idempotency key, if any.
pub async fn run_for_key(db: &PgPool, workspace: WorkspaceId, key: &str) -> Result<Option<RunId>> {
    let row: Option<(Option<RunId>,)> =
        sqlx::query_as("select run_id from idempotency_keys where workspace_id = $1 and key = $2")
            .bind(workspace)
            .bind(key)
            .fetch_optional(db)
            .await?;
    Ok(row.and_then(|(run,)| run))
}

/// The jobs that start `runs` of a workspace whose concurrency cap is `cap`. A lone run that
/// starts its thread, in a workspace without a cap, carries its [`Opening`]: nothing else can
/// hold it back once it is recorded.
pub fn jobs(workspace: WorkspaceId, cap: Option<i32>, runs: &[NewRun]) -> Vec<Job> {
    let opening = |run: &NewRun| {
        let text: usize = run.prelude.iter().chain(&run.input).map(|m| m.content.len()).sum();
        (runs.len() == 1 && cap.is_none() && run.opens_thread && text <= Opening::MAX_TEXT).then(|| Opening {
            version: run.version_id,
            messages: run.prelude.iter().chain(&run.input).cloned().collect(),
            parameters: run.parameters.clone(),
        })
    };
    runs.iter().map(|run| Job { opening: opening(run), ..Job::new(run.id, workspace, cap) }).collect()
}

/// Admissions written together (see [`crate::group`]): every admission without an idempotency
/// key, its operation (async or batch) in the same statement.
pub type Admissions = GroupCommit<InsertRuns>;

/// Most runs one group statement writes.
const GROUP_MAX_RUNS: usize = 512;

/// Starts the admission writers: `writers` statements in flight at once on `db`.
pub fn admissions(db: PgPool, writers: usize) -> Admissions {
    GroupCommit::start(InsertRuns { db }, writers, GROUP_MAX_RUNS)
}

/// The statement of [`Admissions`]: the runs (and operations) of many admissions in one `insert`.
pub struct InsertRuns {
    db: PgPool,
}

impl Statement for InsertRuns {
    type Item = (Option<NewOperation>, Vec<NewRun>);
    type Output = ();

    async fn write(&self, items: &[(Option<NewOperation>, Vec<NewRun>)]) -> Result<Vec<()>> {
        let admissions: Vec<(Option<&NewOperation>, &[NewRun])> =
            items.iter().map(|(operation, runs)| (operation.as_ref(), runs.as_slice())).collect();
        runs::insert_admissions(&self.db, &admissions).await?;
        if items.len() > 1 {
            tracing::debug!(admissions = items.len(), "admissions written together");
        }
        Ok(vec![(); items.len()])
    }

    fn size((_, runs): &(Option<NewOperation>, Vec<NewRun>)) -> usize {
        runs.len()
    }
}
