//! Anthropic messages API (`POST {base_url}/messages`).
//!
//! Stream shape: named SSE events `message_start` (input usage), then per content block
//! `content_block_start` / `content_block_delta` (`text_delta` or `input_json_delta`) /
//! `content_block_stop`, then `message_delta` (stop reason, cumulative output usage) and
//! `message_stop`. `ping` keeps the connection alive and `error` reports failures that
//! happen after the HTTP 200 (typically `overloaded_error`).

use std::borrow::Cow;
use std::collections::VecDeque;

use eventsource_stream::Event;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    ChatRequest, FinishReason, PassThrough, ProviderError, ProviderEvent, Role, Step, ToolCall, Usage, WireStr,
    incomplete, parse_arguments, truncate, unparseable,
};

/// Value of the `anthropic-version` header.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` is mandatory for Anthropic but optional in a neutral request.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Body keys the adapter sets itself or translates from OpenAI-style names.
const RESERVED: &[&str] = &[
    "model",
    "messages",
    "stream",
    "system",
    "tools",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "stop_sequences",
];

#[derive(Serialize)]
pub(crate) struct Body<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Cow<'a, str>>,
    messages: Vec<Message<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Cow<'a, Value>>,
    #[serde(flatten)]
    parameters: PassThrough<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Content<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(&'a str),
    Blocks(Vec<Block<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: Cow<'a, Value> },
    ToolResult { tool_use_id: &'a str, content: &'a str },
}

#[derive(Serialize)]
struct Tool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a Value,
}

pub(crate) fn build_body(request: &ChatRequest) -> Body<'_> {
    let params = &request.parameters;
    let mut system: Option<Cow<'_, str>> = None;
    let mut messages: Vec<Message<'_>> = Vec::with_capacity(request.messages.len());
    // Anthropic wants all results of one assistant turn in a single user message.
    let mut in_tool_results = false;
    // Anthropic needs at least one user message: a run of instructions alone (an agent whose
    // version has only a system prompt, run without input) sends them as the user's turn.
    let instructions_only = request.messages.iter().all(|m| m.role == Role::System);

    for message in &request.messages {
        let is_tool_result = message.role == Role::Tool;
        match message.role {
            Role::System if instructions_only => {
                messages.push(Message { role: "user", content: Content::Text(&message.content) })
            }
            // Anthropic has no system role; instructions go in the top-level `system`.
            Role::System => {
                system = Some(match system {
                    None => Cow::Borrowed(message.content.as_str()),
                    Some(joined) => Cow::Owned(format!("{joined}\n\n{}", message.content)),
                });
            }
            Role::User => messages.push(Message { role: "user", content: Content::Text(&message.content) }),
            Role::Assistant if message.tool_calls.is_empty() => {
                messages.push(Message { role: "assistant", content: Content::Text(&message.content) })
            }
            Role::Assistant => {
                let mut blocks = Vec::with_capacity(message.tool_calls.len() + 1);
                // Empty text blocks are rejected by the API.
                if !message.content.is_empty() {
                    blocks.push(Block::Text { text: &message.content });
                }
                blocks.extend(message.tool_calls.iter().map(|call| Block::ToolUse {
                    id: &call.id,
                    name: &call.name,
                    input: tool_input(&call.arguments),
                }));
                messages.push(Message { role: "assistant", content: Content::Blocks(blocks) });
            }
            Role::Tool => {
                let block = Block::ToolResult {
                    tool_use_id: message.tool_call_id.as_deref().unwrap_or_default(),
                    content: &message.content,
                };
                match messages.last_mut() {
                    Some(Message { content: Content::Blocks(blocks), .. }) if in_tool_results => blocks.push(block),
                    _ => messages.push(Message { role: "user", content: Content::Blocks(vec![block]) }),
                }
            }
        }
        // System messages do not end a run of tool results: nothing is emitted for them.
        if message.role != Role::System {
            in_tool_results = is_tool_result;
        }
    }

    let max_tokens = ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|key| params.get(*key).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_MAX_TOKENS);
    // Accept the OpenAI spelling so one job definition works with both protocols.
    let stop_sequences =
        ["stop_sequences", "stop"].iter().find_map(|key| params.get(*key)).filter(|value| !value.is_null()).map(
            |value| match value {
                Value::String(single) => Cow::Owned(Value::Array(vec![Value::String(single.clone())])),
                other => Cow::Borrowed(other),
            },
        );

    Body {
        model: &request.model,
        max_tokens,
        system,
        messages,
        stream: true,
        tools: request
            .tools
            .iter()
            .map(|tool| Tool { name: &tool.name, description: &tool.description, input_schema: &tool.parameters })
            .collect(),
        stop_sequences,
        parameters: PassThrough::new(params, RESERVED),
    }
}

/// `tool_use.input` must be an object. Arguments kept as raw text (see
/// [`ToolCall::arguments`]), e.g. from a call made through another provider, are parsed if
/// possible and otherwise sent as `{}` rather than failing the whole request.
fn tool_input(arguments: &Value) -> Cow<'_, Value> {
    match arguments {
        Value::Object(_) => Cow::Borrowed(arguments),
        Value::String(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(parsed @ Value::Object(_)) => Cow::Owned(parsed),
            _ => Cow::Owned(Value::Object(Map::new())),
        },
        _ => Cow::Owned(Value::Object(Map::new())),
    }
}

/// Used when a frame has no `event:` line: the payload's own `type` field says the same.
#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: WireStr<'a>,
}

#[derive(Deserialize)]
struct MessageStart {
    message: StartedMessage,
}

#[derive(Deserialize)]
struct StartedMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct BlockStart<'a> {
    index: u32,
    #[serde(borrow)]
    content_block: StartedBlock<'a>,
}

#[derive(Deserialize)]
struct StartedBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: WireStr<'a>,
    #[serde(default, borrow)]
    id: Option<WireStr<'a>>,
    #[serde(default, borrow)]
    name: Option<WireStr<'a>>,
}

#[derive(Deserialize)]
struct BlockDelta<'a> {
    index: u32,
    #[serde(borrow)]
    delta: DeltaBody<'a>,
}

#[derive(Deserialize)]
struct DeltaBody<'a> {
    #[serde(rename = "type", borrow)]
    kind: WireStr<'a>,
    #[serde(default, borrow)]
    text: Option<WireStr<'a>>,
    #[serde(default, borrow)]
    partial_json: Option<WireStr<'a>>,
}

#[derive(Deserialize)]
struct BlockStop {
    index: u32,
}

#[derive(Deserialize)]
struct MessageDelta<'a> {
    #[serde(borrow)]
    delta: MessageDeltaBody<'a>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct MessageDeltaBody<'a> {
    #[serde(default, borrow)]
    stop_reason: Option<WireStr<'a>>,
}

#[derive(Deserialize)]
struct ErrorFrame {
    error: Value,
}

/// A `tool_use` block whose input JSON is still arriving.
struct ToolBlock {
    index: u32,
    id: String,
    name: String,
    json: String,
}

/// Decoding state for one messages stream.
#[derive(Default)]
pub(crate) struct Decoder {
    /// Blocks arrive one at a time today, but they are addressed by index, so do not
    /// assume it.
    open_tools: Vec<ToolBlock>,
    input_tokens: u64,
    cache_creation_tokens: u64,
    cache_read_tokens: u64,
    output_tokens: u64,
    stop_reason: Option<FinishReason>,
}

impl Decoder {
    pub(crate) fn on_event(&mut self, event: &Event, out: &mut VecDeque<ProviderEvent>) -> Result<Step, ProviderError> {
        let data = event.data.as_str();
        let peeked;
        let kind = if event.event == "message" {
            peeked = parse::<TypeOnly<'_>>("event", data)?.kind;
            peeked.as_str()
        } else {
            event.event.as_str()
        };

        match kind {
            "content_block_delta" => {
                let frame: BlockDelta<'_> = parse(kind, data)?;
                match frame.delta.kind.as_str() {
                    "text_delta" => {
                        if let Some(text) = frame.delta.text
                            && !text.as_str().is_empty()
                        {
                            out.push_back(ProviderEvent::TextDelta(text.0.into_owned()));
                        }
                    }
                    "input_json_delta" => {
                        let block =
                            self.open_tools.iter_mut().find(|block| block.index == frame.index).ok_or_else(|| {
                                ProviderError::Protocol(format!(
                                    "input_json_delta for unknown tool_use block {}",
                                    frame.index
                                ))
                            })?;
                        if let Some(json) = frame.delta.partial_json {
                            block.json.push_str(json.as_str());
                        }
                    }
                    // thinking_delta, signature_delta, citations_delta: not surfaced.
                    _ => {}
                }
            }
            "content_block_start" => {
                let frame: BlockStart<'_> = parse(kind, data)?;
                let block = frame.content_block;
                // Server-side tools (`server_tool_use`) run at Anthropic, not in the worker.
                if block.kind.as_str() == "tool_use" {
                    self.open_tools.push(ToolBlock {
                        index: frame.index,
                        id: block.id.map(|id| id.0.into_owned()).unwrap_or_default(),
                        name: block.name.map(|name| name.0.into_owned()).unwrap_or_default(),
                        json: String::new(),
                    });
                }
            }
            "content_block_stop" => {
                let frame: BlockStop = parse(kind, data)?;
                if let Some(position) = self.open_tools.iter().position(|block| block.index == frame.index) {
                    let block = self.open_tools.swap_remove(position);
                    out.push_back(ProviderEvent::ToolCall(ToolCall {
                        id: block.id,
                        name: block.name,
                        arguments: parse_arguments(&block.json),
                    }));
                }
            }
            "message_start" => {
                let frame: MessageStart = parse(kind, data)?;
                if let Some(usage) = frame.message.usage {
                    self.record_usage(&usage);
                }
            }
            "message_delta" => {
                let frame: MessageDelta<'_> = parse(kind, data)?;
                if let Some(reason) = frame.delta.stop_reason {
                    self.stop_reason = Some(finish_reason(reason.as_str()));
                }
                if let Some(usage) = frame.usage {
                    self.record_usage(&usage);
                }
            }
            "message_stop" => {
                let reason = self.stop_reason.take().unwrap_or(FinishReason::Stop);
                out.push_back(ProviderEvent::Finish {
                    reason,
                    usage: Usage {
                        // Anthropic reports cached prompt tokens separately; OpenAI counts
                        // them in prompt_tokens. Summing keeps `input_tokens` comparable.
                        input_tokens: self.input_tokens + self.cache_creation_tokens + self.cache_read_tokens,
                        output_tokens: self.output_tokens,
                    },
                });
                return Ok(Step::Done);
            }
            "error" => {
                let frame: ErrorFrame = parse(kind, data)?;
                return Err(stream_error(&frame.error));
            }
            // `ping` and event types added after this was written.
            _ => {}
        }
        Ok(Step::More)
    }

    /// Anthropic always ends with `message_stop`; anything else is a cut connection.
    pub(crate) fn on_eof(&mut self, _out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError> {
        Err(incomplete())
    }

    /// `message_delta` usage is cumulative and may repeat input counts, so each field
    /// present overwrites rather than adds.
    fn record_usage(&mut self, usage: &WireUsage) {
        let fields = [
            (usage.input_tokens, &mut self.input_tokens),
            (usage.cache_creation_input_tokens, &mut self.cache_creation_tokens),
            (usage.cache_read_input_tokens, &mut self.cache_read_tokens),
            (usage.output_tokens, &mut self.output_tokens),
        ];
        for (value, slot) in fields {
            if let Some(value) = value {
                *slot = value;
            }
        }
    }
}

fn parse<'a, T: Deserialize<'a>>(kind: &str, data: &'a str) -> Result<T, ProviderError> {
    serde_json::from_str(data).map_err(|err| unparseable(kind, &err, data))
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" => FinishReason::Length,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Maps an `error` event (`{"type":"error","error":{"type":...,"message":...}}`) to the
/// status the same error carries when it is returned before the stream starts.
fn stream_error(error: &Value) -> ProviderError {
    let kind = error.get("type").and_then(Value::as_str).unwrap_or_default();
    let message = truncate(error.get("message").and_then(Value::as_str).unwrap_or(kind));
    let status = match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        // api_error and unknown types: an internal failure, worth retrying.
        _ => 500,
    };
    ProviderError::from_status(status, None, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::test_support::{bytewise, decode, ok_events, whole};
    use crate::provider::{ChatMessage, Decoder as AnyDecoder, ToolSpec};
    use serde_json::json;

    async fn run(chunks: Vec<Vec<u8>>) -> Vec<Result<ProviderEvent, ProviderError>> {
        decode(AnyDecoder::Anthropic(Decoder::default()), chunks, false).await
    }

    /// A text block, then a tool_use block with input split across `input_json_delta`s,
    /// in the exact framing the API uses (named events, `ping`, cumulative usage).
    const TOOL_STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":100,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay, let\\u2019s check\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" the weather.\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_02\",\"name\":\"now\",\"input\":{}}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    fn tool_stream_events() -> Vec<ProviderEvent> {
        vec![
            ProviderEvent::TextDelta("Okay, let’s check".into()),
            ProviderEvent::TextDelta(" the weather.".into()),
            ProviderEvent::ToolCall(ToolCall {
                id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                name: "get_weather".into(),
                arguments: json!({"location": "San Francisco, CA"}),
            }),
            ProviderEvent::ToolCall(ToolCall { id: "toolu_02".into(), name: "now".into(), arguments: json!({}) }),
            ProviderEvent::Finish {
                reason: FinishReason::ToolCalls,
                usage: Usage { input_tokens: 572, output_tokens: 89 },
            },
        ]
    }

    #[tokio::test]
    async fn text_and_fragmented_tool_use_stream() {
        assert_eq!(ok_events(run(whole(TOOL_STREAM)).await), tool_stream_events());
    }

    #[tokio::test]
    async fn stream_survives_bytewise_chunking() {
        assert_eq!(ok_events(run(bytewise(TOOL_STREAM)).await), tool_stream_events());
    }

    #[tokio::test]
    async fn frames_without_event_lines_use_the_type_field() {
        let sse: String =
            TOOL_STREAM.lines().filter(|line| !line.starts_with("event:")).map(|line| format!("{line}\n")).collect();
        assert_eq!(ok_events(run(whole(&sse)).await), tool_stream_events());
    }

    #[tokio::test]
    async fn max_tokens_maps_to_length_and_delta_usage_overrides_input() {
        let sse = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-haiku-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Once upon\"}}\n\n",
            "event: content_block_stop\n",
            "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":12,\"output_tokens\":2}}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        assert_eq!(
            ok_events(run(whole(sse)).await),
            vec![
                ProviderEvent::TextDelta("Once upon".into()),
                ProviderEvent::Finish {
                    reason: FinishReason::Length,
                    usage: Usage { input_tokens: 12, output_tokens: 2 },
                },
            ]
        );
    }

    #[tokio::test]
    async fn error_events_are_mapped() {
        let overloaded = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n",
            "event: error\n",
            "data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
        );
        let items = run(whole(overloaded)).await;
        assert_eq!(items, vec![Err(ProviderError::Server { status: 529, message: "Overloaded".into() })]);
        assert!(items[0].as_ref().unwrap_err().is_retryable());

        let limited = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"Slow down\"}}\n\n";
        assert_eq!(
            run(whole(limited)).await,
            vec![Err(ProviderError::RateLimited { retry_after: None, message: "Slow down".into() })]
        );
    }

    #[tokio::test]
    async fn stream_without_message_stop_is_a_transport_error() {
        let cut = &TOOL_STREAM[..TOOL_STREAM.find("event: message_delta").unwrap()];
        let items = run(whole(cut)).await;
        assert_eq!(items.last(), Some(&Err(ProviderError::Transport("stream ended before completion".into()))));
        // Everything decoded before the cut is still delivered.
        assert_eq!(items.len(), 5);
    }

    #[tokio::test]
    async fn unparseable_frame_is_a_protocol_error() {
        let items = run(whole("event: content_block_delta\ndata: {not json}\n\n")).await;
        assert!(matches!(&items[..], [Err(ProviderError::Protocol(_))]), "{items:?}");
    }

    fn conversation() -> ChatRequest {
        ChatRequest {
            model: "claude-sonnet-4-5".into(),
            messages: vec![
                ChatMessage::system("You are terse."),
                ChatMessage::user("Weather in Paris and Rome?"),
                ChatMessage::assistant_with_tool_calls(
                    "Checking both.",
                    vec![
                        ToolCall {
                            id: "toolu_1".into(),
                            name: "get_weather".into(),
                            arguments: json!({"location": "Paris"}),
                        },
                        ToolCall {
                            id: "toolu_2".into(),
                            name: "get_weather".into(),
                            arguments: json!({"location": "Rome"}),
                        },
                    ],
                ),
                ChatMessage::tool_result("toolu_1", "18C"),
                ChatMessage::tool_result("toolu_2", "24C"),
                ChatMessage::assistant_with_tool_calls(
                    "",
                    vec![ToolCall { id: "toolu_3".into(), name: "now".into(), arguments: Value::Null }],
                ),
                ChatMessage::tool_result("toolu_3", "noon"),
                ChatMessage::system("Answer in French."),
            ],
            tools: vec![ToolSpec {
                name: "get_weather".into(),
                description: "Current weather".into(),
                parameters: json!({"type": "object", "properties": {"location": {"type": "string"}}}),
            }],
            parameters: Map::new(),
        }
    }

    #[test]
    fn request_body_maps_system_tool_calls_and_merged_results() {
        let body = serde_json::to_value(build_body(&conversation())).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": DEFAULT_MAX_TOKENS,
                "stream": true,
                "system": "You are terse.\n\nAnswer in French.",
                "messages": [
                    {"role": "user", "content": "Weather in Paris and Rome?"},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Checking both."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Rome"}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "24C"},
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "toolu_3", "name": "now", "input": {}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_3", "content": "noon"},
                    ]},
                ],
                "tools": [{
                    "name": "get_weather",
                    "description": "Current weather",
                    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
                }],
            })
        );
    }

    #[test]
    fn instructions_alone_are_sent_as_the_user_turn() {
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::system("Greet John and talk about AI.")],
            ..ChatRequest::default()
        };
        let body = serde_json::to_value(build_body(&request)).unwrap();
        assert_eq!(body.get("system"), None);
        assert_eq!(body["messages"], json!([{"role": "user", "content": "Greet John and talk about AI."}]));
    }

    #[test]
    fn request_body_translates_parameters() {
        let mut request =
            ChatRequest { model: "m".into(), messages: vec![ChatMessage::user("hi")], ..ChatRequest::default() };
        let params = &mut request.parameters;
        params.insert("max_tokens".into(), json!(256));
        params.insert("stop".into(), json!("END"));
        params.insert("temperature".into(), json!(0.5));
        params.insert("stream".into(), json!(false));
        let body = serde_json::to_value(build_body(&request)).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "m",
                "max_tokens": 256,
                "stream": true,
                "stop_sequences": ["END"],
                "temperature": 0.5,
                "messages": [{"role": "user", "content": "hi"}],
            })
        );
    }

    #[test]
    fn tool_input_is_always_an_object() {
        assert_eq!(tool_input(&json!({"a": 1})).into_owned(), json!({"a": 1}));
        assert_eq!(tool_input(&json!("{\"a\":1}")).into_owned(), json!({"a": 1}));
        assert_eq!(tool_input(&json!("{\"a\":")).into_owned(), json!({}));
        assert_eq!(tool_input(&Value::Null).into_owned(), json!({}));
    }
}
