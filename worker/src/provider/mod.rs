//! Streaming adapters for LLM providers.
//!
//! The rest of the worker sees one provider-neutral shape: a [`ChatRequest`] goes in, a
//! [`ProviderStream`] of [`ProviderEvent`]s comes out, and every failure is a
//! [`ProviderError`] that already knows whether a retry can help. Protocol differences
//! (message layout, how tool-call arguments are streamed, where usage arrives) stay inside
//! the per-protocol modules.
//!
//! The live path and the tests share one decoding pipeline: bytes go through
//! [`eventsource_stream`] into a per-protocol decoder, driven by [`ProviderStream`], which
//! accepts any `Stream<Item = Result<impl AsRef<[u8]>, E>>`. That is what lets the unit
//! tests replay canned SSE transcripts without a network.
//!
//! # Layout
//! - `mod.rs`: neutral request/event/error types, [`Provider`], HTTP status mapping and the
//!   [`ProviderStream`] driver.
//! - `openai.rs`: OpenAI chat completions (any OpenAI-compatible base URL): request body
//!   and chunk decoder.
//! - `anthropic.rs`: Anthropic messages API: request body and event decoder.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::stream::{FusedStream, Stream, StreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod anthropic;
pub mod openai;

pub use runq_shared::chat::{ChatMessage, Role, ToolCall, Usage};
pub use runq_shared::domain::ProviderKind;

/// Error text for a stream that stopped before the provider signalled completion.
const INCOMPLETE: &str = "stream ended before completion";

/// Provider messages are echoed into run events and logs; a full HTML error page or a
/// provider's multi-kilobyte validation dump would only be noise there.
const MAX_MESSAGE_CHARS: usize = 500;

/// Enough to find the `message` field of any JSON error body without letting a
/// misbehaving server make us buffer megabytes.
const MAX_ERROR_BODY_BYTES: usize = 16 * 1024;

/// Where and how to reach a provider.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// API root, e.g. `https://api.openai.com/v1` or `https://api.anthropic.com/v1`.
    pub base_url: String,
    pub api_key: String,
}

impl fmt::Debug for ProviderConfig {
    // Configs end up in tracing spans; the key must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: Value,
}

/// A provider-neutral chat request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// Sampling options (`temperature`, `max_tokens`, `top_p`, `stop`, ...) copied into the
    /// request body. Keys the adapter sets itself (`model`, `messages`, `stream`, ...) are
    /// ignored here so a stored job cannot break the protocol.
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// Why the model stopped.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FinishReason {
    Stop,
    ToolCalls,
    Length,
    /// Any other provider reason (`content_filter`, `refusal`, `pause_turn`, ...), verbatim.
    Other(String),
}

impl FinishReason {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Stop => "stop",
            Self::ToolCalls => "tool_calls",
            Self::Length => "length",
            Self::Other(reason) => reason,
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One item of a successful provider stream.
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderEvent {
    /// A piece of assistant text, never empty.
    TextDelta(String),
    /// A complete tool call, emitted once its arguments have fully arrived.
    ToolCall(ToolCall),
    /// Always the last event of a successful stream.
    Finish { reason: FinishReason, usage: Usage },
}

/// Everything that can go wrong talking to a provider.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("provider rate limited: {message}")]
    RateLimited { retry_after: Option<Duration>, message: String },
    #[error("provider error (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    /// `status` is 0 when the key was rejected locally (not a valid header value).
    #[error("provider rejected credentials (HTTP {status}): {message}")]
    Auth { status: u16, message: String },
    /// `status` is 0 when the request could not even be built (e.g. an invalid base URL).
    #[error("provider rejected request (HTTP {status}): {message}")]
    BadRequest { status: u16, message: String },
    #[error("provider unreachable: {0}")]
    Transport(String),
    #[error("provider protocol error: {0}")]
    Protocol(String),
}

impl ProviderError {
    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Server { .. } | Self::Transport(_) => true,
            // A frame we cannot parse will most likely be unparseable next time too, and a
            // permanent misconfiguration must not turn into an endless retry loop.
            Self::Auth { .. } | Self::BadRequest { .. } | Self::Protocol(_) => false,
        }
    }

    /// How long the provider asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Stable machine-readable code for run events and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "provider_rate_limited",
            Self::Server { .. } => "provider_error",
            Self::Auth { .. } => "provider_auth_failed",
            Self::BadRequest { .. } => "provider_bad_request",
            Self::Transport(_) => "provider_unreachable",
            Self::Protocol(_) => "provider_protocol_error",
        }
    }

    /// Maps a non-success HTTP response (status, headers, possibly truncated body).
    pub fn from_http(status: u16, headers: &HeaderMap, body: &[u8]) -> Self {
        Self::from_status(status, retry_after(headers), error_message(body))
    }

    /// Maps a status plus an already extracted message. Shared with the in-stream error
    /// frames, which carry an error type rather than an HTTP status.
    pub(crate) fn from_status(status: u16, retry_after: Option<Duration>, message: String) -> Self {
        match status {
            429 => Self::RateLimited { retry_after, message },
            401 | 403 => Self::Auth { status, message },
            // 408 is the server giving up on a slow request, not a defect in the request.
            408 | 500..=599 => Self::Server { status, message },
            _ => Self::BadRequest { status, message },
        }
    }
}

/// `retry-after-ms` (OpenAI) is more precise than `retry-after`, so it wins when both are
/// present. HTTP-date values of `retry-after` are not used by these providers and are
/// ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = |name: &str, scale: f64| {
        let value = headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok()?;
        Duration::try_from_secs_f64(value / scale).ok()
    };
    seconds("retry-after-ms", 1000.0).or_else(|| seconds("retry-after", 1.0))
}

/// Pulls the human-readable message out of an error body. Both providers use
/// `{"error": {"message": ...}}`; compatible servers also use `{"error": "..."}`,
/// `{"message": ...}` or `{"detail": ...}`, and proxies answer with plain text or HTML.
fn error_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        let candidates = [json.pointer("/error/message"), json.get("error"), json.get("message"), json.get("detail")];
        if let Some(text) = candidates.into_iter().flatten().find_map(Value::as_str) {
            return truncate(text);
        }
    }
    truncate(String::from_utf8_lossy(body).trim())
}

pub(crate) fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// reqwest's top-level messages ("error sending request") hide the useful part
/// ("connection refused", "operation timed out") in the source chain.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A configured provider endpoint. Cheap to clone; share one [`reqwest::Client`] across
/// providers so connections are pooled.
#[derive(Clone)]
pub struct Provider {
    client: reqwest::Client,
    config: ProviderConfig,
    endpoint: String,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("config", &self.config)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Provider {
    pub fn new(client: reqwest::Client, config: ProviderConfig) -> Self {
        let endpoint = endpoint(&config);
        Self { client, config, endpoint }
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// Starts a streaming call.
    ///
    /// Resolves once response headers arrived with a success status; HTTP and connection
    /// failures come back as `Err` here. After that the stream yields events and ends
    /// with [`ProviderEvent::Finish`], or with exactly one `Err` item.
    ///
    /// No idle timeout is applied here: configure `read_timeout` on the client so a
    /// stalled stream surfaces as [`ProviderError::Transport`].
    pub async fn stream(&self, request: &ChatRequest) -> Result<ProviderStream, ProviderError> {
        let key = &self.config.api_key;
        let builder = self.client.post(&self.endpoint).header(ACCEPT, "text/event-stream");
        let builder = match self.config.kind {
            // Local OpenAI-compatible servers often run without a key; an empty bearer
            // token makes some of them reject the request.
            ProviderKind::Openai if key.is_empty() => builder.json(&openai::build_body(request)),
            ProviderKind::Openai => builder
                .header(AUTHORIZATION, secret_header(&format!("Bearer {key}"))?)
                .json(&openai::build_body(request)),
            ProviderKind::Anthropic => builder
                .header("x-api-key", secret_header(key)?)
                .header("anthropic-version", anthropic::API_VERSION)
                .json(&anthropic::build_body(request)),
        };

        let response = builder.send().await.map_err(send_error)?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = read_capped(response).await;
            return Err(ProviderError::from_http(status.as_u16(), &headers, &body));
        }
        if let Some(content_type) = unexpected_content_type(response.headers()) {
            // A 200 with a JSON or HTML body means a misconfigured base URL or a server
            // that ignored `stream: true`. Decoding it as SSE would end "early" and look
            // like a retryable transport failure forever.
            let body = read_capped(response).await;
            return Err(ProviderError::Protocol(format!(
                "expected an event stream, got {content_type}: {}",
                error_message(&body)
            )));
        }

        let decoder = match self.config.kind {
            ProviderKind::Openai => Decoder::OpenAi(openai::Decoder::default()),
            ProviderKind::Anthropic => Decoder::Anthropic(anthropic::Decoder::default()),
        };
        Ok(ProviderStream::new(response.bytes_stream(), decoder))
    }
}

/// Validated here because reqwest would only report a bad header value from `send()`, as
/// a generic error we would otherwise treat as a retryable transport failure. Marked
/// sensitive so it is redacted from reqwest's and hyper's debug output.
fn secret_header(value: &str) -> Result<HeaderValue, ProviderError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| ProviderError::Auth {
        status: 0,
        message: "API key contains characters not allowed in an HTTP header".to_owned(),
    })?;
    header.set_sensitive(true);
    Ok(header)
}

fn send_error(err: reqwest::Error) -> ProviderError {
    let message = error_chain(&err);
    if err.is_builder() {
        // The request could not be constructed (bad URL, ...): retrying cannot help.
        ProviderError::BadRequest { status: 0, message }
    } else {
        ProviderError::Transport(message)
    }
}

fn endpoint(config: &ProviderConfig) -> String {
    let base = config.base_url.trim_end_matches('/');
    match config.kind {
        ProviderKind::Openai => format!("{base}/chat/completions"),
        ProviderKind::Anthropic => format!("{base}/messages"),
    }
}

/// Only content types that are certainly not SSE are rejected; some compatible servers
/// and proxies omit the header or label the stream oddly.
fn unexpected_content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let lower = value.to_ascii_lowercase();
    (lower.starts_with("application/json") || lower.starts_with("text/html")).then(|| value.to_owned())
}

async fn read_capped(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    // A body that fails halfway still has a usable prefix; the status is what matters.
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ERROR_BODY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    body
}

/// What a decoder wants after consuming one SSE event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    More,
    /// The protocol signalled completion; `Finish` has been queued.
    Done,
}

/// Per-protocol state machine turning SSE events into [`ProviderEvent`]s.
///
/// An enum rather than a trait object so [`ProviderStream`] is one concrete type for both
/// protocols without an extra allocation per stream.
pub(crate) enum Decoder {
    OpenAi(openai::Decoder),
    Anthropic(anthropic::Decoder),
}

impl Decoder {
    fn on_event(&mut self, event: &Event, out: &mut VecDeque<ProviderEvent>) -> Result<Step, ProviderError> {
        match self {
            Self::OpenAi(decoder) => decoder.on_event(event, out),
            Self::Anthropic(decoder) => decoder.on_event(event, out),
        }
    }

    /// The byte stream ended cleanly without a completion signal.
    fn on_eof(&mut self, out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError> {
        match self {
            Self::OpenAi(decoder) => decoder.on_eof(out),
            Self::Anthropic(decoder) => decoder.on_eof(out),
        }
    }
}

type SseEvents = Pin<Box<dyn Stream<Item = Result<Event, ProviderError>> + Send>>;

/// The events of one streaming call; see [`Provider::stream`].
///
/// Yields zero or more [`ProviderEvent::TextDelta`] / [`ProviderEvent::ToolCall`] items and
/// then either [`ProviderEvent::Finish`] or a single `Err`, after which it is exhausted.
pub struct ProviderStream {
    events: SseEvents,
    decoder: Decoder,
    /// One SSE event can produce several items (e.g. all tool calls at `finish_reason`).
    /// The buffer is reused for the whole stream, so steady-state decoding does not
    /// allocate here.
    pending: VecDeque<ProviderEvent>,
    error: Option<ProviderError>,
    finished: bool,
}

impl fmt::Debug for ProviderStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderStream")
            .field("pending", &self.pending.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ProviderStream {
    /// Decodes an SSE byte stream. The live path passes `Response::bytes_stream()`; tests
    /// pass canned chunks.
    pub(crate) fn new<S, B, E>(bytes: S, decoder: Decoder) -> Self
    where
        S: Stream<Item = Result<B, E>> + Send + 'static,
        B: AsRef<[u8]>,
        E: StdError + 'static,
    {
        let events = bytes.eventsource().map(|item| item.map_err(sse_error));
        Self { events: Box::pin(events), decoder, pending: VecDeque::new(), error: None, finished: false }
    }

    fn finish(&mut self, error: Option<ProviderError>) {
        self.finished = true;
        self.error = error;
        // Release the connection now rather than when the caller drops the stream; the
        // worker may hold thousands of finished-but-not-yet-dropped streams. An empty
        // stream is zero-sized, so this does not allocate.
        self.events = Box::pin(futures::stream::empty());
    }
}

fn sse_error<E: StdError + 'static>(err: EventStreamError<E>) -> ProviderError {
    match err {
        EventStreamError::Transport(err) => ProviderError::Transport(format!("{INCOMPLETE}: {}", error_chain(&err))),
        EventStreamError::Utf8(err) => ProviderError::Protocol(format!("event stream is not valid UTF-8: {err}")),
        EventStreamError::Parser(err) => ProviderError::Protocol(format!("malformed event stream: {err}")),
    }
}

impl Stream for ProviderStream {
    type Item = Result<ProviderEvent, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // Events decoded before a failure are still delivered, then the error.
            if let Some(event) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if let Some(error) = this.error.take() {
                return Poll::Ready(Some(Err(error)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            let step = match ready!(this.events.as_mut().poll_next(cx)) {
                Some(Ok(event)) => this.decoder.on_event(&event, &mut this.pending),
                Some(Err(error)) => Err(error),
                None => this.decoder.on_eof(&mut this.pending).map(|()| Step::Done),
            };
            match step {
                Ok(Step::More) => {}
                Ok(Step::Done) => this.finish(None),
                Err(error) => this.finish(Some(error)),
            }
        }
    }
}

impl FusedStream for ProviderStream {
    fn is_terminated(&self) -> bool {
        self.finished && self.pending.is_empty() && self.error.is_none()
    }
}

/// Copies caller parameters into a request body, minus the keys the adapter owns.
/// Used with `#[serde(flatten)]` so no intermediate `Map` is cloned per request.
pub(crate) struct PassThrough<'a> {
    params: &'a Map<String, Value>,
    reserved: &'static [&'static str],
}

impl<'a> PassThrough<'a> {
    pub(crate) fn new(params: &'a Map<String, Value>, reserved: &'static [&'static str]) -> Self {
        Self { params, reserved }
    }
}

impl Serialize for PassThrough<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.params {
            if !self.reserved.contains(&key.as_str()) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// A JSON string that borrows from the SSE event when it has no escapes.
///
/// serde only borrows `Cow<str>` when it is a direct field; inside `Option` it would
/// always allocate. Deltas are decoded once per token, so this matters.
pub(crate) struct WireStr<'a>(pub(crate) Cow<'a, str>);

impl WireStr<'_> {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for WireStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;

        impl<'de> Visitor<'de> for StrVisitor {
            type Value = WireStr<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(WireStr(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireStr(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(WireStr(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(StrVisitor)
    }
}

/// Deserializes only the first element of a JSON array (or `null`) without building a
/// `Vec`: the worker never requests `n > 1`, so `choices` has at most one entry we use.
pub(crate) fn first_element<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct FirstVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for FirstVisitor<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array or null")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(first)
        }
    }

    deserializer.deserialize_any(FirstVisitor(PhantomData))
}

/// Parses completed tool-call argument text. Empty means "no arguments"; invalid JSON is
/// kept verbatim (see [`ToolCall::arguments`]).
pub(crate) fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(Map::new());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

pub(crate) fn unparseable(what: &str, err: &serde_json::Error, data: &str) -> ProviderError {
    ProviderError::Protocol(format!("unparseable {what} ({err}): {}", truncate(data)))
}

pub(crate) fn incomplete() -> ProviderError {
    ProviderError::Transport(INCOMPLETE.to_owned())
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Feeds `chunks` through the same pipeline the live path uses.
    pub(crate) async fn decode(
        decoder: Decoder,
        chunks: Vec<Vec<u8>>,
        fail_at_end: bool,
    ) -> Vec<Result<ProviderEvent, ProviderError>> {
        let mut items: Vec<Result<Vec<u8>, std::io::Error>> = chunks.into_iter().map(Ok).collect();
        if fail_at_end {
            items.push(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer")));
        }
        ProviderStream::new(futures::stream::iter(items), decoder).collect().await
    }

    /// The whole transcript as one chunk.
    pub(crate) fn whole(sse: &str) -> Vec<Vec<u8>> {
        vec![sse.as_bytes().to_vec()]
    }

    /// One byte per chunk: splits every frame, line and multi-byte character.
    pub(crate) fn bytewise(sse: &str) -> Vec<Vec<u8>> {
        sse.bytes().map(|b| vec![b]).collect()
    }

    pub(crate) fn ok_events(items: Vec<Result<ProviderEvent, ProviderError>>) -> Vec<ProviderEvent> {
        items.into_iter().map(|item| item.expect("unexpected error item")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn rate_limit_reads_retry_after_seconds() {
        let err = ProviderError::from_http(
            429,
            &headers(&[("retry-after", "7")]),
            br#"{"error":{"message":"Rate limit reached","type":"requests"}}"#,
        );
        assert_eq!(
            err,
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                message: "Rate limit reached".into()
            }
        );
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(err.code(), "provider_rate_limited");
    }

    #[test]
    fn retry_after_ms_wins_and_garbage_is_ignored() {
        let both = headers(&[("retry-after", "2"), ("retry-after-ms", "1500")]);
        assert_eq!(retry_after(&both), Some(Duration::from_millis(1500)));
        let date = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert_eq!(retry_after(&date), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn status_mapping() {
        let none = HeaderMap::new();
        let anthropic_overloaded = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let cases: [(u16, &[u8], &str, bool); 8] = [
            (500, b"oops", "provider_error", true),
            (503, b"", "provider_error", true),
            (529, anthropic_overloaded, "provider_error", true),
            (408, b"", "provider_error", true),
            (401, br#"{"error":{"message":"bad key"}}"#, "provider_auth_failed", false),
            (403, b"", "provider_auth_failed", false),
            (400, br#"{"error":"nope"}"#, "provider_bad_request", false),
            (404, br#"{"detail":"Not Found"}"#, "provider_bad_request", false),
        ];
        for (status, body, code, retryable) in cases {
            let err = ProviderError::from_http(status, &none, body);
            assert_eq!(err.code(), code, "status {status}");
            assert_eq!(err.is_retryable(), retryable, "status {status}");
            assert_eq!(err.retry_after(), None);
        }
        assert_eq!(
            ProviderError::from_http(529, &none, anthropic_overloaded),
            ProviderError::Server { status: 529, message: "Overloaded".into() }
        );
        assert_eq!(
            ProviderError::from_http(400, &none, br#"{"error":"nope"}"#),
            ProviderError::BadRequest { status: 400, message: "nope".into() }
        );
    }

    #[test]
    fn error_codes_and_retryability() {
        let transport = ProviderError::Transport("connection refused".into());
        assert!(transport.is_retryable());
        assert_eq!(transport.code(), "provider_unreachable");
        let protocol = ProviderError::Protocol("bad frame".into());
        assert!(!protocol.is_retryable());
        assert_eq!(protocol.code(), "provider_protocol_error");
    }

    #[test]
    fn error_messages_are_truncated_on_char_boundaries() {
        let body = "é".repeat(2000);
        let message = error_message(body.as_bytes());
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(message.ends_with('…'));
        assert_eq!(error_message(b"  <html>bad gateway</html>\n"), "<html>bad gateway</html>");
    }

    #[test]
    fn endpoint_trims_trailing_slash() {
        let config = |kind, base_url: &str| ProviderConfig { kind, base_url: base_url.into(), api_key: "k".into() };
        assert_eq!(
            endpoint(&config(ProviderKind::Openai, "https://api.openai.com/v1/")),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            endpoint(&config(ProviderKind::Anthropic, "https://api.anthropic.com/v1")),
            "https://api.anthropic.com/v1/messages"
        );
    }

    #[test]
    fn invalid_api_key_is_a_permanent_auth_error() {
        let err = secret_header("sk-abc\n").unwrap_err();
        assert_eq!(err.code(), "provider_auth_failed");
        assert!(!err.is_retryable());
        assert!(secret_header("sk-abc").unwrap().is_sensitive());
    }

    #[test]
    fn config_debug_redacts_key() {
        let config =
            ProviderConfig { kind: ProviderKind::Openai, base_url: "http://x".into(), api_key: "sk-secret".into() };
        assert!(!format!("{config:?}").contains("sk-secret"));
    }

    #[test]
    fn content_type_guard() {
        assert!(unexpected_content_type(&headers(&[("content-type", "text/event-stream")])).is_none());
        assert!(unexpected_content_type(&HeaderMap::new()).is_none());
        assert!(unexpected_content_type(&headers(&[("content-type", "application/json; charset=utf-8")])).is_some());
    }

    #[test]
    fn chat_message_serde_round_trip() {
        let messages = vec![
            ChatMessage::system("be brief"),
            ChatMessage::assistant_with_tool_calls(
                "",
                vec![ToolCall {
                    id: "call_1".into(),
                    name: "search".into(),
                    arguments: serde_json::json!({"q": "rust"}),
                }],
            ),
            ChatMessage::tool_result("call_1", "found"),
        ];
        let json = serde_json::to_value(&messages).unwrap();
        assert_eq!(json[0], serde_json::json!({"role": "system", "content": "be brief"}));
        assert_eq!(json[2]["tool_call_id"], "call_1");
        let back: Vec<ChatMessage> = serde_json::from_value(json).unwrap();
        assert_eq!(back, messages);
    }

    #[test]
    fn parse_arguments_handles_empty_and_invalid() {
        assert_eq!(parse_arguments(""), serde_json::json!({}));
        assert_eq!(parse_arguments(r#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(parse_arguments(r#"{"a":"#), Value::String(r#"{"a":"#.into()));
    }

    #[test]
    fn streams_can_move_across_tasks() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<ProviderStream>();
        // Compile-time only: the worker spawns the call itself onto the runtime.
        fn _stream_future_is_send<'a>(provider: &'a Provider, request: &'a ChatRequest) -> impl Send + 'a {
            provider.stream(request)
        }
    }

    #[test]
    fn wire_str_borrows_unless_escaped() {
        let plain: WireStr<'_> = serde_json::from_str(r#""hello""#).unwrap();
        assert!(matches!(plain.0, Cow::Borrowed("hello")));
        let escaped: WireStr<'_> = serde_json::from_str(r#""a\nb""#).unwrap();
        assert!(matches!(escaped.0, Cow::Owned(ref s) if s == "a\nb"));
    }

    #[test]
    fn first_element_takes_head_of_array_or_null() {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(default, deserialize_with = "first_element")]
            items: Option<u32>,
        }
        let parse = |json: &str| serde_json::from_str::<Holder>(json).unwrap().items;
        assert_eq!(parse(r#"{"items":[7,8,9]}"#), Some(7));
        assert_eq!(parse(r#"{"items":[]}"#), None);
        assert_eq!(parse(r#"{"items":null}"#), None);
        assert_eq!(parse(r#"{}"#), None);
    }

    #[tokio::test]
    async fn transport_error_mid_stream_is_reported_after_decoded_events() {
        let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
        let items = decode(Decoder::OpenAi(openai::Decoder::default()), whole(sse), true).await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], Ok(ProviderEvent::TextDelta("Hi".into())));
        match &items[1] {
            Err(ProviderError::Transport(message)) => {
                assert!(message.starts_with(INCOMPLETE), "{message}");
                assert!(message.contains("connection reset"), "{message}");
            }
            other => panic!("expected transport error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn invalid_utf8_is_a_protocol_error() {
        let chunks = vec![b"data: \xff\xfe\n\n".to_vec()];
        let items = decode(Decoder::OpenAi(openai::Decoder::default()), chunks, false).await;
        assert!(matches!(items.last(), Some(Err(ProviderError::Protocol(_)))), "{items:?}");
    }
}
