//! OpenAI chat completions (`POST {base_url}/chat/completions`), for api.openai.com and
//! OpenAI-compatible servers.
//!
//! Stream shape: `data: {chunk}` frames, then `data: [DONE]`. Text arrives in
//! `choices[0].delta.content`; tool calls in `choices[0].delta.tool_calls[]`, keyed by
//! `index`, whose first fragment carries `id` and `function.name` and whose later fragments
//! append to `function.arguments`. With `stream_options.include_usage` the usage arrives in
//! a separate chunk with `choices: []` *after* the `finish_reason` chunk, so `Finish` is
//! only emitted at `[DONE]`.

use std::borrow::Cow;
use std::collections::VecDeque;

use eventsource_stream::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ChatRequest, FinishReason, PassThrough, ProviderError, ProviderEvent, Role, Step, ToolCall, Usage, WireStr,
    first_element, parse_arguments, truncate, unparseable,
};

/// Body keys the adapter sets itself.
const RESERVED: &[&str] = &["model", "messages", "stream", "stream_options", "tools"];

#[derive(Serialize)]
pub(crate) struct Body<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    #[serde(flatten)]
    parameters: PassThrough<'a>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    /// Serialized as `null` (not omitted) for tool-call-only assistant turns.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    /// OpenAI wants the arguments as a JSON-encoded string.
    arguments: Cow<'a, str>,
}

#[derive(Serialize)]
struct Tool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionSpec<'a>,
}

#[derive(Serialize)]
struct FunctionSpec<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

pub(crate) fn build_body(request: &ChatRequest) -> Body<'_> {
    let messages = request
        .messages
        .iter()
        .map(|message| {
            let tool_calls: Vec<_> = message
                .tool_calls
                .iter()
                .map(|call| OutToolCall {
                    id: &call.id,
                    kind: "function",
                    function: OutFunction {
                        name: &call.name,
                        arguments: match &call.arguments {
                            // Arguments the model produced as invalid JSON go back verbatim,
                            // so the model sees exactly what it wrote.
                            Value::String(raw) => Cow::Borrowed(raw.as_str()),
                            other => Cow::Owned(other.to_string()),
                        },
                    },
                })
                .collect();
            // `null` is only valid alongside tool calls; a bare assistant turn needs a string.
            let content = if message.content.is_empty() && !tool_calls.is_empty() {
                None
            } else {
                Some(message.content.as_str())
            };
            Message {
                role: match message.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                    Role::Tool => "tool",
                },
                content,
                tool_calls,
                tool_call_id: match message.role {
                    Role::Tool => Some(message.tool_call_id.as_deref().unwrap_or_default()),
                    _ => None,
                },
            }
        })
        .collect();

    let tools = request
        .tools
        .iter()
        .map(|tool| Tool {
            kind: "function",
            function: FunctionSpec { name: &tool.name, description: &tool.description, parameters: &tool.parameters },
        })
        .collect();

    Body {
        model: &request.model,
        messages,
        stream: true,
        stream_options: StreamOptions { include_usage: true },
        tools,
        parameters: PassThrough::new(&request.parameters, RESERVED),
    }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow, rename = "choices", deserialize_with = "first_element")]
    choice: Option<Choice<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// Some compatible servers (and proxies like OpenRouter) report failures that happen
    /// after the 200 as an `error` object inside a data frame.
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<WireStr<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<WireStr<'a>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default, borrow)]
    id: Option<WireStr<'a>>,
    #[serde(default, borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Option<WireStr<'a>>,
    #[serde(default, borrow)]
    arguments: Option<WireStr<'a>>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// A tool call whose argument fragments are still arriving.
struct PartialCall {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

/// Decoding state for one chat-completions stream.
#[derive(Default)]
pub(crate) struct Decoder {
    calls: Vec<PartialCall>,
    emitted_tool_calls: bool,
    finish: Option<FinishReason>,
    usage: Usage,
}

impl Decoder {
    pub(crate) fn on_event(&mut self, event: &Event, out: &mut VecDeque<ProviderEvent>) -> Result<Step, ProviderError> {
        let data = event.data.as_str();
        if data.trim() == "[DONE]" {
            self.complete(out);
            return Ok(Step::Done);
        }
        let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|err| unparseable("chunk", &err, data))?;
        if let Some(error) = chunk.error {
            return Err(stream_error(&error));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Usage { input_tokens: usage.prompt_tokens, output_tokens: usage.completion_tokens };
        }
        let Some(choice) = chunk.choice else {
            return Ok(Step::More);
        };
        if let Some(delta) = choice.delta {
            if let Some(text) = delta.content
                && !text.as_str().is_empty()
            {
                out.push_back(ProviderEvent::TextDelta(text.0.into_owned()));
            }
            for fragment in delta.tool_calls.into_iter().flatten() {
                self.absorb(fragment);
            }
        }
        if let Some(reason) = choice.finish_reason {
            self.finish = Some(finish_reason(reason.as_str()));
            // Arguments are complete once the choice finishes; emitting here rather than
            // at `[DONE]` lets tools start before the usage chunk arrives.
            self.flush_calls(out);
        }
        Ok(Step::More)
    }

    /// A clean end without `[DONE]`. Some compatible servers never send `[DONE]`; once a
    /// `finish_reason` has arrived the answer is complete, so that is accepted (with
    /// whatever usage was reported).
    pub(crate) fn on_eof(&mut self, out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError> {
        if self.finish.is_none() {
            return Err(super::incomplete());
        }
        self.complete(out);
        Ok(())
    }

    fn complete(&mut self, out: &mut VecDeque<ProviderEvent>) {
        self.flush_calls(out);
        let reason = match self.finish.take() {
            // Some compatible servers (and `[DONE]` without any finish_reason) report
            // "stop" for turns that requested tools; the agent loop keys off ToolCalls.
            Some(FinishReason::Stop) | None if self.emitted_tool_calls => FinishReason::ToolCalls,
            Some(reason) => reason,
            None => FinishReason::Stop,
        };
        out.push_back(ProviderEvent::Finish { reason, usage: self.usage });
    }

    fn absorb(&mut self, fragment: ToolCallDelta<'_>) {
        let position = match fragment.index {
            Some(index) => self.calls.iter().position(|call| call.index == index),
            // Servers that omit `index` send each call whole, or continue the last one
            // (fragments without an id).
            None => match &fragment.id {
                Some(id) => self.calls.iter().position(|call| call.id == id.as_str()),
                None => self.calls.len().checked_sub(1),
            },
        };
        let position = position.unwrap_or_else(|| {
            let index = fragment.index.unwrap_or(self.calls.len() as u32);
            self.calls.push(PartialCall { index, id: String::new(), name: String::new(), arguments: String::new() });
            self.calls.len() - 1
        });
        let call = &mut self.calls[position];
        if let Some(id) = fragment.id
            && call.id.is_empty()
        {
            call.id = id.0.into_owned();
        }
        if let Some(function) = fragment.function {
            if let Some(name) = function.name
                && call.name.is_empty()
            {
                call.name = name.0.into_owned();
            }
            if let Some(arguments) = function.arguments {
                call.arguments.push_str(arguments.as_str());
            }
        }
    }

    fn flush_calls(&mut self, out: &mut VecDeque<ProviderEvent>) {
        for call in self.calls.drain(..) {
            self.emitted_tool_calls = true;
            let id = if call.id.is_empty() {
                // Tool results must reference an id; a few servers never send one.
                format!("call_{}", call.index)
            } else {
                call.id
            };
            out.push_back(ProviderEvent::ToolCall(ToolCall {
                id,
                name: call.name,
                arguments: parse_arguments(&call.arguments),
            }));
        }
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        // `function_call` is the pre-tools spelling still used by some compatible servers.
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "length" => FinishReason::Length,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Maps an `{"error": {...}}` frame received after the HTTP 200.
fn stream_error(error: &Value) -> ProviderError {
    let message = match error.get("message").and_then(Value::as_str) {
        Some(message) => truncate(message),
        None => truncate(&error.to_string()),
    };
    // OpenRouter puts the upstream HTTP status in `code`; OpenAI puts a string there.
    if let Some(status) = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|code| u16::try_from(code).ok())
        .filter(|code| (400..600).contains(code))
    {
        return ProviderError::from_status(status, None, message);
    }
    let kind =
        ["type", "code"].iter().filter_map(|key| error.get(*key).and_then(Value::as_str)).collect::<Vec<_>>().join(" ");
    let status = if kind.contains("rate_limit") {
        429
    } else if kind.contains("invalid_request") || kind.contains("context_length") {
        400
    } else {
        500
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
        decode(AnyDecoder::OpenAi(Decoder::default()), chunks, false).await
    }

    /// Verbatim shape of a real gpt-4o stream with `include_usage`: `usage: null` on every
    /// chunk, an empty first content delta, and the usage chunk after `finish_reason`.
    const TEXT_STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-B9\",\"object\":\"chat.completion.chunk\",\"created\":1741290959,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9\",\"object\":\"chat.completion.chunk\",\"created\":1741290959,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9\",\"object\":\"chat.completion.chunk\",\"created\":1741290959,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" w\\u00f6rld \\\"\\u2603\\\"\\n\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9\",\"object\":\"chat.completion.chunk\",\"created\":1741290959,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9\",\"object\":\"chat.completion.chunk\",\"created\":1741290959,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29,\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );

    /// Two parallel tool calls with arguments split across fragments, as OpenAI streams them.
    const TOOL_STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-C1\",\"object\":\"chat.completion.chunk\",\"created\":1741291000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_abc\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}],\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-C1\",\"object\":\"chat.completion.chunk\",\"created\":1741291000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"lo\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-C1\",\"object\":\"chat.completion.chunk\",\"created\":1741291000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"cation\\\": \\\"Par\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-C1\",\"object\":\"chat.completion.chunk\",\"created\":1741291000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"is\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-C1\",\"object\":\"chat.completion.chunk\",\"created\":1741291000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_def\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-C1\",\"object\":\"chat.completion.chunk\",\"created\":1741291000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-C1\",\"object\":\"chat.completion.chunk\",\"created\":1741291000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":80,\"completion_tokens\":40,\"total_tokens\":120}}\n\n",
        "data: [DONE]\n\n",
    );

    fn text_stream_events() -> Vec<ProviderEvent> {
        vec![
            ProviderEvent::TextDelta("Hello".into()),
            ProviderEvent::TextDelta(" wörld \"☃\"\n".into()),
            ProviderEvent::Finish { reason: FinishReason::Stop, usage: Usage { input_tokens: 19, output_tokens: 10 } },
        ]
    }

    #[tokio::test]
    async fn text_stream_finishes_after_usage_chunk() {
        assert_eq!(ok_events(run(whole(TEXT_STREAM)).await), text_stream_events());
    }

    #[tokio::test]
    async fn text_stream_survives_bytewise_chunking() {
        assert_eq!(ok_events(run(bytewise(TEXT_STREAM)).await), text_stream_events());
    }

    #[tokio::test]
    async fn fragmented_parallel_tool_calls_are_assembled() {
        let events = ok_events(run(whole(TOOL_STREAM)).await);
        assert_eq!(
            events,
            vec![
                ProviderEvent::ToolCall(ToolCall {
                    id: "call_abc".into(),
                    name: "get_weather".into(),
                    arguments: json!({"location": "Paris"}),
                }),
                ProviderEvent::ToolCall(ToolCall {
                    id: "call_def".into(),
                    name: "get_time".into(),
                    arguments: json!({}),
                }),
                ProviderEvent::Finish {
                    reason: FinishReason::ToolCalls,
                    usage: Usage { input_tokens: 80, output_tokens: 40 },
                },
            ]
        );
        assert_eq!(ok_events(run(bytewise(TOOL_STREAM)).await), events);
    }

    #[tokio::test]
    async fn eof_without_finish_is_a_transport_error() {
        // The connection closed cleanly mid-answer: no finish_reason, no [DONE].
        let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}],\"usage\":null}\n\n";
        let items = run(whole(sse)).await;
        assert_eq!(items[0], Ok(ProviderEvent::TextDelta("Hello".into())));
        assert_eq!(items.last(), Some(&Err(ProviderError::Transport("stream ended before completion".into()))));
    }

    #[tokio::test]
    async fn eof_after_finish_reason_without_done_is_accepted() {
        let sse = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
        );
        let events = ok_events(run(whole(sse)).await);
        assert_eq!(
            events.last(),
            Some(&ProviderEvent::Finish {
                reason: FinishReason::Length,
                usage: Usage { input_tokens: 3, output_tokens: 1 },
            })
        );
    }

    #[tokio::test]
    async fn unparseable_chunk_is_a_protocol_error() {
        let items = run(whole("data: {\"choices\": [\n\n")).await;
        assert!(matches!(&items[..], [Err(ProviderError::Protocol(_))]), "{items:?}");
    }

    #[tokio::test]
    async fn error_frame_after_200_is_mapped() {
        let sse = "data: {\"error\":{\"message\":\"Rate limit exceeded\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}\n\n";
        assert_eq!(
            run(whole(sse)).await,
            vec![Err(ProviderError::RateLimited { retry_after: None, message: "Rate limit exceeded".into() })]
        );
        let sse = "data: {\"error\":{\"code\":502,\"message\":\"upstream failed\"}}\n\n";
        assert_eq!(
            run(whole(sse)).await,
            vec![Err(ProviderError::Server { status: 502, message: "upstream failed".into() })]
        );
    }

    #[tokio::test]
    async fn tool_calls_without_index_or_id_and_stop_reason() {
        // Shape used by some compatible servers: each call whole, no index, "stop".
        let sse = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"ls\",\"arguments\":\"{\\\"path\\\":\\\"/\\\"}\"}}]},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(
            ok_events(run(whole(sse)).await),
            vec![
                ProviderEvent::ToolCall(ToolCall {
                    id: "call_0".into(),
                    name: "ls".into(),
                    arguments: json!({"path": "/"}),
                }),
                ProviderEvent::Finish { reason: FinishReason::ToolCalls, usage: Usage::default() },
            ]
        );
    }

    #[test]
    fn request_body_maps_messages_tools_and_parameters() {
        let mut parameters = serde_json::Map::new();
        parameters.insert("temperature".into(), json!(0.2));
        parameters.insert("stop".into(), json!(["END"]));
        // Must not override what the adapter owns.
        parameters.insert("stream".into(), json!(false));
        parameters.insert("model".into(), json!("other"));
        let request = ChatRequest {
            model: "gpt-4o".into(),
            messages: vec![
                ChatMessage::system("You are terse."),
                ChatMessage::user("Weather in Paris?"),
                ChatMessage::assistant_with_tool_calls(
                    "",
                    vec![ToolCall {
                        id: "call_abc".into(),
                        name: "get_weather".into(),
                        arguments: json!({"location": "Paris"}),
                    }],
                ),
                ChatMessage::tool_result("call_abc", "18C"),
                ChatMessage::assistant("18C and sunny."),
            ],
            tools: vec![ToolSpec {
                name: "get_weather".into(),
                description: "Current weather".into(),
                parameters: json!({"type": "object", "properties": {"location": {"type": "string"}}}),
            }],
            parameters,
        };
        let body = serde_json::to_value(build_body(&request)).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "gpt-4o",
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.2,
                "stop": ["END"],
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_abc", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_abc", "content": "18C"},
                    {"role": "assistant", "content": "18C and sunny."},
                ],
                "tools": [{"type": "function", "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}
                }}],
            })
        );
    }

    #[test]
    fn request_body_omits_empty_tools_and_keeps_raw_invalid_arguments() {
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::assistant_with_tool_calls(
                "thinking",
                vec![ToolCall { id: "c".into(), name: "f".into(), arguments: Value::String("{\"a\":".into()) }],
            )],
            ..ChatRequest::default()
        };
        let body = serde_json::to_value(build_body(&request)).unwrap();
        assert!(body.get("tools").is_none());
        assert_eq!(body["messages"][0]["content"], "thinking");
        assert_eq!(body["messages"][0]["tool_calls"][0]["function"]["arguments"], "{\"a\":");
    }
}
