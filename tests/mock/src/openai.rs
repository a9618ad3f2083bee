//! OpenAI chat completions wire format (`POST /v1/chat/completions`).

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::body::{Frames, Kind, fragments, tokens};
use crate::reply::{Collector, Plan, Reply, joined_text, text_parts};
use crate::server::{Protocol, unix_now, write_json};

#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    #[serde(default)]
    model: String,
    messages: Vec<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

impl Usage {
    fn of(plan: &Plan) -> Usage {
        Usage {
            prompt_tokens: plan.input_tokens,
            completion_tokens: plan.output_tokens,
            total_tokens: plan.input_tokens + plan.output_tokens,
        }
    }
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: Option<&'a str>,
    choices: &'a [ChunkChoice<'a>],
    /// With `include_usage`, OpenAI sends `"usage": null` on every chunk and
    /// the numbers on a final choice-less chunk; without it, no field at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a [ToolCallDelta<'a>]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: Option<&'a str>,
    choices: [CompletionChoice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// Shared chunk header fields.
struct ChunkCtx<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
    usage_null: bool,
}

impl ChunkCtx<'_> {
    fn write(&self, buf: &mut Vec<u8>, delta: Delta<'_>, finish_reason: Option<&str>) {
        let choices = [ChunkChoice { index: 0, delta, logprobs: None, finish_reason }];
        data(
            buf,
            &Chunk {
                id: self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model,
                system_fingerprint: None,
                choices: &choices,
                usage: self.usage_null.then_some(None),
            },
        );
    }
}

fn data(buf: &mut Vec<u8>, value: &impl Serialize) {
    buf.extend_from_slice(b"data: ");
    write_json(buf, value);
    buf.extend_from_slice(b"\n\n");
}

pub(crate) struct OpenAi;

impl Protocol for OpenAi {
    const NAME: &'static str = "openai";
    type Request = ChatRequest;

    fn api_key(headers: &HeaderMap) -> &str {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
            .unwrap_or_default()
    }

    fn model(req: &ChatRequest) -> &str {
        &req.model
    }

    fn messages(req: &ChatRequest) -> &[Value] {
        &req.messages
    }

    fn streaming(req: &ChatRequest) -> bool {
        req.stream.unwrap_or(false)
    }

    fn collect(req: &ChatRequest) -> Result<Collector<'_>, String> {
        let mut collected = Collector::default();
        for (i, message) in req.messages.iter().enumerate() {
            let role =
                message.get("role").and_then(Value::as_str).ok_or_else(|| format!("messages[{i}].role is required"))?;
            let content = message.get("content").unwrap_or(&Value::Null);
            match role {
                "system" | "developer" | "user" => {
                    for text in text_parts(content) {
                        collected.instruction(text).map_err(|e| e.to_string())?;
                    }
                    if role == "user"
                        && let Some(text) = joined_text(content)
                    {
                        collected.user_message(text);
                    }
                }
                "tool" => {
                    collected.tool_result(joined_text(content).unwrap_or(Cow::Borrowed("")));
                }
                _ => text_parts(content).for_each(|text| collected.context(text)),
            }
        }
        Ok(collected)
    }

    fn error(status: StatusCode, message: &str) -> Response {
        let (kind, code) = match status.as_u16() {
            401 => ("invalid_request_error", Some("invalid_api_key")),
            403 => ("invalid_request_error", Some("unsupported_country_region_territory")),
            404 => ("invalid_request_error", Some("model_not_found")),
            429 => ("requests", Some("rate_limit_exceeded")),
            400..=499 => ("invalid_request_error", None),
            _ => ("server_error", None),
        };
        let body = serde_json::json!({
            "error": { "message": message, "type": kind, "param": null, "code": code }
        });
        (status, Json(body)).into_response()
    }

    fn stream(req: &ChatRequest, plan: &Plan, id: u64, frames: &mut Frames) {
        let completion_id = format!("chatcmpl-mock{id}");
        let call_id = format!("call_{id}");
        let include_usage = req.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
        let ctx = ChunkCtx { id: &completion_id, created: unix_now(), model: &req.model, usage_null: include_usage };
        frames.push(Kind::Preamble, |buf| {
            let delta = Delta { role: Some("assistant"), content: Some(""), ..Delta::default() };
            ctx.write(buf, delta, None);
        });
        let finish_reason = match &plan.reply {
            Reply::Text(text) => {
                for token in tokens(text) {
                    frames.push(Kind::Token, |buf| {
                        let delta = Delta { content: Some(token), ..Delta::default() };
                        ctx.write(buf, delta, None);
                    });
                }
                "stop"
            }
            Reply::Tool { name, args, .. } => {
                frames.push(Kind::Token, |buf| {
                    let calls = [ToolCallDelta {
                        index: 0,
                        id: Some(&call_id),
                        kind: Some("function"),
                        function: FunctionDelta { name: Some(name), arguments: "" },
                    }];
                    let delta = Delta { tool_calls: Some(&calls), ..Delta::default() };
                    ctx.write(buf, delta, None);
                });
                for fragment in fragments(args, 8) {
                    frames.push(Kind::Token, |buf| {
                        let calls = [ToolCallDelta {
                            index: 0,
                            id: None,
                            kind: None,
                            function: FunctionDelta { name: None, arguments: fragment },
                        }];
                        let delta = Delta { tool_calls: Some(&calls), ..Delta::default() };
                        ctx.write(buf, delta, None);
                    });
                }
                "tool_calls"
            }
        };
        frames.push(Kind::Terminal, |buf| {
            ctx.write(buf, Delta::default(), Some(finish_reason));
        });
        if include_usage {
            frames.push(Kind::Terminal, |buf| {
                let usage = Usage::of(plan);
                data(
                    buf,
                    &Chunk {
                        id: ctx.id,
                        object: "chat.completion.chunk",
                        created: ctx.created,
                        model: ctx.model,
                        system_fingerprint: None,
                        choices: &[],
                        usage: Some(Some(&usage)),
                    },
                );
            });
        }
        frames.push(Kind::Terminal, |buf| {
            buf.extend_from_slice(b"data: [DONE]\n\n");
        });
    }

    fn complete(req: &ChatRequest, plan: &Plan, id: u64) -> Vec<u8> {
        let completion_id = format!("chatcmpl-mock{id}");
        let call_id = format!("call_{id}");
        let (message, finish_reason) = match &plan.reply {
            Reply::Text(text) => {
                (AssistantMessage { role: "assistant", content: Some(text), refusal: None, tool_calls: None }, "stop")
            }
            Reply::Tool { name, args, .. } => (
                AssistantMessage {
                    role: "assistant",
                    content: None,
                    refusal: None,
                    tool_calls: Some([ToolCall {
                        id: &call_id,
                        kind: "function",
                        function: Function { name, arguments: args },
                    }]),
                },
                "tool_calls",
            ),
        };
        let completion = Completion {
            id: &completion_id,
            object: "chat.completion",
            created: unix_now(),
            model: &req.model,
            system_fingerprint: None,
            choices: [CompletionChoice { index: 0, message, logprobs: None, finish_reason }],
            usage: Usage::of(plan),
        };
        let mut buf = Vec::with_capacity(384);
        write_json(&mut buf, &completion);
        buf
    }
}
