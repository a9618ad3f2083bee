//! Submitting runs and delivering their answer: shared by `POST /v1/run` and the agent
//! `invoke`/`stream` routes.
//!
//! Runs are recorded (Postgres) while a stream or sync caller subscribes to the run's events, and
//! the jobs are pushed once both are done: so a caller cannot miss an event of its own run. A lone
//! new run submitted while no admission is being written is pushed as soon as its caller is
//! subscribed, before its run is committed (see [`submit_early`]). A push that fails (Redis down)
//! removes what was recorded and answers 503, so a refused request leaves nothing behind.

use axum::http::HeaderMap;
use axum::response::Response;
use runq_shared::admission::{self, Admitted, Collect, Idempotency, Target};
use runq_shared::db::operations;
use runq_shared::db::runs::{self, NewRun, RunRecord};
use runq_shared::domain::AgentRef;
use runq_shared::events::RunKeys;
use runq_shared::id::{OperationId, RunId, WorkspaceId};
use runq_shared::queue::{self, Job};

use crate::error::{Error, Result};
use crate::live::{self, Framing, RunStream, Subscription};
use crate::request::Plan;
use crate::state::AppState;

/// How the caller collects the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stream,
    Sync,
    Async,
    Batch,
    /// Started and left to run: the caller follows it elsewhere (a session's events).
    Detached,
}

pub enum Delivery {
    Stream { run: RunId, thread: String, events: Response },
    Done(Box<RunRecord>),
    Accepted { operation: OperationId, total: usize, run: Option<RunId> },
    Started { run: RunId },
}

/// The `Idempotency-Key` header, with the fingerprint of the request body it came with.
pub fn idempotency(headers: &HeaderMap, body_hash: [u8; 32]) -> Result<Option<Idempotency>> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().ok().map(str::trim).filter(|k| (1..=255).contains(&k.len()));
    let key = key.ok_or_else(|| Error::invalid("Idempotency-Key", "must be 1-255 visible ASCII characters"))?;
    Ok(Some(Idempotency { key: key.to_owned(), request_hash: body_hash }))
}

/// Resolves the agents the plan names (each once), then validates and renders each run's turn:
/// a run of an unknown agent is 404 whatever its input.
async fn admit(state: &AppState, workspace: WorkspaceId, plan: Plan) -> Result<(Vec<NewRun>, Option<i32>)> {
    let mut targets: Vec<(AgentRef, Target)> = Vec::new();
    for draft in &plan.drafts {
        if !targets.iter().any(|(agent, _)| *agent == draft.agent) {
            let target = state.targets.resolve(&state.db, workspace, &draft.agent).await?;
            targets.push((draft.agent.clone(), target));
        }
    }
    let cap = targets.first().and_then(|(_, target)| target.concurrency_limit);
    let runs = plan
        .drafts
        .into_iter()
        .map(|draft| {
            let (_, target) = targets.iter().find(|(agent, _)| *agent == draft.agent).expect("resolved above");
            let mut input = draft.turn.into_input(&draft.field, &plan.defaults, plan.options)?;
            input.webhook_url.clone_from(&plan.webhook_url);
            target.prepare(input).map_err(|e| match e {
                runq_shared::Error::Invalid { field, reason } if !draft.field.is_empty() => {
                    Error::invalid(format!("{}{field}", draft.field), reason)
                }
                e => e.into(),
            })
        })
        .collect::<Result<_>>()?;
    Ok((runs, cap))
}

/// Records the runs of `plan` and delivers them as its mode asks.
#[tracing::instrument(skip_all, fields(workspace_id = %workspace, run_id = tracing::field::Empty))]
pub async fn submit(
    state: &AppState,
    workspace: WorkspaceId,
    plan: Plan,
    idempotency: Option<Idempotency>,
) -> Result<Delivery> {
    let (mode, framing) = (plan.mode, plan.framing.clone());
    let (runs, cap) = admit(state, workspace, plan).await?;
    let collect = match mode {
        Mode::Stream | Mode::Sync | Mode::Detached => Collect::Direct,
        Mode::Async => Collect::Async,
        Mode::Batch => Collect::Batch,
    };
    let jobs = admission::jobs(workspace, cap, &runs);
    let waits = matches!(mode, Mode::Stream | Mode::Sync);
    if waits && idempotency.is_none() && jobs.len() == 1 && jobs[0].opening.is_some() && state.admissions.idle() {
        return Box::pin(submit_early(state, workspace, mode, framing, runs, jobs)).await;
    }
    // a caller waiting for its run subscribes while the run is recorded: no event exists before
    // its job is pushed, and the subscription's round trip leaves the critical path
    let first = runs.first().map(|run| run.id);
    let recording = admission::record(&state.admissions, &state.db, workspace, runs, collect, idempotency.as_ref());
    let (recorded, subscribed) = match (mode, first) {
        (Mode::Stream | Mode::Sync, Some(run)) => {
            let (recorded, subscription) = tokio::join!(recording, subscribe(state, run));
            (recorded?, Some(subscription))
        }
        _ => (recording.await?, None),
    };
    let (runs, operation) = match recorded {
        Admitted::New { runs, operation } => (runs, operation),
        Admitted::Existing { run, operation } => {
            return Box::pin(deliver_existing(state, workspace, mode, framing, run, operation)).await;
        }
    };
    if let Some(operation) = operation {
        let total = jobs.len();
        push(state, jobs, operation.into()).await?;
        let run = (mode == Mode::Async).then(|| runs[0].id);
        return Ok(Delivery::Accepted { operation, total, run });
    }

    let run = &runs[0];
    tracing::Span::current().record("run_id", tracing::field::display(run.id));
    if mode == Mode::Detached {
        push(state, jobs, None).await?;
        return Ok(Delivery::Started { run: run.id });
    }
    let subscription = match subscribed {
        Some(subscription) => subscription,
        None => subscribe(state, run.id).await,
    };
    push(state, jobs, None).await?;
    deliver_new(state, workspace, run, mode, framing, subscription).await
}

/// A lone new run that a caller waits for, submitted while no admission is being written: its
/// job is pushed once the caller is subscribed, while the run is still being committed. A worker
/// sends the run's first provider request meanwhile (the job's opening) and claims the run once
/// it is committed. The job of a run whose admission failed finds no run and is dropped.
async fn submit_early(
    state: &AppState,
    workspace: WorkspaceId,
    mode: Mode,
    framing: Framing,
    runs: Vec<NewRun>,
    jobs: Vec<Job>,
) -> Result<Delivery> {
    let run = runs[0].id;
    let recording = admission::record(&state.admissions, &state.db, workspace, runs, Collect::Direct, None);
    let (recorded, (subscription, pushed)) = tokio::join!(recording, async {
        let subscription = subscribe(state, run).await;
        let mut jobs: Vec<Job> = jobs.into_iter().map(|job| Job { early: true, ..job }).collect();
        (subscription, enqueue(state, &mut jobs).await)
    });
    let Admitted::New { runs, .. } = recorded? else {
        return Err(Error::Internal(anyhow::anyhow!("a run without an idempotency key was recorded before")));
    };
    if let Err(e) = pushed {
        return Err(refuse(state, &[run], None, &e).await);
    }
    let run = &runs[0];
    tracing::Span::current().record("run_id", tracing::field::display(run.id));
    deliver_new(state, workspace, run, mode, framing, subscription).await
}

/// Delivers a run this request recorded to its caller, subscribed before its job was pushed.
async fn deliver_new(
    state: &AppState,
    workspace: WorkspaceId,
    run: &NewRun,
    mode: Mode,
    framing: Framing,
    subscription: Subscription,
) -> Result<Delivery> {
    let listener =
        Listener { mode, framing, cancel_on_disconnect: run.cancel_on_disconnect, subscription, fresh: true };
    deliver(state, workspace, run.id, &run.thread_id, listener).await
}

/// A caller waiting for its run: how it collects the answer, and its subscription.
struct Listener {
    mode: Mode,
    framing: Framing,
    cancel_on_disconnect: bool,
    subscription: Subscription,
    /// Subscribed before the run's job was pushed (not a retried request's earlier run).
    fresh: bool,
}

async fn subscribe(state: &AppState, run: RunId) -> Subscription {
    state.hub.subscribe(RunKeys::new(state.broker.prefix(), run).channel).await
}

async fn deliver(
    state: &AppState,
    workspace: WorkspaceId,
    run: RunId,
    thread: &str,
    mut listener: Listener,
) -> Result<Delivery> {
    if listener.mode == Mode::Stream {
        let events = live::sse(RunStream {
            state: state.clone(),
            workspace,
            run,
            keys: RunKeys::new(state.broker.prefix(), run),
            subscription: listener.subscription,
            after: 0,
            fresh: listener.fresh,
            cancel_on_disconnect: listener.cancel_on_disconnect,
            framing: listener.framing,
        });
        return Ok(Delivery::Stream { run, thread: thread.to_owned(), events });
    }
    if live::wait_terminal(&mut listener.subscription, state.limits.sync_timeout, &state.db, workspace, run).await {
        return Ok(Delivery::Done(Box::new(runs::get(&state.db, workspace, run).await?)));
    }
    let operation = Box::pin(operations::for_run(&state.db, workspace, run)).await?;
    Ok(Delivery::Accepted { operation, total: 1, run: Some(run) })
}

/// A retried request (same idempotency key, same body) gets the first request's runs.
async fn deliver_existing(
    state: &AppState,
    workspace: WorkspaceId,
    mode: Mode,
    framing: Framing,
    run: Option<RunId>,
    operation: Option<OperationId>,
) -> Result<Delivery> {
    if let Some(operation) = operation {
        let (op, _) = operations::get(&state.db, workspace, operation).await?;
        let run = if op.kind == "run" { run } else { None };
        return Ok(Delivery::Accepted { operation, total: usize::try_from(op.total).unwrap_or(0), run });
    }
    let run = run.ok_or_else(|| Error::Internal(anyhow::anyhow!("idempotency key without a run")))?;
    if mode == Mode::Detached {
        return Ok(Delivery::Started { run });
    }
    // subscribe before reading, so a run finishing in between is seen either way
    let subscription = subscribe(state, run).await;
    let record = runs::get(&state.db, workspace, run).await?;
    if mode == Mode::Sync && record.is_terminal() {
        return Ok(Delivery::Done(Box::new(record)));
    }
    let listener = Listener { mode, framing, cancel_on_disconnect: false, subscription, fresh: false };
    deliver(state, workspace, run, &record.thread_id, listener).await
}

/// Pushes jobs. When Redis cannot take them, the runs just recorded are removed again and the
/// caller gets 503: nothing half-written stays behind.
async fn push(state: &AppState, mut jobs: Vec<Job>, operation: Option<OperationId>) -> Result<()> {
    let Err(e) = enqueue(state, &mut jobs).await else { return Ok(()) };
    let ids: Vec<RunId> = jobs.iter().map(|j| j.run).collect();
    Err(refuse(state, &ids, operation, &e).await)
}

/// Pushes jobs, once more if the first command finds the connection broken. They were made
/// before their runs were recorded: their push time is now.
async fn enqueue(state: &AppState, jobs: &mut [Job]) -> redis::RedisResult<()> {
    let now = queue::now_us();
    for job in &mut *jobs {
        job.pushed_at_us = now;
    }
    let mut conn = state.broker.conn.clone();
    let pushed = queue::push(&mut conn, state.broker.queue(), jobs).await;
    if pushed.as_ref().is_err_and(|e| e.is_connection_dropped() || e.is_io_error()) {
        // the first command after Redis restarted finds the old connection broken; the manager
        // has reconnected by the time a retry goes out
        return queue::push(&mut conn, state.broker.queue(), jobs).await;
    }
    pushed
}

/// Removes the runs whose jobs Redis refused (`e`), and the 503 their caller gets.
async fn refuse(state: &AppState, runs: &[RunId], operation: Option<OperationId>, e: &redis::RedisError) -> Error {
    tracing::warn!(error = %e, runs = runs.len(), "enqueue failed; discarding the recorded runs");
    // boxed, as the other rare paths of a request that hold a transaction (about 14 KiB)
    match Box::pin(runs::discard(&state.db, runs, operation)).await {
        Ok(()) => Error::Unavailable("redis"),
        Err(e) => e.into(),
    }
}
