//! Anthropic messages wire format (`POST /v1/messages`).

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::body::{Frames, Kind, fragments, tokens};
use crate::reply::{Collector, Plan, Reply, joined_text, text_parts};
use crate::server::{Protocol, write_json};

#[derive(Deserialize)]
pub(crate) struct MessagesRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    system: Option<Value>,
    messages: Vec<Value>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Serialize)]
struct Usage {
    input_tokens: usize,
    output_tokens: usize,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: &'a Value },
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: &'a [Block<'a>],
    stop_reason: Option<&'a str>,
    stop_sequence: Option<&'a str>,
    usage: Usage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart { message: Message<'a> },
    ContentBlockStart { index: u32, content_block: Block<'a> },
    Ping,
    ContentBlockDelta { index: u32, delta: BlockDelta<'a> },
    ContentBlockStop { index: u32 },
    MessageDelta { delta: MessageDelta<'a>, usage: DeltaUsage },
    MessageStop,
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::Ping => "ping",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
        }
    }

    fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(self.name().as_bytes());
        buf.extend_from_slice(b"\ndata: ");
        write_json(buf, self);
        buf.extend_from_slice(b"\n\n");
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDelta<'a> {
    stop_reason: &'a str,
    stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
struct DeltaUsage {
    output_tokens: usize,
}

fn stop_reason(reply: &Reply) -> &'static str {
    match reply {
        Reply::Text(_) => "end_turn",
        Reply::Tool { .. } => "tool_use",
    }
}

pub(crate) struct Anthropic;

impl Protocol for Anthropic {
    const NAME: &'static str = "anthropic";
    type Request = MessagesRequest;

    fn api_key(headers: &HeaderMap) -> &str {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        header(header::HeaderName::from_static("x-api-key"))
            .or_else(|| {
                // OAuth-style clients send a bearer token instead.
                header(header::AUTHORIZATION).map(|v| v.strip_prefix("Bearer ").unwrap_or(v))
            })
            .map(str::trim)
            .unwrap_or_default()
    }

    fn model(req: &MessagesRequest) -> &str {
        &req.model
    }

    fn messages(req: &MessagesRequest) -> &[Value] {
        &req.messages
    }

    fn streaming(req: &MessagesRequest) -> bool {
        req.stream.unwrap_or(false)
    }

    fn collect(req: &MessagesRequest) -> Result<Collector<'_>, String> {
        let mut collected = Collector::default();
        if let Some(system) = &req.system {
            for text in text_parts(system) {
                collected.instruction(text).map_err(|e| e.to_string())?;
            }
        }
        for (i, message) in req.messages.iter().enumerate() {
            let role = message
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("messages.{i}.role: Field required"))?;
            let content = message.get("content").unwrap_or(&Value::Null);
            if role != "user" {
                text_parts(content).for_each(|text| collected.context(text));
                continue;
            }
            for text in text_parts(content) {
                collected.instruction(text).map_err(|e| e.to_string())?;
            }
            // A user turn that only carries tool results has no text to echo.
            if let Some(text) = joined_text(content) {
                collected.user_message(text);
            }
            let blocks = content.as_array().map(Vec::as_slice).unwrap_or_default();
            for block in blocks {
                if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                    let result = block.get("content").and_then(joined_text).unwrap_or(Cow::Borrowed(""));
                    collected.tool_result(result);
                }
            }
        }
        Ok(collected)
    }

    fn error(status: StatusCode, message: &str) -> Response {
        let kind = match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        };
        let body = serde_json::json!({
            "type": "error",
            "error": { "type": kind, "message": message }
        });
        (status, Json(body)).into_response()
    }

    fn stream(req: &MessagesRequest, plan: &Plan, id: u64, frames: &mut Frames) {
        let message_id = format!("msg_mock{id}");
        let tool_id = format!("toolu_{id}");
        frames.push(Kind::Preamble, |buf| {
            Event::MessageStart {
                message: Message {
                    id: &message_id,
                    kind: "message",
                    role: "assistant",
                    model: &req.model,
                    content: &[],
                    stop_reason: None,
                    stop_sequence: None,
                    usage: Usage { input_tokens: plan.input_tokens, output_tokens: 1 },
                },
            }
            .write(buf);
        });
        frames.push(Kind::Preamble, |buf| Event::Ping.write(buf));
        match &plan.reply {
            Reply::Text(text) => {
                frames.push(Kind::Preamble, |buf| {
                    Event::ContentBlockStart { index: 0, content_block: Block::Text { text: "" } }.write(buf);
                });
                for token in tokens(text) {
                    frames.push(Kind::Token, |buf| {
                        Event::ContentBlockDelta { index: 0, delta: BlockDelta::TextDelta { text: token } }.write(buf);
                    });
                }
            }
            Reply::Tool { name, args, .. } => {
                let empty = Value::Object(serde_json::Map::new());
                frames.push(Kind::Token, |buf| {
                    Event::ContentBlockStart {
                        index: 0,
                        content_block: Block::ToolUse { id: &tool_id, name, input: &empty },
                    }
                    .write(buf);
                });
                for fragment in fragments(args, 8) {
                    frames.push(Kind::Token, |buf| {
                        Event::ContentBlockDelta {
                            index: 0,
                            delta: BlockDelta::InputJsonDelta { partial_json: fragment },
                        }
                        .write(buf);
                    });
                }
            }
        }
        frames.push(Kind::Terminal, |buf| {
            Event::ContentBlockStop { index: 0 }.write(buf);
        });
        frames.push(Kind::Terminal, |buf| {
            Event::MessageDelta {
                delta: MessageDelta { stop_reason: stop_reason(&plan.reply), stop_sequence: None },
                usage: DeltaUsage { output_tokens: plan.output_tokens },
            }
            .write(buf);
        });
        frames.push(Kind::Terminal, |buf| Event::MessageStop.write(buf));
    }

    fn complete(req: &MessagesRequest, plan: &Plan, id: u64) -> Vec<u8> {
        let message_id = format!("msg_mock{id}");
        let tool_id = format!("toolu_{id}");
        let block = match &plan.reply {
            Reply::Text(text) => Block::Text { text },
            Reply::Tool { name, input, .. } => Block::ToolUse { id: &tool_id, name, input },
        };
        let message = Message {
            id: &message_id,
            kind: "message",
            role: "assistant",
            model: &req.model,
            content: &[block],
            stop_reason: Some(stop_reason(&plan.reply)),
            stop_sequence: None,
            usage: Usage { input_tokens: plan.input_tokens, output_tokens: plan.output_tokens },
        };
        let mut buf = Vec::with_capacity(384);
        write_json(&mut buf, &message);
        buf
    }
}
