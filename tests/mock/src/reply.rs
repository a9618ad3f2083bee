//! Protocol-neutral view of a request and the reply the mock will give.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::time::Duration;

use serde_json::Value;

use crate::MockConfig;
use crate::body::tokens;
use crate::directive::{self, Directive, DirectiveError, Fault};

/// What the protocol adapters extract from a conversation.
#[derive(Default)]
pub(crate) struct Collector<'a> {
    directive: Directive,
    words: usize,
    last_user: Option<Cow<'a, str>>,
    tool_result: Option<Cow<'a, str>>,
}

impl<'a> Collector<'a> {
    /// System or user text: counted, and searched for directives.
    pub(crate) fn instruction(&mut self, text: &str) -> Result<(), DirectiveError> {
        self.words += text.split_whitespace().count();
        self.directive.scan(text)
    }

    /// Other input text (assistant turns): only counted.
    pub(crate) fn context(&mut self, text: &str) {
        self.words += text.split_whitespace().count();
    }

    /// The joined text of a user message; the last one is echoed.
    pub(crate) fn user_message(&mut self, text: Cow<'a, str>) {
        self.last_user = Some(text);
    }

    /// A tool result; the last one is quoted back in tool mode.
    pub(crate) fn tool_result(&mut self, text: Cow<'a, str>) {
        self.context(&text);
        self.tool_result = Some(text);
    }
}

/// The text pieces of a message `content`: a plain string, or the `text` of
/// every part of a content array (non-text parts such as images are skipped).
pub(crate) fn text_parts(content: &Value) -> impl Iterator<Item = &str> {
    let (single, parts) = match content {
        Value::String(s) => (Some(s.as_str()), None),
        Value::Array(parts) => (None, Some(parts.iter())),
        _ => (None, None),
    };
    single.into_iter().chain(
        parts
            .into_iter()
            .flatten()
            .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|part| part.get("text").and_then(Value::as_str)),
    )
}

/// All text pieces of `content` joined by newlines, or `None` if it has none.
/// Borrows in the common single-piece case.
pub(crate) fn joined_text(content: &Value) -> Option<Cow<'_, str>> {
    let mut parts = text_parts(content);
    let first = parts.next()?;
    match parts.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut out = format!("{first}\n{second}");
            for part in parts {
                out.push('\n');
                out.push_str(part);
            }
            Some(Cow::Owned(out))
        }
    }
}

pub(crate) enum Reply {
    Text(String),
    Tool {
        name: String,
        /// Compact JSON text, as streamed / sent in OpenAI `arguments`.
        args: String,
        /// The same arguments parsed, for Anthropic's `input`.
        input: Value,
    },
}

pub(crate) struct FaultPlan {
    pub(crate) fault: Fault,
    pub(crate) times: Option<u32>,
    pub(crate) retry_after: u64,
    pub(crate) drop_after: usize,
}

/// Everything needed to render a reply in either protocol.
pub(crate) struct Plan {
    pub(crate) reply: Reply,
    pub(crate) ttft: Duration,
    pub(crate) delay: Duration,
    pub(crate) input_tokens: usize,
    pub(crate) output_tokens: usize,
    pub(crate) fault: Option<FaultPlan>,
}

impl Plan {
    pub(crate) fn new(collected: Collector<'_>, config: &MockConfig) -> Result<Plan, String> {
        let Collector { directive, words, last_user, tool_result } = collected;
        let reply = match (&directive.tool, tool_result) {
            (Some(name), None) => {
                let args = directive.args.as_deref().unwrap_or("{}");
                let input: Value = serde_json::from_str(args)
                    .map_err(|e| format!("invalid mock directive: `args` is not JSON: {e}"))?;
                Reply::Tool { name: name.clone(), args: args.to_owned(), input }
            }
            (Some(name), Some(result)) => Reply::Text(format!("Tool {name} returned: {result}")),
            (None, _) => match directive.tokens.or(config.tokens) {
                Some(n) => Reply::Text(counted_text(n)),
                None => {
                    let last = last_user.as_deref().unwrap_or_default();
                    Reply::Text(format!("Echo: {}", directive::strip(last).trim()))
                }
            },
        };
        let output_tokens = match &reply {
            Reply::Text(text) => tokens(text).count(),
            Reply::Tool { .. } => 1,
        };
        let fault = directive.fault.map(|fault| FaultPlan {
            fault,
            times: directive.times,
            retry_after: directive.retry_after.unwrap_or(1),
            drop_after: directive.drop_after.unwrap_or(2),
        });
        Ok(Plan {
            reply,
            ttft: directive.ttft.unwrap_or(config.ttft),
            delay: directive.delay.unwrap_or(config.delay),
            input_tokens: words.max(1),
            output_tokens,
            fault,
        })
    }

    /// How long a non-streaming reply takes to "generate".
    pub(crate) fn total_latency(&self) -> Duration {
        let later = u32::try_from(self.output_tokens.saturating_sub(1)).unwrap_or(u32::MAX);
        self.ttft.saturating_add(self.delay.saturating_mul(later))
    }
}

/// `tok0 tok1 ... tok{n-1}`.
fn counted_text(n: usize) -> String {
    let mut out = String::with_capacity(n * 7);
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "tok{i}");
    }
    out
}

/// Identifies "the same conversation" across retries for `times=N` faults.
pub(crate) fn conversation_key(protocol: &str, model: &str, messages: &[Value]) -> u64 {
    struct HashWriter(DefaultHasher);
    impl io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut writer = HashWriter(DefaultHasher::new());
    writer.0.write(protocol.as_bytes());
    writer.0.write_u8(0);
    writer.0.write(model.as_bytes());
    writer.0.write_u8(0);
    // Serializing a `Value` cannot fail and the writer is infallible.
    let _ = serde_json::to_writer(&mut writer, messages);
    writer.0.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_text_shape() {
        assert_eq!(counted_text(3), "tok0 tok1 tok2");
        assert_eq!(counted_text(0), "");
        assert_eq!(tokens(&counted_text(5)).count(), 5);
    }

    #[test]
    fn joins_text_parts() {
        let content = serde_json::json!([
            {"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "text", "text": "b"}
        ]);
        assert_eq!(joined_text(&content).as_deref(), Some("a\nb"));
        assert_eq!(joined_text(&Value::Null), None);
    }
}
