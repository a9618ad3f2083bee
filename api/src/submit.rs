//! Submitting runs and delivering their answer: shared by `POST /v1/run` and the agent
//! `invoke`/`stream` routes.
//!
//! Runs are recorded first (Postgres), then a stream or sync caller subscribes to the run's
//! events, then the jobs are pushed: so a caller cannot miss an event of its own run.

use axum::response::Response;
use runq_shared::admission::{self, Collect, RunInput};
use runq_shared::db::operations;
use runq_shared::db::runs::{self, RunRecord};
use runq_shared::domain::AgentRef;
use runq_shared::events::RunKeys;
use runq_shared::id::{OperationId, RunId, WorkspaceId};
use runq_shared::queue::{self, Job};

use crate::error::Result;
use crate::live::{self, RunStream};
use crate::state::AppState;

/// How the caller collects the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stream,
    Sync,
    Async,
    Batch,
}

pub enum Delivery {
    Stream {
        run: RunId,
        thread: String,
        events: Response,
    },
    Done(Box<RunRecord>),
    Accepted {
        operation: OperationId,
        total: usize,
    },
}

/// Records the runs and delivers them as `mode` asks.
#[tracing::instrument(skip_all, fields(workspace_id = %workspace, run_id = tracing::field::Empty))]
pub async fn submit(
    state: &AppState,
    workspace: WorkspaceId,
    agent: &AgentRef,
    inputs: Vec<RunInput>,
    mode: Mode,
) -> Result<Delivery> {
    let target = admission::resolve(&state.db, workspace, agent).await?;
    let runs = inputs
        .into_iter()
        .map(|input| target.prepare(input))
        .collect::<Result<Vec<_>, _>>()?;
    let collect = match mode {
        Mode::Stream | Mode::Sync => Collect::Direct,
        Mode::Async => Collect::Async,
        Mode::Batch => Collect::Batch,
    };
    let admitted = admission::record(&state.db, workspace, &target, runs, collect).await?;
    let jobs = admitted.jobs(workspace);
    if let Some(operation) = admitted.operation {
        push(state, &jobs).await;
        return Ok(Delivery::Accepted {
            operation,
            total: jobs.len(),
        });
    }

    let run = &admitted.runs[0];
    tracing::Span::current().record("run_id", tracing::field::display(run.id));
    let keys = RunKeys::new(state.broker.prefix(), run.id);
    let mut subscription = state.hub.subscribe(keys.channel.clone()).await;
    push(state, &jobs).await;
    if mode == Mode::Stream {
        let events = live::sse(RunStream {
            db: state.db.clone(),
            broker: state.broker.clone(),
            workspace,
            run: run.id,
            keys,
            subscription,
            after: 0,
        });
        return Ok(Delivery::Stream {
            run: run.id,
            thread: run.thread_id.clone(),
            events,
        });
    }

    if live::wait_terminal(
        &mut subscription,
        state.limits.sync_timeout,
        &state.db,
        workspace,
        run.id,
    )
    .await
    {
        return Ok(Delivery::Done(Box::new(
            runs::get(&state.db, workspace, run.id).await?,
        )));
    }
    let operation = operations::for_run(&state.db, workspace, run.id).await?;
    Ok(Delivery::Accepted {
        operation,
        total: 1,
    })
}

/// Pushes jobs. The runs are already recorded, so a failed push is not the caller's failure: the
/// reconciler pushes them again.
async fn push(state: &AppState, jobs: &[Job]) {
    let key = queue::key(state.broker.prefix());
    if let Err(e) = queue::push(&mut state.broker.conn.clone(), &key, jobs).await {
        tracing::warn!(error = %e, runs = jobs.len(), "push failed; the reconciler will enqueue these runs");
    }
}
