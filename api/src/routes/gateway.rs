//! The OpenAI-compatible gateway (reference `003_…`): `POST /v1/chat/completions` runs an agent
//! (`model` is its slug or id) with the request's messages as the new turn after the agent's own
//! prompt, and answers as OpenAI does; `GET /v1/models` lists the deployed agents. Runs made here
//! are ordinary runs (recorded, resumable, cancellable): `X-Run-ID` names them.
//!
//! Errors on these routes use OpenAI's shape, so its SDKs raise their usual exceptions.
//! `tools` in a request is refused: an agent calls the tools its version names, not the caller's.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use runq_shared::db::agents;
use runq_shared::db::runs::{RunRecord, RunStatus};
use runq_shared::domain::AgentRef;
use runq_shared::id::RunId;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Error;
use crate::extract::{Caller, Json};
use crate::live::{ChatFraming, Framing};
use crate::request::{InMessage, Plan, RunOptions, TurnFields};
use crate::state::AppState;
use crate::submit::{self, Delivery, Mode};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(chat_completions)).routes(routes!(models))
}

/// An error in OpenAI's shape.
pub struct OpenAiError(Error);

impl<E: Into<Error>> From<E> for OpenAiError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        self.0.into_openai_response()
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ChatCompletionRequest {
    /// The agent: its slug or id.
    model: String,
    /// The new turn, after the agent's own prompt.
    #[schema(value_type = Vec<Object>)]
    messages: Vec<ChatMessageIn>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    /// The end user the run acts for (sent to tools as `X-End-User-ID`).
    user: Option<String>,
    /// Refused when not empty: agents call the tools their version names.
    #[schema(value_type = Option<Vec<Object>>)]
    tools: Option<Vec<Value>>,
    /// Sampling parameters (`temperature`, `max_tokens`, `top_p`, `stop`, …) for the provider.
    #[serde(flatten)]
    #[schema(ignore)]
    parameters: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessageIn {
    role: String,
    /// A string, or an array of `{type: "text", text}` parts.
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// OpenAI parameters a provider call takes as they are; others are not passed on.
const PASSED_PARAMETERS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
];

impl ChatCompletionRequest {
    fn turn(self) -> Result<TurnFields, Error> {
        if self.tools.as_ref().is_some_and(|tools| !tools.is_empty()) {
            return Err(Error::invalid("tools", "not supported: an agent calls the tools its version names"));
        }
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let role = if m.role == "developer" { "system".to_owned() } else { m.role };
                let content = match m.content {
                    Value::String(text) => text,
                    Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
                    _ => {
                        return Err(Error::invalid(format!("messages[{i}].content"), "must be a string or text parts"));
                    }
                };
                Ok(InMessage { role, content: Some(content), parts: None, id: None, metadata: None })
            })
            .collect::<Result<_, _>>()?;
        let parameters = self.parameters.into_iter().filter(|(k, _)| PASSED_PARAMETERS.contains(&k.as_str())).collect();
        Ok(TurnFields { messages: Some(messages), parameters, user: self.user, ..TurnFields::default() })
    }
}

fn with_run_id(run: RunId, mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::from_str(&run.to_string()) {
        response.headers_mut().insert("x-run-id", value);
    }
    response
}

/// The finished run as a `chat.completion`.
fn completion(model: &str, run: RunRecord) -> Response {
    let id = run.id;
    if run.status != RunStatus::Completed {
        // the provider or the run failed: a gateway error, with the run's own reason
        let message = run.error.as_ref().and_then(|e| e.0["message"].as_str()).unwrap_or("the run did not complete");
        let error =
            json!({"error": {"message": message, "type": "server_error", "param": null, "code": run.status.as_str()}});
        return with_run_id(id, (StatusCode::BAD_GATEWAY, JsonResponse(error)).into_response());
    }
    let usage = run.usage.map(|u| u.0).unwrap_or_default();
    let body = json!({
        "id": format!("chatcmpl-{}", id.0.simple()),
        "object": "chat.completion",
        "created": run.created_at.timestamp(),
        "model": model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": run.output, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
        },
    });
    with_run_id(id, JsonResponse(body).into_response())
}

/// Runs the agent named by `model`, answering as OpenAI's chat completions do: one
/// `chat.completion`, or with `stream: true` `chat.completion.chunk`s then `data: [DONE]`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway", security(("api_key" = [])),
    request_body = ChatCompletionRequest,
    responses((status = 200, description = "A chat.completion, or its chunks as SSE"),
        (status = 400, description = "OpenAI's error shape"), (status = 404, description = "OpenAI's error shape")))]
async fn chat_completions(
    State(state): State<AppState>,
    caller: Result<Caller, Error>,
    body: Result<Json<ChatCompletionRequest>, Error>,
) -> Result<Response, OpenAiError> {
    let Caller(auth) = caller?;
    let Json(body) = body?;
    let model = body.model.clone();
    let agent = AgentRef::parse(&model)?;
    let (stream, include_usage) = (body.stream, body.stream_options.as_ref().is_some_and(|o| o.include_usage));
    let mode = if stream { Mode::Stream } else { Mode::Sync };
    let mut plan = Plan::one(agent, body.turn()?, RunOptions::new(&state.limits, false), mode);
    plan.framing = Framing::ChatCompletion(ChatFraming::new(model.clone(), include_usage));
    Ok(match submit::submit(&state, auth.workspace_id, plan, None).await? {
        Delivery::Stream { run, events, .. } => with_run_id(run, events),
        Delivery::Done(run) => completion(&model, *run),
        Delivery::Accepted { run: Some(run), .. } => {
            let error = Error::Unavailable("the run outlived the wait; follow it at GET /v1/runs/{id}");
            with_run_id(run, error.into_openai_response())
        }
        _ => return Err(Error::Internal(anyhow::anyhow!("a chat completion was not answered")).into()),
    })
}

/// The workspace's deployed agents, as OpenAI models.
#[utoipa::path(get, path = "/v1/models", tag = "gateway", security(("api_key" = [])),
    responses((status = 200, description = "`{object: \"list\", data: [{id, object: \"model\", created, owned_by}]}`")))]
async fn models(State(state): State<AppState>, caller: Result<Caller, Error>) -> Result<Response, OpenAiError> {
    let Caller(auth) = caller?;
    let data: Vec<Value> = agents::deployed(&state.db, auth.workspace_id)
        .await?
        .into_iter()
        .map(|a| json!({"id": a.slug, "object": "model", "created": a.created_at.timestamp(), "owned_by": "runq"}))
        .collect();
    Ok(JsonResponse(json!({"object": "list", "data": data})).into_response())
}
