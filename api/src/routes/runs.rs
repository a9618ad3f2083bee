//! Runs: `POST /v1/run` (stream, sync, async, batch), reading runs, and their event streams.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use runq_shared::admission::RunInput;
use runq_shared::chat::{ChatMessage, Role};
use runq_shared::db::runs::{self, Cancel, RunFilter, RunRecord};
use runq_shared::domain::{AgentRef, ThreadId};
use runq_shared::events::RunKeys;
use runq_shared::id::{AgentId, OperationId, RunId, VersionId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::operations::OperationBody;
use super::{List, PageQuery};
use crate::error::{Error, ErrorBody, Result};
use crate::extract::{Caller, HashedJson, Path, Query};
use crate::live::{self, RunStream};
use crate::state::{AppState, Limits};
use crate::submit::{self, Delivery, Mode};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run))
        .routes(routes!(run_alias))
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(events))
        .routes(routes!(cancel))
        .routes(routes!(cancel_by_key))
}

/// A message of the new turn, as a client sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct InMessage {
    /// `user`, `assistant` or `system`.
    pub role: String,
    pub content: String,
}

/// One run's input: exactly one of `prompt`, `query`, `input` or `messages`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct TurnFields {
    pub prompt: Option<String>,
    pub query: Option<String>,
    pub input: Option<String>,
    pub messages: Option<Vec<InMessage>>,
    /// Fill `{{name}}` placeholders of the agent's prompts.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    /// Provider parameters (`temperature`, `max_tokens`, …) overriding the version's.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    /// Continue this thread (created under this id when new).
    #[serde(alias = "threadId")]
    pub thread_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    /// Time limit of the run from its first start, in milliseconds (default from the server).
    pub timeout_ms: Option<u32>,
}

/// Request-wide settings every run of a request shares.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub cancel_on_disconnect: bool,
    pub default_timeout_ms: u32,
}

impl RunOptions {
    pub fn new(limits: &Limits, cancel_on_disconnect: bool) -> Self {
        Self { cancel_on_disconnect, default_timeout_ms: limits.run_timeout_ms }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RunRequest {
    /// Agent id (`agt_…`) or slug; `agent` is accepted too.
    #[serde(alias = "agent")]
    pub agent_id: Option<String>,
    #[serde(flatten)]
    pub turn: TurnFields,
    /// Stream the answer as SSE (also when the request accepts `text/event-stream`).
    #[serde(default)]
    pub stream: bool,
    /// Return 202 with an operation at once.
    #[serde(default, rename = "async")]
    pub is_async: bool,
    /// Many runs of the agent: 202 with an operation; items inherit the top-level fields.
    pub batch: Option<Vec<TurnFields>>,
    /// Cancel the run when a streaming client disconnects (default: the run goes on).
    #[serde(default)]
    pub cancel_on_disconnect: bool,
    /// Post the run's end here (every run of a batch), signed with the workspace's default
    /// secret (`POST /v1/webhooks/secret`).
    pub webhook: Option<String>,
}

impl TurnFields {
    /// Converts to a run input; `field` prefixes error fields (`batch[3].`).
    pub fn into_input(self, field: &str, defaults: &TurnFields, options: RunOptions) -> Result<RunInput> {
        let given = [self.prompt.is_some(), self.query.is_some(), self.input.is_some(), self.messages.is_some()];
        let turn = match (self.prompt.or(self.query).or(self.input), self.messages) {
            _ if given.iter().filter(|g| **g).count() > 1 => {
                return Err(Error::invalid(
                    format!("{field}prompt"),
                    "give only one of prompt, query, input or messages",
                ));
            }
            (Some(text), _) if !text.trim().is_empty() => vec![ChatMessage::user(text)],
            (None, Some(messages)) if !messages.is_empty() => messages
                .into_iter()
                .enumerate()
                .map(|(i, m)| message(&format!("{field}messages[{i}]"), m))
                .collect::<Result<_>>()?,
            _ => {
                return Err(Error::invalid(
                    format!("{field}prompt"),
                    "a run needs a non-empty prompt, query, input or messages",
                ));
            }
        };
        let mut variables = defaults.variables.clone();
        variables.extend(self.variables);
        let mut parameters = defaults.parameters.clone();
        parameters.extend(self.parameters);
        let thread = match self.thread_id.or_else(|| defaults.thread_id.clone()) {
            Some(id) => Some(ThreadId::parse(&format!("{field}thread_id"), &id)?),
            None => None,
        };
        let metadata = self.metadata.or_else(|| defaults.metadata.clone()).unwrap_or_else(|| json!({}));
        if !metadata.is_object() {
            return Err(Error::invalid(format!("{field}metadata"), "must be an object"));
        }
        let timeout_ms = self.timeout_ms.or(defaults.timeout_ms).unwrap_or(options.default_timeout_ms);
        let timeout_ms = i32::try_from(timeout_ms)
            .ok()
            .filter(|t| (1..=86_400_000).contains(t))
            .ok_or_else(|| Error::invalid(format!("{field}timeout_ms"), "must be between 1 and 86400000"))?;
        Ok(RunInput {
            variables,
            turn,
            parameters,
            thread,
            metadata,
            cancel_on_disconnect: options.cancel_on_disconnect,
            timeout_ms,
            webhook_url: None,
        })
    }
}

fn message(field: &str, m: InMessage) -> Result<ChatMessage> {
    let role = match m.role.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "system" => Role::System,
        _ => {
            return Err(Error::invalid(format!("{field}.role"), "must be user, assistant or system"));
        }
    };
    Ok(ChatMessage { role, ..ChatMessage::user(m.content) })
}

/// Whether the caller asked for SSE through its `Accept` header.
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"))
}

/// Turns a run request into inputs and a delivery mode.
pub fn plan(request: RunRequest, headers: &HeaderMap, limits: &Limits) -> Result<(AgentRef, Vec<RunInput>, Mode)> {
    let agent = request.agent_id.as_deref().ok_or_else(|| Error::invalid("agent_id", "missing field `agent_id`"))?;
    let agent = AgentRef::parse(agent)?;
    let cancel = RunOptions::new(limits, request.cancel_on_disconnect);
    if let Some(batch) = request.batch {
        if batch.is_empty() {
            return Err(Error::invalid("batch", "must hold at least one item"));
        }
        let inputs = batch
            .into_iter()
            .enumerate()
            .map(|(i, item)| item.into_input(&format!("batch[{i}]."), &request.turn, cancel))
            .collect::<Result<_>>()?;
        return Ok((agent, inputs, Mode::Batch));
    }
    let mode = if request.is_async {
        Mode::Async
    } else if request.stream || wants_stream(headers) {
        Mode::Stream
    } else {
        Mode::Sync
    };
    let input = request.turn.clone().into_input("", &TurnFields::default(), cancel)?;
    Ok((agent, vec![input], mode))
}

/// A run as the API shows it (seed 000's `messages` shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunObject {
    pub id: RunId,
    /// Always `"run"`.
    pub object: &'static str,
    /// `queued | running | completed | failed | cancelled | timed_out`.
    pub status: String,
    pub agent_id: AgentId,
    pub version_id: VersionId,
    pub thread_id: String,
    pub operation_id: Option<OperationId>,
    pub attempt: i32,
    /// The answer as chat messages: `[{role: "assistant", content}]` once completed.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
    pub output: Option<String>,
    #[schema(value_type = Object)]
    pub usage: Value,
    pub execution_time_ms: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<RunRecord> for RunObject {
    fn from(run: RunRecord) -> Self {
        let usage = run.usage.map(|u| u.0).unwrap_or_default();
        Self {
            execution_time_ms: run.execution_time_ms(),
            messages: run.output.iter().map(|content| json!({"role": "assistant", "content": content})).collect(),
            usage: json!({
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            }),
            id: run.id,
            object: "run",
            status: run.status,
            agent_id: run.agent_id,
            version_id: run.version_id,
            thread_id: run.thread_id,
            operation_id: run.operation_id,
            attempt: run.attempt,
            output: run.output,
            error: run.error.map(|e| e.0),
            metadata: run.metadata.0,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
        }
    }
}

/// The SSE response of a run, with the protocol and id headers.
pub fn stream_response(run: RunId, thread: &str, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("x-vercel-ai-ui-message-stream", HeaderValue::from_static("v1"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(v) = HeaderValue::from_str(&run.to_string()) {
        headers.insert("x-run-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(thread) {
        headers.insert("x-thread-id", v);
    }
    response
}

fn respond(delivery: Delivery) -> Response {
    match delivery {
        Delivery::Stream { run, thread, events } => stream_response(run, &thread, events),
        Delivery::Done(run) => JsonResponse(RunObject::from(*run)).into_response(),
        Delivery::Accepted { operation, total } => {
            (StatusCode::ACCEPTED, JsonResponse(OperationBody::pending(operation, total))).into_response()
        }
    }
}

/// Runs an agent: sync JSON (default), SSE (`stream: true` or `Accept: text/event-stream`),
/// `async: true` or `batch: [...]` (202 with an operation).
#[utoipa::path(post, path = "/v1/run", tag = "runs", security(("api_key" = [])), request_body = RunRequest,
    responses(
        (status = 200, description = "Sync answer, or the SSE stream", body = RunObject),
        (status = 202, description = "Async, batch, or a sync run that outlived the wait", body = OperationBody),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn run(
    State(state): State<AppState>,
    Caller(auth): Caller,
    headers: HeaderMap,
    HashedJson(body, hash): HashedJson<RunRequest>,
) -> Result<Response> {
    if body.batch.as_ref().is_some_and(|b| b.len() > state.limits.max_batch) {
        return Err(Error::invalid("batch", format!("at most {} items", state.limits.max_batch)));
    }
    let idempotency = submit::idempotency(&headers, hash)?;
    let webhook = match body.webhook.as_deref() {
        Some(url) => Some(crate::webhook::check_url(&state, "webhook", url).await?),
        None => None,
    };
    let (agent, mut inputs, mode) = plan(body, &headers, &state.limits)?;
    inputs.iter_mut().for_each(|input| input.webhook_url.clone_from(&webhook));
    Ok(respond(submit::submit(&state, auth.workspace_id, &agent, inputs, mode, idempotency).await?))
}

/// Alias of `POST /v1/run`.
#[utoipa::path(post, path = "/api/v1/run", tag = "runs", security(("api_key" = [])), request_body = RunRequest,
    responses((status = 200, body = RunObject), (status = 202, body = OperationBody)))]
async fn run_alias(
    state: State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: HashedJson<RunRequest>,
) -> Result<Response> {
    run(state, caller, headers, body).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RunListQuery {
    page: Option<u32>,
    limit: Option<u32>,
    /// Only runs of this agent (`agt_…`).
    #[param(value_type = Option<String>)]
    agent_id: Option<AgentId>,
    /// Only runs in this status.
    status: Option<String>,
    /// Only runs of this thread.
    thread_id: Option<String>,
}

/// Lists the workspace's runs, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", security(("api_key" = [])), params(RunListQuery),
    responses((status = 200, body = List<RunObject>)))]
async fn list(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Query(q): Query<RunListQuery>,
) -> Result<JsonResponse<List<RunObject>>> {
    let page = PageQuery { page: q.page, limit: q.limit }.page()?;
    let filter = RunFilter { agent: q.agent_id, status: q.status, thread: q.thread_id };
    let runs = runs::list(&state.db, auth.workspace_id, &filter, page).await?;
    let runs =
        runq_shared::db::Paged { items: runs.items.into_iter().map(RunObject::from).collect(), total: runs.total };
    Ok(List::new(page, runs))
}

/// Shows a run.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", security(("api_key" = [])),
    params(("id" = String, Path, description = "`run_…`")),
    responses((status = 200, body = RunObject), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<RunId>,
) -> Result<JsonResponse<RunObject>> {
    Ok(JsonResponse(runs::get(&state.db, auth.workspace_id, id).await?.into()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Resume after this `seq` (same as the `Last-Event-ID` header).
    after: Option<u64>,
}

/// The run's event stream (SSE), live or long finished, resumable with `Last-Event-ID` or
/// `?after=`.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", security(("api_key" = [])),
    params(("id" = String, Path, description = "`run_…`"), EventsQuery),
    responses((status = 200, description = "text/event-stream"), (status = 404, body = ErrorBody)))]
async fn events(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<RunId>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let run = runs::get(&state.db, auth.workspace_id, id).await?;
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(|v| {
        v.trim().parse::<u64>().map_err(|_| Error::invalid("Last-Event-ID", "must be an event seq (a number)"))
    });
    let after = match (last_event_id, q.after) {
        (Some(parsed), _) => parsed?,
        (None, after) => after.unwrap_or(0),
    };
    let keys = RunKeys::new(state.broker.prefix(), run.id);
    let subscription = state.hub.subscribe(keys.channel.clone()).await;
    let events = live::sse(RunStream {
        state: state.clone(),
        workspace: auth.workspace_id,
        run: run.id,
        keys,
        subscription,
        after,
        cancel_on_disconnect: run.cancel_on_disconnect,
    });
    Ok(stream_response(run.id, &run.thread_id, events))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelBody {
    pub run_id: RunId,
    /// `cancelled` when the run was still queued, `cancelling` while its worker stops it.
    pub status: &'static str,
}

async fn cancel_run(state: &AppState, workspace: runq_shared::id::WorkspaceId, run: RunId) -> Result<Response> {
    let status = match runq_shared::cancel::request(&state.db, &state.broker, workspace, run).await? {
        Cancel::Cancelled => "cancelled",
        Cancel::Cancelling => "cancelling",
        Cancel::Finished => {
            return Err(Error::Conflict { code: "run_finished", message: "The run has already finished".into() });
        }
    };
    Ok((StatusCode::ACCEPTED, JsonResponse(CancelBody { run_id: run, status })).into_response())
}

/// Cancels a run: a queued run ends at once, a running one as soon as its worker hears (the
/// provider call is aborted).
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", security(("api_key" = [])),
    params(("id" = String, Path, description = "`run_…`")),
    responses((status = 202, body = CancelBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel(State(state): State<AppState>, Caller(auth): Caller, Path(id): Path<RunId>) -> Result<Response> {
    cancel_run(&state, auth.workspace_id, id).await
}

/// Cancels the run created with the `Idempotency-Key` header's key, for a client that never saw
/// the run id.
#[utoipa::path(post, path = "/v1/runs/cancel", tag = "runs", security(("api_key" = [])),
    params(("Idempotency-Key" = String, Header)),
    responses((status = 202, body = CancelBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_by_key(State(state): State<AppState>, Caller(auth): Caller, headers: HeaderMap) -> Result<Response> {
    let key =
        submit::idempotency(&headers, [0; 32])?.ok_or_else(|| Error::invalid("Idempotency-Key", "missing header"))?.key;
    let run = runq_shared::admission::run_for_key(&state.db, auth.workspace_id, &key)
        .await?
        .ok_or_else(|| Error::NotFound { code: "run_not_found", message: "Run not found".into() })?;
    cancel_run(&state, auth.workspace_id, run).await
}
