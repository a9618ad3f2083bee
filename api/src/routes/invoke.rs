//! Seed 001's agent routes: `POST /v1/agents/{id}/invoke` and `GET /v1/agents/{id}/stream`.

use axum::Json as JsonResponse;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runq_shared::db::runs::{RunRecord, RunStatus};
use runq_shared::domain::AgentRef;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::operations::OperationBody;
use super::runs::stream_response;
use crate::error::{Error, ErrorBody, Result};
use crate::extract::{Caller, Json, Path};
use crate::request::{Plan, RunOptions, TurnFields};
use crate::state::AppState;
use crate::submit::{self, Delivery, Mode};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(invoke)).routes(routes!(stream))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InvokeRequest {
    #[serde(flatten)]
    turn: TurnFields,
    /// Many queries at once: 202 with an operation.
    batch: Option<Vec<TurnFields>>,
}

/// Runs the agent and answers in seed 001's envelope:
/// `{status: "success", data: {result, metadata: {execution_time, tokens_used}}}`.
#[utoipa::path(post, path = "/v1/agents/{id}/invoke", tag = "agents", security(("api_key" = [])), request_body = InvokeRequest,
    params(("id" = String, Path, description = "Agent id or slug")),
    responses((status = 200, body = Object), (status = 202, body = OperationBody), (status = 404, body = ErrorBody)))]
async fn invoke(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    Json(body): Json<InvokeRequest>,
) -> Result<Response> {
    let agent = AgentRef::parse(&id)?;
    let options = RunOptions::new(&state.limits, false);
    let plan = match body.batch {
        Some(batch) if batch.len() > state.limits.max_batch => {
            return Err(Error::invalid("batch", format!("at most {} items", state.limits.max_batch)));
        }
        Some(batch) if !batch.is_empty() => Plan::batch(&agent, batch, body.turn, options),
        Some(_) => return Err(Error::invalid("batch", "must hold at least one item")),
        None => Plan::one(agent, body.turn, options, Mode::Sync),
    };
    Ok(match submit::submit(&state, auth.workspace_id, plan, None).await? {
        Delivery::Done(run) => invoked(*run),
        Delivery::Accepted { operation, total, run } => {
            (StatusCode::ACCEPTED, JsonResponse(OperationBody::pending(operation, total, run))).into_response()
        }
        Delivery::Stream { run, thread, events } => stream_response(run, &thread, events),
        Delivery::Started { .. } => return Err(Error::Internal(anyhow::anyhow!("a sync submission was detached"))),
    })
}

/// A finished run in seed 001's envelope.
fn invoked(run: RunRecord) -> Response {
    let tokens = run.usage.as_ref().map(|u| u.input_tokens + u.output_tokens).unwrap_or(0);
    let execution_ms = run.execution_time_ms().unwrap_or(0);
    let metadata = json!({
        "execution_time": execution_ms as f64 / 1000.0,
        "tokens_used": tokens,
        "run_id": run.id,
        "thread_id": run.thread_id,
    });
    if run.status == RunStatus::Completed {
        return JsonResponse(json!({"status": "success", "data": {"result": run.output, "metadata": metadata}}))
            .into_response();
    }
    let error = run.error.map(|e| e.0).unwrap_or_else(|| json!({}));
    JsonResponse(
        json!({"status": "error", "message": error["message"], "error": error, "data": {"metadata": metadata}}),
    )
    .into_response()
}

/// Streams a run of the agent as SSE. Query parameters: `query` (or `prompt`; optional when the
/// agent's own messages are the conversation), `thread_id`, and `variables[NAME]=VALUE` for each
/// placeholder of the agent's prompts.
#[utoipa::path(get, path = "/v1/agents/{id}/stream", tag = "agents", security(("api_key" = [])),
    params(("id" = String, Path, description = "Agent id or slug"), ("query" = Option<String>, Query),
        ("thread_id" = Option<String>, Query),
        ("variables[NAME]" = Option<String>, Query, description = "The value of the prompts' `{{NAME}}` placeholder")),
    responses((status = 200, description = "The SSE stream", body = super::SseEvent, content_type = "text/event-stream"), (status = 404, body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let agent = AgentRef::parse(&id)?;
    let turn = stream_turn(query.as_deref().unwrap_or_default())?;
    let plan = Plan::one(agent, turn, RunOptions::new(&state.limits, false), Mode::Stream);
    match submit::submit(&state, auth.workspace_id, plan, None).await? {
        Delivery::Stream { run, thread, events } => Ok(stream_response(run, &thread, events)),
        _ => Err(Error::Internal(anyhow::anyhow!("a stream submission did not stream"))),
    }
}

/// The turn of `GET /v1/agents/{id}/stream` from its query string.
fn stream_turn(query: &str) -> Result<TurnFields> {
    let mut turn = TurnFields::default();
    for (key, value) in crate::extract::query_pairs(query)? {
        match key.as_str() {
            "query" | "prompt" => turn.query = Some(value),
            "thread_id" | "threadId" => turn.thread_id = Some(value),
            key => match key.strip_prefix("variables[").and_then(|rest| rest.strip_suffix(']')) {
                Some(name) if !name.is_empty() => {
                    turn.variables.insert(name.to_owned(), Value::String(value));
                }
                _ => return Err(Error::invalid(key, "unknown query parameter")),
            },
        }
    }
    Ok(turn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_query_strings_carry_variables_by_name() {
        let turn = stream_turn("query=hi&variables%5Bcompany%5D=Acme%20Inc&variables[who]=me&thread_id=t1").unwrap();
        assert_eq!(turn.query.as_deref(), Some("hi"));
        assert_eq!(turn.thread_id.as_deref(), Some("t1"));
        assert_eq!(turn.variables["company"], "Acme Inc");
        assert_eq!(turn.variables["who"], "me");
        assert!(stream_turn("variables[]=x").is_err());
        assert!(stream_turn("querry=x").is_err());
    }
}
