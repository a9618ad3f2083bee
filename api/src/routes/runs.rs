//! Runs: `POST /v1/run` (stream, sync, async, batch), reading runs, and their event streams.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use runq_shared::db::agents;
use runq_shared::db::approvals::{self, Approval};
use runq_shared::db::keys::KeyAuth;
use runq_shared::db::runs::{self, Cancel, RunFilter, RunRecord, RunStatus};
use runq_shared::domain::AgentRef;
use runq_shared::events::RunKeys;
use runq_shared::id::{AgentId, OperationId, RunId, VersionId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::operations::OperationBody;
use super::{List, PageQuery};
use crate::error::{Error, ErrorBody, Result};
use crate::extract::{Caller, HashedJson, Path, Query};
use crate::live::{self, RunStream};
use crate::request::{RunRequest, RunRoute, accepts_json_only};
use crate::state::AppState;
use crate::submit::{self, Delivery};

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

/// A run as the API shows it (seed 000's `messages` shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunObject {
    pub id: RunId,
    /// Always `"run"`.
    pub object: &'static str,
    pub status: RunStatus,
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
    /// While `requires_action`: the tool calls waiting for a person.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending_approvals: Vec<Approval>,
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
            pending_approvals: Vec::new(),
        }
    }
}

/// An SSE response as proxies must pass it: not cached, not buffered.
pub fn sse_response(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The SSE response of a run, with the protocol and id headers.
pub fn stream_response(run: RunId, thread: &str, response: Response) -> Response {
    let mut response = sse_response(response);
    let headers = response.headers_mut();
    headers.insert("x-vercel-ai-ui-message-stream", HeaderValue::from_static("v1"));
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
        Delivery::Accepted { operation, total, run } => {
            (StatusCode::ACCEPTED, JsonResponse(OperationBody::pending(operation, total, run))).into_response()
        }
        Delivery::Started { run } => {
            (StatusCode::ACCEPTED, JsonResponse(json!({"run_id": run, "status": "queued"}))).into_response()
        }
    }
}

async fn run_on(
    route: RunRoute,
    state: AppState,
    auth: KeyAuth,
    headers: HeaderMap,
    mut body: RunRequest,
    hash: [u8; 32],
) -> Result<Response> {
    let idempotency = submit::idempotency(&headers, hash)?;
    let webhook = match body.webhook.take() {
        Some(url) => Some(crate::outbound::check_url(&state, "webhook", &url).await?),
        None => None,
    };
    if let Some(user) = headers.get("x-end-user-id").and_then(|v| v.to_str().ok()) {
        body.turn.user.get_or_insert_with(|| user.to_owned());
    }
    let mut plan = body.plan(&headers, route, &state.limits)?;
    plan.webhook_url = webhook;
    Ok(respond(submit::submit(&state, auth.workspace_id, plan, idempotency).await?))
}

/// Runs an agent. Without `stream`, answers as SSE unless `Accept` asks for JSON only
/// (`stream: false` gives the JSON run object); `async: true` or `batch: [...]` give 202 with an
/// operation. Also takes the AI SDK chat transport's body (`id`, UI `messages`, `trigger`).
#[utoipa::path(post, path = "/v1/run", tag = "runs", security(("api_key" = [])), request_body = RunRequest,
    responses(
        (status = 200, description = "The SSE stream, or the sync answer",
            content((RunObject = "application/json"), (super::SseEvent = "text/event-stream"))),
        (status = 202, description = "Async, batch, or a sync run that outlived the wait", body = OperationBody),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn run(
    State(state): State<AppState>,
    Caller(auth): Caller,
    headers: HeaderMap,
    HashedJson(body, hash): HashedJson<RunRequest>,
) -> Result<Response> {
    run_on(RunRoute::Stream, state, auth, headers, body, hash).await
}

/// `POST /v1/run` as reference `000_…` documents it: without `stream` (or `Accept:
/// text/event-stream`) it answers JSON.
#[utoipa::path(post, path = "/api/v1/run", tag = "runs", security(("api_key" = [])), request_body = RunRequest,
    responses((status = 200, description = "The sync answer, or the SSE stream",
        content((RunObject = "application/json"), (super::SseEvent = "text/event-stream"))), (status = 202, body = OperationBody)))]
async fn run_alias(
    State(state): State<AppState>,
    Caller(auth): Caller,
    headers: HeaderMap,
    HashedJson(body, hash): HashedJson<RunRequest>,
) -> Result<Response> {
    run_on(RunRoute::Json, state, auth, headers, body, hash).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RunListQuery {
    /// 1-based page number (default 1).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Only runs of this agent (id `agt_…` or slug).
    agent_id: Option<String>,
    /// Only runs in this status.
    status: Option<RunStatus>,
    /// Only runs of this thread.
    thread_id: Option<String>,
}

/// Lists the workspace's runs, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", security(("api_key" = [])), params(RunListQuery),
    responses((status = 200, body = List<RunObject>), (status = 404, description = "`agent_id` names no agent", body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Query(q): Query<RunListQuery>,
) -> Result<JsonResponse<List<RunObject>>> {
    let page = PageQuery { page: q.page, limit: q.limit }.page()?;
    let agent = match q.agent_id.as_deref().map(AgentRef::parse).transpose()? {
        Some(AgentRef::Id(id)) => Some(id),
        Some(slug) => Some(agents::get(&state.db, auth.workspace_id, &slug).await?.id),
        None => None,
    };
    let filter = RunFilter { agent, status: q.status, thread: q.thread_id };
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
    let mut run = RunObject::from(runs::get(&state.db, auth.workspace_id, id).await?);
    if run.status == RunStatus::RequiresAction {
        run.pending_approvals = approvals::of_run(&state.db, run.id).await?;
        run.pending_approvals.retain(|a| a.status == "pending");
    }
    Ok(JsonResponse(run))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Resume after this `seq` (same as the `Last-Event-ID` header).
    after: Option<u64>,
    /// With `Accept: application/json`: most events in one page (1-1000, default 100).
    limit: Option<usize>,
}

/// One event of a run, for clients that poll (`Accept: application/json`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventItem {
    pub seq: u64,
    /// The part's `type` (`text-delta`, `tool-input-available`, `finish`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The UI message stream part.
    #[schema(value_type = Object)]
    pub data: Value,
    /// When the worker emitted it.
    pub created_at: Option<DateTime<Utc>>,
}

/// A page of a run's events; poll again with `?after=next_after`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub data: Vec<EventItem>,
    pub next_after: u64,
}

impl EventPage {
    fn new(events: Vec<runq_shared::events::Event>, after: u64, limit: usize) -> Self {
        let data: Vec<EventItem> = events
            .into_iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .map(|e| {
                let data: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
                let created_at = (e.at_ms > 0).then(|| DateTime::from_timestamp_millis(e.at_ms)).flatten();
                EventItem { seq: e.seq, kind: data["type"].as_str().unwrap_or_default().to_owned(), data, created_at }
            })
            .collect();
        let next_after = data.last().map_or(after, |e| e.seq);
        Self { data, next_after }
    }
}

/// The run's event stream (SSE), live or long finished, resumable with `Last-Event-ID` or
/// `?after=`. With `Accept: application/json`, a page of the events logged so far instead
/// (`{data: [{seq, type, data}], next_after}`), for clients that poll.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", security(("api_key" = [])),
    params(("id" = String, Path, description = "`run_…`"), EventsQuery),
    responses((status = 200, description = "The SSE stream, or a page of events",
            content((EventPage = "application/json"), (super::SseEvent = "text/event-stream"))),
        (status = 404, body = ErrorBody)))]
async fn events(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<RunId>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let run = runs::get(&state.db, auth.workspace_id, id).await?;
    let after = last_event_id(&headers)?.or(q.after).unwrap_or(0);
    if accepts_json_only(&headers) {
        let limit = q.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 1000"));
        }
        let logged = live::logged(&state, auth.workspace_id, run.id, after).await?;
        return Ok(JsonResponse(EventPage::new(logged, after, limit)).into_response());
    }
    let keys = RunKeys::new(state.broker.prefix(), run.id);
    let subscription = state.hub.subscribe(keys.channel.clone()).await;
    let events = live::sse(RunStream {
        state: state.clone(),
        workspace: auth.workspace_id,
        run: run.id,
        keys,
        subscription,
        after,
        fresh: false,
        cancel_on_disconnect: run.cancel_on_disconnect,
        framing: live::Framing::UiMessageStream,
    });
    Ok(stream_response(run.id, &run.thread_id, events))
}

/// The `Last-Event-ID` header: the `seq` a reconnecting client already has.
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(value) = headers.get("last-event-id") else { return Ok(None) };
    let seq = value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok());
    seq.map(Some).ok_or_else(|| Error::invalid("Last-Event-ID", "must be an event seq (a number)"))
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
