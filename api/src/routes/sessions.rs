//! Sessions (reference `002_…`): conversations with one agent, as a layer over threads and runs.
//! Posting a user message starts a run on the session's thread; the session's events are that
//! run's events under the document's `event:` names, resumable with `Last-Event-ID` like any run
//! stream.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use runq_shared::db::agents::{self, Agent};
use runq_shared::db::keys::KeyAuth;
use runq_shared::db::sessions::{self, Session, SessionMessage};
use runq_shared::domain::AgentRef;
use runq_shared::id::RunId;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::runs::{last_event_id, sse_response};
use super::{List, PageQuery};
use crate::error::{Error, ErrorBody, Result};
use crate::extract::{Caller, Json, Path, Query};
use crate::live;
use crate::request::{Plan, RunOptions, TurnFields};
use crate::state::AppState;
use crate::submit::{self, Delivery, Mode};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get))
        .routes(routes!(post_message, list_messages))
        .routes(routes!(events))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateSession {
    title: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MessageContent {
    text: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PostMessage {
    /// Only `user` messages start a turn.
    role: String,
    content: MessageContent,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// The run whose events to stream (default: the session's latest run, or its next one).
    #[param(value_type = Option<String>)]
    run_id: Option<RunId>,
    /// Resume after this event id (same as `Last-Event-ID`).
    after: Option<u64>,
}

async fn agent_of(state: &AppState, auth: &KeyAuth, id: &str) -> Result<Agent> {
    Ok(agents::get(&state.db, auth.workspace_id, &AgentRef::parse(id)?).await?)
}

/// Opens a session with the agent.
#[utoipa::path(post, path = "/v1/agents/{id}/sessions", tag = "sessions", security(("api_key" = [])),
    request_body = CreateSession, params(("id" = String, Path, description = "Agent id or slug")),
    responses((status = 201, body = Session), (status = 404, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    Json(body): Json<CreateSession>,
) -> Result<(StatusCode, JsonResponse<Session>)> {
    let agent = agent_of(&state, &auth, &id).await?;
    let title = body.title.as_deref().map(|t| runq_shared::domain::name("title", t)).transpose()?;
    let session = sessions::create(&state.db, auth.workspace_id, agent.id, title.as_deref()).await?;
    Ok((StatusCode::CREATED, JsonResponse(session)))
}

/// The agent's sessions, newest first.
#[utoipa::path(get, path = "/v1/agents/{id}/sessions", tag = "sessions", security(("api_key" = [])),
    params(("id" = String, Path, description = "Agent id or slug"), PageQuery),
    responses((status = 200, body = List<Session>), (status = 404, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<Session>>> {
    let page = query.page()?;
    let agent = agent_of(&state, &auth, &id).await?;
    Ok(List::new(page, sessions::list(&state.db, auth.workspace_id, agent.id, page).await?))
}

/// Shows a session: `pending` while idle, `running` while a turn is under way.
#[utoipa::path(get, path = "/v1/agents/{id}/sessions/{session_id}", tag = "sessions", security(("api_key" = [])),
    params(("id" = String, Path, description = "Agent id or slug"), ("session_id" = String, Path)),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path((id, session)): Path<(String, String)>,
) -> Result<JsonResponse<Session>> {
    let agent = agent_of(&state, &auth, &id).await?;
    Ok(JsonResponse(sessions::get(&state.db, auth.workspace_id, agent.id, &session).await?))
}

/// Sends a user message: 201 with the stored message, and the agent's turn starts.
#[utoipa::path(post, path = "/v1/agents/{id}/sessions/{session_id}/messages", tag = "sessions",
    security(("api_key" = [])), request_body = PostMessage,
    params(("id" = String, Path, description = "Agent id or slug"), ("session_id" = String, Path)),
    responses((status = 201, body = SessionMessage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn post_message(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path((id, session)): Path<(String, String)>,
    Json(body): Json<PostMessage>,
) -> Result<(StatusCode, JsonResponse<SessionMessage>)> {
    if body.role != "user" {
        return Err(Error::invalid("role", "only user messages can be sent"));
    }
    let agent = agent_of(&state, &auth, &id).await?;
    let session = sessions::get(&state.db, auth.workspace_id, agent.id, &session).await?;
    let turn =
        TurnFields { prompt: Some(body.content.text), thread_id: Some(session.id.clone()), ..TurnFields::default() };
    let plan = Plan::one(AgentRef::Id(agent.id), turn, RunOptions::new(&state.limits, false), Mode::Detached);
    let Delivery::Started { run } = submit::submit(&state, auth.workspace_id, plan, None).await? else {
        return Err(Error::Internal(anyhow::anyhow!("a detached submission was not started")));
    };
    let turn = sessions::turn_of(&state.db, auth.workspace_id, &session.id, run).await?;
    Ok((StatusCode::CREATED, JsonResponse(turn)))
}

/// The session's user and assistant messages, oldest first.
#[utoipa::path(get, path = "/v1/agents/{id}/sessions/{session_id}/messages", tag = "sessions",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Agent id or slug"), ("session_id" = String, Path), PageQuery),
    responses((status = 200, body = List<SessionMessage>), (status = 404, body = ErrorBody)))]
async fn list_messages(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path((id, session)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<SessionMessage>>> {
    let page = query.page()?;
    let agent = agent_of(&state, &auth, &id).await?;
    let session = sessions::get(&state.db, auth.workspace_id, agent.id, &session).await?;
    Ok(List::new(page, sessions::messages(&state.db, auth.workspace_id, &session.id, page).await?))
}

/// The session's events (SSE): `session.started`, `step.started`, `message.delta`,
/// `message.created`, `tool.started`, `tool.completed`, then `session.completed` or
/// `session.failed`. Follows the latest run, or waits for the next one.
#[utoipa::path(get, path = "/v1/agents/{id}/sessions/{session_id}/events", tag = "sessions",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Agent id or slug"), ("session_id" = String, Path), EventsQuery),
    responses((status = 200, description = "The SSE stream", body = super::SseEvent, content_type = "text/event-stream"), (status = 404, body = ErrorBody)))]
async fn events(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path((id, session)): Path<(String, String)>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let agent = agent_of(&state, &auth, &id).await?;
    let session = sessions::get(&state.db, auth.workspace_id, agent.id, &session).await?;
    let after = last_event_id(&headers)?.or(query.after).unwrap_or(0);
    Ok(sse_response(live::session_sse(state, auth.workspace_id, session.id, query.run_id, after)))
}
