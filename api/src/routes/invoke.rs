//! Seed 001's agent routes: `POST /v1/agents/{id}/invoke` and `GET /v1/agents/{id}/stream`.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runq_shared::domain::AgentRef;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::operations::OperationBody;
use super::runs::{RunOptions, TurnFields, stream_response};
use crate::error::{Error, ErrorBody, Result};
use crate::extract::{Caller, Json, Path, Query};
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
    let (inputs, mode) = match body.batch {
        Some(batch) if batch.len() > state.limits.max_batch => {
            return Err(Error::invalid("batch", format!("at most {} items", state.limits.max_batch)));
        }
        Some(batch) if !batch.is_empty() => {
            let inputs = batch
                .into_iter()
                .enumerate()
                .map(|(i, item)| item.into_input(&format!("batch[{i}]."), &body.turn, options))
                .collect::<Result<_>>()?;
            (inputs, Mode::Batch)
        }
        Some(_) => return Err(Error::invalid("batch", "must hold at least one item")),
        None => (vec![body.turn.into_input("", &TurnFields::default(), options)?], Mode::Sync),
    };
    Ok(match submit::submit(&state, auth.workspace_id, &agent, inputs, mode, None).await? {
        Delivery::Done(run) => {
            let tokens = run.usage.as_ref().map(|u| u.input_tokens + u.output_tokens).unwrap_or(0);
            let execution_ms = run.execution_time_ms().unwrap_or(0);
            let metadata = json!({
                "execution_time": execution_ms as f64 / 1000.0,
                "tokens_used": tokens,
                "run_id": run.id,
                "thread_id": run.thread_id,
            });
            if run.status == "completed" {
                JsonResponse(json!({"status": "success", "data": {"result": run.output, "metadata": metadata}}))
                    .into_response()
            } else {
                let error = run.error.map(|e| e.0).unwrap_or_else(|| json!({}));
                JsonResponse(json!({"status": "error", "message": error["message"], "error": error, "data": {"metadata": metadata}}))
                    .into_response()
            }
        }
        Delivery::Accepted { operation, total } => {
            (StatusCode::ACCEPTED, JsonResponse(OperationBody::pending(operation, total))).into_response()
        }
        Delivery::Stream { run, thread, events } => stream_response(run, &thread, events),
    })
}

/// Streams a run of the agent as SSE: `?query=…` plus optional `thread_id`.
#[utoipa::path(get, path = "/v1/agents/{id}/stream", tag = "agents", security(("api_key" = [])),
    params(("id" = String, Path, description = "Agent id or slug"), ("query" = String, Query), ("thread_id" = Option<String>, Query)),
    responses((status = 200, description = "text/event-stream"), (status = 404, body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    Query(query): Query<Map<String, Value>>,
) -> Result<Response> {
    let agent = AgentRef::parse(&id)?;
    let text = |k: &str| query.get(k).and_then(Value::as_str).map(str::to_owned);
    let turn = TurnFields {
        query: text("query").or_else(|| text("prompt")),
        thread_id: text("thread_id").or_else(|| text("threadId")),
        ..TurnFields::default()
    };
    let options = RunOptions::new(&state.limits, false);
    let input = turn.into_input("", &TurnFields::default(), options)?;
    match submit::submit(&state, auth.workspace_id, &agent, vec![input], Mode::Stream, None).await? {
        Delivery::Stream { run, thread, events } => Ok(stream_response(run, &thread, events)),
        _ => Err(Error::Internal(anyhow::anyhow!("a stream submission did not stream"))),
    }
}
