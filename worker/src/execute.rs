//! Executing one run: claim, call the provider (streaming), run tool steps, emit events, record
//! the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use runq_shared::broker::Broker;
use runq_shared::chat::{ChatMessage, Role, ToolCall, Usage};
use runq_shared::crypto::MasterKey;
use runq_shared::db::approvals::{self, NewApproval};
use runq_shared::db::runs::{self, Claimed, Finish, Progress, RunStatus};
use runq_shared::domain::ProviderKind;
use runq_shared::events::{self, Part, RunKeys};
use runq_shared::group::GroupCommit;
use runq_shared::id::RunId;
use runq_shared::metrics as m;
use runq_shared::queue::{self, Job, Opening};
use serde_json::json;
use sqlx::PgPool;
use tracing::Instrument;

use crate::control::{Registry, Stop};
use crate::emit::Emitter;
use crate::opening::{self, Opened, Setup, Versions};
use crate::provider::{ChatRequest, Provider, ProviderConfig, ProviderError, ProviderEvent};
use crate::tools::{CallContext, Toolbox};

/// What every run execution shares.
pub struct Ctx {
    /// Durable commits: a run's outcome.
    pub db: PgPool,
    /// Relaxed commits (see [`runq_shared::db::Sessions`]): claims, leases, hand-backs.
    pub claims: PgPool,
    /// Claims of runs without a concurrency cap, made together (on `claims`).
    pub claiming: GroupCommit<runs::Claims>,
    /// Ends of attempts, written together (on `db`).
    pub finishing: GroupCommit<runs::Finishes>,
    pub broker: Broker,
    pub master_key: MasterKey,
    pub http: reqwest::Client,
    pub worker_id: String,
    pub lease: Duration,
    pub retry: RetryPolicy,
    pub registry: Arc<Registry>,
    /// The versions of runs executed lately, for sending a new run's first request early.
    pub versions: Versions,
    /// Woken when a run ends, so its webhook goes out without waiting for the next poll.
    pub webhooks_due: Arc<tokio::sync::Notify>,
    /// How long a tool call waits for a person before it counts as denied.
    pub approval_ttl: Duration,
    /// Let HTTP tools reach loopback and private addresses (`RUNQ_ALLOW_PRIVATE_TARGETS`).
    pub allow_private_targets: bool,
}

/// How failed provider calls are retried within an attempt.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
}

impl RetryPolicy {
    /// Exponential backoff with full jitter in [½, 1½) of the step, unless the provider said
    /// when to come back.
    fn delay(&self, retry: u32, error: &ProviderError) -> Duration {
        if let Some(after) = error.retry_after() {
            return after;
        }
        let step = self.base.saturating_mul(1 << retry.saturating_sub(1).min(16));
        step.mul_f64(rand::random_range(0.5..1.5))
    }
}

/// Most provider events published in one round trip.
const BATCH: usize = 64;

/// Handles one job. Errors are infrastructure failures (Postgres or Redis gone); the run stays
/// `running` and the reconciler hands it to another attempt when its lease expires.
pub async fn handle(ctx: Arc<Ctx>, mut job: Job) -> anyhow::Result<()> {
    let span = tracing::info_span!("run", run_id = %job.run, workspace_id = %job.workspace,
        request_id = job.request_id.as_deref(), attempt = tracing::field::Empty);
    if let Some(parent) = &job.traceparent {
        runq_shared::telemetry::set_remote_parent(&span, parent);
    }
    async move {
        let queue_wait_us = queue::now_us() - job.pushed_at_us;
        // taken out of the job, which lives as long as the run: it is spent by the first call
        let opening = job.opening.take();
        let claimed = match job.cap {
            None => claim(&ctx, &job, opening).await?,
            // boxed, as the ends below: a future awaited for a moment must not make the future of
            // every run in flight as large as itself (16 KiB against 5 KiB)
            Some(_) => Box::pin(runs::claim(&ctx.claims, job.run, job.workspace, &ctx.worker_id, ctx.lease, job.cap))
                .await?
                .map(|claimed| (claimed, None)),
        };
        let Some((claimed, opened)) = claimed else {
            tracing::debug!("run not claimable (duplicate job, finished, or waiting for its thread)");
            return Ok(());
        };
        tracing::Span::current().record("attempt", claimed.attempt);
        metrics::counter!(m::RUNS_STARTED_TOTAL).increment(1);
        #[allow(clippy::cast_precision_loss)]
        metrics::histogram!(m::QUEUE_WAIT).record(queue_wait_us.max(0) as f64 / 1e6);
        let _in_flight = m::GaugeGuard::new(m::RUNS_IN_FLIGHT);
        let (run, attempt) = (claimed.id, claimed.attempt);
        let result = match Execution::start(&ctx, claimed, &job, queue_wait_us).await {
            Ok(execution) => execution.run(opened).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            // Postgres or Redis failed under this run: give it back now rather than after the lease
            tracing::warn!(error = ?e, "execution failed; handing the run back");
            Box::pin(give_back(&ctx, &job, run, attempt)).await?;
        }
        result
    }
    .instrument(span)
    .await
}

/// Claims the run of a job without a concurrency cap. With the job's [`Opening`], if this worker
/// knows the run's version, the run's first provider request goes out meanwhile (see
/// [`crate::opening`]).
async fn claim(
    ctx: &Ctx,
    job: &Job,
    opening: Option<Opening>,
) -> anyhow::Result<Option<(Claimed, Option<Box<Opened>>)>> {
    let opening = opening.and_then(|opening| ctx.versions.request(job.workspace, opening));
    let Some((config, request)) = opening else {
        return Ok(take(ctx, job).await?.map(|claimed| (claimed, None)));
    };
    let opened = Opened::send(ctx.http.clone(), config, request);
    let Some(claimed) = take(ctx, job).await? else {
        opening::counted("unclaimed");
        return Ok(None);
    };
    Ok(Some((claimed, Some(Box::new(opened)))))
}

/// Claims the run of a job without a concurrency cap (with the other claims of the moment). The
/// run of an [early](Job::early) job may not be committed yet: while no run has its id, the claim
/// is made again, sooner at first, until [`queue::EARLY_WAIT`] has passed since the push.
async fn take(ctx: &Ctx, job: &Job) -> anyhow::Result<Option<Claimed>> {
    let (mut pause, mut recorded) = (Duration::from_micros(250), false);
    loop {
        if let (_, Some(claimed)) = ctx.claiming.submit(job.run).await? {
            return Ok(Some(claimed));
        }
        let waited = Duration::from_micros(u64::try_from(queue::now_us() - job.pushed_at_us).unwrap_or(0));
        if !job.early || recorded || waited >= queue::EARLY_WAIT {
            return Ok(None);
        }
        match runs::status(&ctx.claims, job.run).await? {
            // committed between the claim and this look: claimed now, or not claimable
            Some(RunStatus::Queued) => recorded = true,
            Some(_) => return Ok(None),
            None => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

/// Returns a run whose execution failed to the queue, if `attempt` still holds it.
async fn give_back(ctx: &Ctx, job: &Job, run: RunId, attempt: i32) -> anyhow::Result<()> {
    match runs::hand_back(&ctx.claims, run, attempt).await {
        Ok(true) => {
            let job = Job { request_id: job.request_id.clone(), ..Job::new(run, job.workspace, job.cap) };
            queue::push(&mut ctx.broker.conn.clone(), ctx.broker.queue(), &[job]).await?;
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "hand-back failed; the run is retried once its lease expires"),
    }
    Ok(())
}

struct Execution<'a> {
    ctx: &'a Ctx,
    claimed: Claimed,
    emitter: Emitter,
    queue_wait_us: i64,
    /// The workspace's concurrency cap, carried on to the jobs this run pushes.
    cap: Option<i32>,
    /// The conversation sent to the provider, growing with each tool step.
    messages: Vec<ChatMessage>,
    /// Index in `messages` where this run's own turn starts (what the thread keeps).
    turn_start: usize,
    /// Index in `messages` where the run's progress starts (its tool steps after its input).
    progress_start: usize,
    usage: Usage,
    first_token_at: Option<DateTime<Utc>>,
    text_parts: u32,
    /// When this attempt took the run.
    started: Instant,
    /// The request that created the run, carried on when the run is handed back.
    request_id: Option<String>,
}

/// How an attempt ended.
enum Outcome {
    Completed(String),
    Failed {
        code: &'static str,
        message: String,
    },
    Cancelled,
    TimedOut,
    /// The worker is shutting down: another worker continues the run.
    HandBack,
    /// Tool calls wait for a person: the run is `requires_action` until they are decided.
    Paused(Vec<NewApproval>),
}

impl<'a> Execution<'a> {
    async fn start(ctx: &'a Ctx, claimed: Claimed, job: &Job, queue_wait_us: i64) -> anyhow::Result<Self> {
        let keys = RunKeys::new(ctx.broker.prefix(), claimed.id);
        let mut conn = ctx.broker.conn.clone();
        let last_seq = if claimed.attempt > 1 { events::last_seq(&mut conn, &keys).await? } else { 0 };
        let mut messages = claimed.prelude.0.clone();
        messages.extend(claimed.history.0.iter().cloned());
        let turn_start = messages.len();
        messages.extend(claimed.input.0.iter().cloned());
        let progress_start = messages.len();
        let progress = claimed.progress.as_ref().map(|p| p.0.clone()).unwrap_or_default();
        messages.extend(progress.messages);
        Ok(Self {
            ctx,
            emitter: Emitter::new(conn, keys, last_seq),
            claimed,
            queue_wait_us,
            cap: job.cap,
            messages,
            turn_start,
            progress_start,
            usage: progress.usage,
            first_token_at: None,
            text_parts: 0,
            started: Instant::now(),
            request_id: job.request_id.clone(),
        })
    }

    /// Runs the steps; `opened` is the first provider request if it was sent during the claim.
    async fn run(mut self, opened: Option<Box<Opened>>) -> anyhow::Result<()> {
        let run = self.claimed.id;
        if self.claimed.attempt == 1 {
            self.emitter.emit(&Part::Start {
                message_id: format!("msg_{}", run.0.simple()),
                message_metadata: json!({"runId": run, "threadId": self.claimed.thread_id}),
            });
        } else {
            self.emitter.emit(&Part::DataRun {
                data: json!({"status": "running", "attempt": self.claimed.attempt, "retry": true}),
                transient: true,
            });
        }
        let entry = self.ctx.registry.enter(run);
        let remaining = (self.claimed.deadline_at - Utc::now()).to_std().unwrap_or_default();
        let outcome = {
            let steps = self.steps(opened);
            tokio::select! {
                outcome = steps => outcome?,
                stop = entry.control.stopped() => match stop {
                    Stop::Cancel => Outcome::Cancelled,
                    Stop::HandBack => Outcome::HandBack,
                },
                _ = tokio::time::sleep(remaining) => Outcome::TimedOut,
            }
        };
        // the ends are boxed: each lives for a moment, and inline they would make every run's
        // future as large as the largest of them for its whole life
        match outcome {
            Outcome::HandBack => Box::pin(self.hand_back()).await,
            Outcome::Paused(approvals) => Box::pin(self.pause(approvals)).await,
            outcome => Box::pin(self.finish(outcome)).await,
        }
    }

    /// Returns the run to the queue and pushes its job, so another worker resumes it now rather
    /// than after the lease expires.
    async fn hand_back(mut self) -> anyhow::Result<()> {
        self.emitter.flush().await?;
        if runs::hand_back(&self.ctx.claims, self.claimed.id, self.claimed.attempt).await? {
            let job = Job {
                request_id: self.request_id.clone(),
                ..Job::new(self.claimed.id, self.claimed.workspace_id, self.cap)
            };
            queue::push(&mut self.ctx.broker.conn.clone(), self.ctx.broker.queue(), &[job]).await?;
            tracing::info!("run handed back for another worker");
        }
        Ok(())
    }

    fn provider(&self) -> Result<Provider, ProviderError> {
        let kind = ProviderKind::parse(&self.claimed.provider_kind)
            .ok_or_else(|| ProviderError::BadRequest { status: 0, message: "unknown provider kind".into() })?;
        let api_key = match &self.claimed.api_key_sealed {
            Some(sealed) => String::from_utf8(self.ctx.master_key.open(sealed).map_err(|_| ProviderError::Auth {
                status: 0,
                message: "the provider's API key cannot be decrypted with this RUNQ_MASTER_KEY".into(),
            })?)
            .unwrap_or_default(),
            None => String::new(),
        };
        Ok(Provider::new(
            self.ctx.http.clone(),
            ProviderConfig { kind, base_url: self.claimed.base_url.clone(), api_key },
        ))
    }

    /// Calls the model until it answers without tool calls, or `max_steps` is spent. A run
    /// resumed after a pause first answers the calls it paused on.
    async fn steps(&mut self, mut opened: Option<Box<Opened>>) -> anyhow::Result<Outcome> {
        let provider = match self.provider() {
            Ok(p) => p,
            Err(e) => {
                return Ok(Outcome::Failed { code: e.code(), message: e.to_string() });
            }
        };
        let toolbox = Toolbox::new(&self.claimed.tools, std::mem::take(&mut self.claimed.http_tools.0));
        let setup = Setup {
            config: provider.config().clone(),
            model: self.claimed.model.clone(),
            tools: toolbox.specs(),
            parameters: std::mem::take(&mut self.claimed.version_parameters.0),
        };
        self.ctx.versions.remember(self.claimed.workspace_id, self.claimed.version_id, || setup.clone());

        if !self.unanswered_calls().is_empty() {
            self.emitter.emit(&Part::StartStep);
            if let Some(paused) = self.answer_calls(&toolbox).await? {
                return Ok(paused);
            }
            self.emitter.emit(&Part::FinishStep);
            self.emitter.flush().await?;
        }
        for _ in 0..self.claimed.max_steps {
            self.emitter.emit(&Part::StartStep);
            let request = setup.request(self.messages.clone(), &self.claimed.parameters.0);
            let (text, calls) = match self.call_with_retries(&provider, &request, opened.take()).await? {
                Ok(answer) => answer,
                Err(e) => {
                    return Ok(Outcome::Failed { code: e.code(), message: e.to_string() });
                }
            };
            if calls.is_empty() {
                self.emitter.emit(&Part::FinishStep);
                self.messages.push(ChatMessage::assistant(text.clone()));
                return Ok(Outcome::Completed(text));
            }
            for call in &calls {
                self.emitter.emit(&Part::ToolInputAvailable {
                    tool_call_id: call.id.clone(),
                    tool_name: call.name.clone(),
                    input: call.arguments.clone(),
                });
            }
            self.messages.push(ChatMessage::assistant_with_tool_calls(text, calls));
            if let Some(paused) = self.answer_calls(&toolbox).await? {
                return Ok(paused);
            }
            self.emitter.emit(&Part::FinishStep);
            self.emitter.flush().await?;
        }
        Ok(Outcome::Failed {
            code: "max_steps_exceeded",
            message: format!("the agent was still calling tools after {} steps", self.claimed.max_steps),
        })
    }

    /// The tool calls of the last assistant message that have no result yet.
    fn unanswered_calls(&self) -> Vec<ToolCall> {
        let Some(at) = self.messages.iter().rposition(|m| m.role == Role::Assistant) else { return Vec::new() };
        let answered: Vec<&str> = self.messages[at + 1..].iter().filter_map(|m| m.tool_call_id.as_deref()).collect();
        self.messages[at].tool_calls.iter().filter(|call| !answered.contains(&call.id.as_str())).cloned().collect()
    }

    /// Answers the unanswered tool calls in order. A call needing approval runs once approved,
    /// is answered with the denial once denied or expired, and pauses the run while undecided
    /// (the calls after it still run). A remote call's result is recorded at once, so no attempt
    /// makes it again.
    async fn answer_calls(&mut self, toolbox: &Toolbox) -> anyhow::Result<Option<Outcome>> {
        let calls = self.unanswered_calls();
        let decisions = if calls.iter().any(|c| toolbox.requires_approval(&c.name)) {
            approvals::of_run(&self.ctx.db, self.claimed.id).await?
        } else {
            Vec::new()
        };
        let mut waiting = Vec::new();
        for call in calls {
            if toolbox.requires_approval(&call.name) {
                match decisions.iter().find(|a| a.tool_call_id == call.id) {
                    Some(decided) if decided.status == "approved" => {}
                    Some(pending) if pending.status == "pending" => {
                        waiting.push(NewApproval {
                            id: pending.id,
                            ..NewApproval::new(&call.id, &call.name, &call.arguments)
                        });
                        continue;
                    }
                    Some(denied) => {
                        self.emitter.emit(&Part::ToolOutputDenied { tool_call_id: call.id.clone() });
                        let reason = denied.reason.as_deref().unwrap_or("a person denied this call");
                        let output = json!({"error": "the call was denied", "reason": reason});
                        self.messages.push(ChatMessage::tool_result(call.id, output.to_string()));
                        self.save_progress().await?;
                        continue;
                    }
                    None => {
                        waiting.push(NewApproval::new(&call.id, &call.name, &call.arguments));
                        continue;
                    }
                }
            }
            let context = CallContext {
                run: self.claimed.id,
                thread: &self.claimed.thread_id,
                end_user: self.claimed.end_user_id.as_deref(),
                master_key: &self.ctx.master_key,
                allow_private_targets: self.ctx.allow_private_targets,
            };
            let answer = toolbox.call(&context, &call).await;
            let outcome = if answer.is_ok() { "ok" } else { "error" };
            metrics::counter!(m::TOOL_CALLS_TOTAL, "outcome" => outcome).increment(1);
            let result = match answer {
                Ok(output) => {
                    self.emitter
                        .emit(&Part::ToolOutputAvailable { tool_call_id: call.id.clone(), output: output.clone() });
                    output
                }
                Err(error) => {
                    tracing::info!(tool = call.name, error, "tool call failed");
                    self.emitter
                        .emit(&Part::ToolOutputError { tool_call_id: call.id.clone(), error_text: error.clone() });
                    json!({"error": error})
                }
            };
            self.messages.push(ChatMessage::tool_result(call.id, result.to_string()));
            if toolbox.is_remote(&call.name) {
                self.emitter.flush().await?;
                self.save_progress().await?;
            }
        }
        if waiting.is_empty() {
            return Ok(None);
        }
        for approval in &waiting {
            self.emitter.emit(&Part::ToolApprovalRequest {
                approval_id: approval.id.to_string(),
                tool_call_id: approval.tool_call_id.clone(),
            });
        }
        Ok(Some(Outcome::Paused(waiting)))
    }

    fn progress(&self) -> Progress {
        Progress { messages: self.messages[self.progress_start..].to_vec(), usage: self.usage }
    }

    async fn save_progress(&self) -> anyhow::Result<()> {
        Ok(runs::save_progress(&self.ctx.db, self.claimed.id, self.claimed.attempt, &self.progress()).await?)
    }

    /// Leaves the run waiting for people: its stream ends (`finish` with status
    /// `requires_action`), no worker holds it, and an approval or denial puts it back on the queue.
    async fn pause(mut self, approvals: Vec<NewApproval>) -> anyhow::Result<()> {
        self.emitter.emit(&Part::FinishStep);
        let usage = json!({"input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens});
        let terminal = Part::Finish { message_metadata: json!({"usage": usage, "status": RunStatus::RequiresAction}) };
        let terminal = self.emitter.append_terminal(&terminal).await?;
        self.emitter.keep().await?;
        let log = self.emitter.log().await?;
        let (run, attempt) = (self.claimed.id, self.claimed.attempt);
        let ttl = self.ctx.approval_ttl;
        if !runs::pause(&self.ctx.db, run, attempt, &self.progress(), &log, &approvals, ttl).await? {
            tracing::warn!("attempt superseded: its lease expired and another worker took the run");
            return Ok(());
        }
        self.emitter.announce(&terminal).await?;
        tracing::info!(approvals = approvals.len(), "run waits for approval");
        Ok(())
    }

    /// A provider call, retried on rate limits, server errors, timeouts and dropped connections.
    /// The stream says when a call is retried; only the successful call's text is kept.
    async fn call_with_retries(
        &mut self,
        provider: &Provider,
        request: &ChatRequest,
        mut opened: Option<Box<Opened>>,
    ) -> anyhow::Result<Result<(String, Vec<crate::provider::ToolCall>), ProviderError>> {
        let mut retry = 0;
        loop {
            let result = self.call(provider, request, opened.take()).await?;
            let outcome = result.as_ref().map_or_else(ProviderError::code, |_| "ok");
            let kind = self.claimed.provider_kind.clone();
            metrics::counter!(m::PROVIDER_REQUESTS_TOTAL, "provider_kind" => kind, "outcome" => outcome).increment(1);
            match result {
                Err(e) if e.is_retryable() && retry < self.ctx.retry.max_retries => {
                    retry += 1;
                    metrics::counter!(m::PROVIDER_RETRIES_TOTAL).increment(1);
                    let delay = self.ctx.retry.delay(retry, &e);
                    tracing::info!(error = %e, retry, delay_ms = delay.as_millis() as u64, "retrying provider call");
                    self.emitter.emit(&Part::DataRun {
                        data: json!({"status": "retrying", "attempt": self.claimed.attempt, "retry": retry,
                                     "reason": e.code(), "delay_ms": delay.as_millis() as u64}),
                        transient: true,
                    });
                    self.emitter.flush().await?;
                    tokio::time::sleep(delay).await;
                }
                result => return Ok(result),
            }
        }
    }

    /// One streamed provider call (or the answer to `opened`, if that is the same call): text
    /// deltas go out as they arrive.
    async fn call(
        &mut self,
        provider: &Provider,
        request: &ChatRequest,
        opened: Option<Box<Opened>>,
    ) -> anyhow::Result<Result<(String, Vec<crate::provider::ToolCall>), ProviderError>> {
        // the step's opening events go out while the provider request is on its way (boxed: it
        // lives until the response starts, while the run lasts as long as the response)
        let (flushed, stream) = match opened.and_then(|opened| opened.answer_to(provider.config(), request)) {
            Some(answer) => tokio::join!(self.emitter.flush(), Box::pin(answer)),
            None => tokio::join!(self.emitter.flush(), Box::pin(provider.stream(request))),
        };
        flushed?;
        let stream = match stream {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let mut batches = stream.ready_chunks(BATCH);
        let mut text = String::new();
        let mut text_id: Option<String> = None;
        let mut calls = Vec::new();
        while let Some(batch) = batches.next().await {
            for event in batch {
                match event {
                    Ok(ProviderEvent::TextDelta(delta)) => {
                        let id = text_id.get_or_insert_with(|| {
                            self.text_parts += 1;
                            format!("txt_{}", self.text_parts)
                        });
                        if text.is_empty() {
                            self.emitter.emit(&Part::TextStart { id: id.clone() });
                            if self.first_token_at.is_none() {
                                self.first_token_at = Some(Utc::now());
                                #[allow(clippy::cast_precision_loss)]
                                let queued = self.queue_wait_us.max(0) as f64 / 1e6;
                                let since_push = queued + self.started.elapsed().as_secs_f64();
                                metrics::histogram!(m::TIME_TO_FIRST_TOKEN).record(since_push);
                            }
                        }
                        text.push_str(&delta);
                        self.emitter.emit(&Part::TextDelta { id: id.clone(), delta });
                    }
                    Ok(ProviderEvent::ToolCall(call)) => calls.push(call),
                    Ok(ProviderEvent::Finish { usage, .. }) => {
                        self.usage.input_tokens += usage.input_tokens;
                        self.usage.output_tokens += usage.output_tokens;
                    }
                    Err(e) => {
                        self.emitter.flush().await?;
                        return Ok(Err(e));
                    }
                }
            }
            self.emitter.flush().await?;
        }
        if let Some(id) = text_id {
            self.emitter.emit(&Part::TextEnd { id });
        }
        Ok(Ok((text, calls)))
    }

    /// Records the outcome in Postgres, then announces the terminal event, then starts the next
    /// run waiting on the thread.
    async fn finish(mut self, outcome: Outcome) -> anyhow::Result<()> {
        let usage = json!({"input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens});
        let (status, output, error, terminal) = match outcome {
            Outcome::Completed(text) => (
                RunStatus::Completed,
                Some(text),
                None,
                Part::Finish { message_metadata: json!({"usage": usage, "status": RunStatus::Completed}) },
            ),
            Outcome::Failed { code, message } => {
                tracing::warn!(code, message, "run failed");
                (
                    RunStatus::Failed,
                    None,
                    Some(json!({"code": code, "message": message})),
                    Part::Error { error_text: message },
                )
            }
            Outcome::Cancelled => {
                let [notice, abort] = runq_shared::cancel::cancelled_parts();
                self.emitter.emit(&notice);
                let error = json!({"code": "cancelled", "message": "the run was cancelled"});
                (RunStatus::Cancelled, None, Some(error), abort)
            }
            Outcome::TimedOut => {
                let message = "the run exceeded its time limit".to_owned();
                let error = json!({"code": "timed_out", "message": message});
                (RunStatus::TimedOut, None, Some(error), Part::Error { error_text: message })
            }
            Outcome::HandBack | Outcome::Paused(_) => unreachable!("a handed-back or paused run does not finish here"),
        };
        let terminal = self.emitter.append_terminal(&terminal).await?;
        let log = self.emitter.log().await?;
        let thread_messages =
            if status == RunStatus::Completed { self.messages.split_off(self.turn_start) } else { Vec::new() };
        let finish = Finish {
            status,
            output,
            thread_messages,
            usage: self.usage,
            error,
            events: log,
            first_token_at: self.first_token_at,
            queue_wait_us: Some(self.queue_wait_us),
        };
        let run = self.claimed.id;
        let (_, finished) = self.ctx.finishing.submit((run, self.claimed.attempt, finish)).await?;
        let Some(next_on_thread) = finished else {
            tracing::warn!("attempt superseded: its lease expired and another worker took the run");
            return Ok(());
        };
        m::run_finished(status);
        metrics::histogram!(m::RUN_DURATION).record(self.started.elapsed().as_secs_f64());
        self.ctx.webhooks_due.notify_one();
        self.emitter.announce(&terminal).await?;
        self.start_successors(next_on_thread).await?;
        tracing::info!(status = status.as_str(), "run finished");
        Ok(())
    }

    /// Starts what waited for this run to finish: the next run of its thread, and (under a
    /// concurrency cap) the oldest queued runs of its workspace. Extra jobs are harmless: a claim
    /// that cannot proceed drops its job.
    async fn start_successors(&self, next_on_thread: Option<RunId>) -> anyhow::Result<()> {
        let mut next: Vec<RunId> = next_on_thread.into_iter().collect();
        if let Some(cap) = self.cap {
            let workspace = self.claimed.workspace_id;
            next.extend(runs::next_in_workspace(&self.ctx.db, workspace, i64::from(cap.clamp(1, 8))).await?);
        }
        self.push(&next).await
    }

    async fn push(&self, runs: &[RunId]) -> anyhow::Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let jobs: Vec<Job> = runs.iter().map(|run| Job::new(*run, self.claimed.workspace_id, self.cap)).collect();
        queue::push(&mut self.ctx.broker.conn.clone(), self.ctx.broker.queue(), &jobs).await?;
        Ok(())
    }
}
