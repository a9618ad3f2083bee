//! Run request bodies (`POST /v1/run`, the agent `invoke`/`stream` routes, sessions) and their
//! conversion into run inputs.
//!
//! Parsing happens in two steps so the checks run in the order reference `000_…` documents (key →
//! agent → workspace → deployed version → input): [`RunRequest::plan`] only reads which agents the
//! request names and how the answer is delivered; each [`Draft`]'s turn is validated once its
//! agent has been resolved ([`crate::submit::admit`]).

use axum::http::{HeaderMap, header};
use runq_shared::admission::RunInput;
use runq_shared::chat::{ChatMessage, Role};
use runq_shared::domain::{AgentRef, ThreadId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::live::Framing;
use crate::state::Limits;
use crate::submit::Mode;

/// A message of the new turn: `{role, content}`, or an AI SDK UI message `{id, role, parts}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct InMessage {
    /// `user`, `assistant` or `system`.
    pub role: String,
    pub content: Option<String>,
    /// AI SDK UI message parts; the `text` parts are the message's content.
    #[schema(value_type = Option<Vec<Object>>)]
    pub parts: Option<Vec<Value>>,
    /// The UI message's id (AI SDK chat transport); not stored.
    pub id: Option<String>,
    /// The UI message's metadata (AI SDK chat transport); not stored.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// One run's input. At most one of `prompt`, `query`, `input` or `messages`; with none, the agent's
/// own (rendered) prompt and messages are the whole conversation.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct TurnFields {
    pub prompt: Option<String>,
    pub query: Option<String>,
    pub input: Option<String>,
    pub messages: Option<Vec<InMessage>>,
    /// Fill `{{name}}` placeholders of the agent's prompts.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    /// Provider parameters (`temperature`, `max_tokens`, …) overriding the version's.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    /// Continue this thread (created under this id when new).
    #[serde(alias = "threadId")]
    pub thread_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    /// Time limit of the run from its first start, in milliseconds (default from the server).
    pub timeout_ms: Option<u32>,
    /// Who the run acts for, sent to tools as `X-End-User-ID` (the header of that name works too).
    pub user: Option<String>,
}

/// Request-wide settings every run of a request shares.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub cancel_on_disconnect: bool,
    pub default_timeout_ms: u32,
}

impl RunOptions {
    pub fn new(limits: &Limits, cancel_on_disconnect: bool) -> Self {
        Self { cancel_on_disconnect, default_timeout_ms: limits.run_timeout_ms }
    }
}

impl TurnFields {
    /// Converts to a run input; `field` prefixes error fields (`batch[3].`).
    pub fn into_input(self, field: &str, defaults: &TurnFields, options: RunOptions) -> Result<RunInput> {
        let given = [self.prompt.is_some(), self.query.is_some(), self.input.is_some(), self.messages.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(Error::invalid(format!("{field}prompt"), "give only one of prompt, query, input or messages"));
        }
        let named = if self.prompt.is_some() {
            "prompt"
        } else if self.query.is_some() {
            "query"
        } else {
            "input"
        };
        let turn = match (self.prompt.or(self.query).or(self.input), self.messages) {
            (Some(text), _) if text.trim().is_empty() => {
                return Err(Error::invalid(format!("{field}{named}"), "must not be empty"));
            }
            (Some(text), _) => vec![ChatMessage::user(text)],
            (None, Some(messages)) => turn_of(&format!("{field}messages"), messages)?,
            (None, None) => Vec::new(),
        };
        let mut variables = defaults.variables.clone();
        variables.extend(self.variables);
        let mut parameters = defaults.parameters.clone();
        parameters.extend(self.parameters);
        let thread = match self.thread_id.or_else(|| defaults.thread_id.clone()) {
            Some(id) => Some(ThreadId::parse(&format!("{field}thread_id"), &id)?),
            None => None,
        };
        let end_user_id = self.user.or_else(|| defaults.user.clone());
        if end_user_id.as_ref().is_some_and(|u| u.is_empty() || u.len() > 256) {
            return Err(Error::invalid(format!("{field}user"), "must be 1-256 characters"));
        }
        let metadata = self.metadata.or_else(|| defaults.metadata.clone()).unwrap_or_else(|| json!({}));
        if !metadata.is_object() {
            return Err(Error::invalid(format!("{field}metadata"), "must be an object"));
        }
        let timeout_ms = self.timeout_ms.or(defaults.timeout_ms).unwrap_or(options.default_timeout_ms);
        let timeout_ms = i32::try_from(timeout_ms)
            .ok()
            .filter(|t| (1..=86_400_000).contains(t))
            .ok_or_else(|| Error::invalid(format!("{field}timeout_ms"), "must be between 1 and 86400000"))?;
        Ok(RunInput {
            variables,
            turn,
            parameters,
            thread,
            metadata,
            cancel_on_disconnect: options.cancel_on_disconnect,
            timeout_ms,
            webhook_url: None,
            end_user_id,
        })
    }
}

/// The new turn from `messages`. AI SDK UI messages (with `parts`) carry the whole chat, whose
/// history the thread already holds: only the last user message is the turn.
fn turn_of(field: &str, messages: Vec<InMessage>) -> Result<Vec<ChatMessage>> {
    if messages.is_empty() {
        return Err(Error::invalid(field, "must hold at least one message"));
    }
    if messages.iter().any(|m| m.parts.is_some()) {
        let (i, last) = messages
            .iter()
            .enumerate()
            .rev()
            .find(|(_, m)| m.role == "user")
            .ok_or_else(|| Error::invalid(field, "holds no user message"))?;
        let text: String = last
            .parts
            .iter()
            .flatten()
            .filter(|part| part["type"] == "text")
            .filter_map(|part| part["text"].as_str())
            .collect();
        if text.trim().is_empty() {
            return Err(Error::invalid(format!("{field}[{i}].parts"), "the last user message has no text part"));
        }
        return Ok(vec![ChatMessage::user(text)]);
    }
    messages.into_iter().enumerate().map(|(i, m)| message(&format!("{field}[{i}]"), m)).collect()
}

fn message(field: &str, m: InMessage) -> Result<ChatMessage> {
    let role = match m.role.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "system" => Role::System,
        _ => return Err(Error::invalid(format!("{field}.role"), "must be user, assistant or system")),
    };
    let content = m.content.ok_or_else(|| Error::missing(format!("{field}.content")))?;
    Ok(ChatMessage { role, ..ChatMessage::user(content) })
}

/// One run of a request, before its agent is resolved and its turn validated.
#[derive(Debug)]
pub struct Draft {
    pub agent: AgentRef,
    /// Prefix of this run's error fields (`batch[3].`).
    pub field: String,
    pub turn: TurnFields,
}

/// A request's runs and how their answer is delivered.
#[derive(Debug)]
pub struct Plan {
    pub drafts: Vec<Draft>,
    /// What batch items inherit.
    pub defaults: TurnFields,
    pub options: RunOptions,
    pub mode: Mode,
    /// How a streamed answer is written.
    pub framing: Framing,
    /// The checked `webhook` URL every run of the request posts its end to.
    pub webhook_url: Option<String>,
}

impl Plan {
    /// A plan of one run of `agent`.
    pub fn one(agent: AgentRef, turn: TurnFields, options: RunOptions, mode: Mode) -> Self {
        let draft = Draft { agent, field: String::new(), turn };
        Self {
            drafts: vec![draft],
            defaults: TurnFields::default(),
            options,
            mode,
            framing: Framing::UiMessageStream,
            webhook_url: None,
        }
    }

    /// Many runs of `agent` (seed 001's `{batch: [...]}` on an agent's route).
    pub fn batch(agent: &AgentRef, items: Vec<TurnFields>, defaults: TurnFields, options: RunOptions) -> Self {
        let drafts = items
            .into_iter()
            .enumerate()
            .map(|(i, turn)| Draft { agent: agent.clone(), field: format!("batch[{i}]."), turn })
            .collect();
        Self { drafts, defaults, options, mode: Mode::Batch, framing: Framing::UiMessageStream, webhook_url: None }
    }
}

/// `POST /v1/run`: one run (sync, streamed or async), or a batch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RunRequest {
    /// Agent id (`agt_…`) or slug; `agent` is accepted too.
    #[serde(alias = "agent")]
    pub agent_id: Option<String>,
    #[serde(flatten)]
    pub turn: TurnFields,
    /// Stream the answer as SSE. Omitted: `/v1/run` streams unless `Accept` asks for JSON only;
    /// `/api/v1/run` answers JSON unless `Accept` asks for `text/event-stream`.
    pub stream: Option<bool>,
    /// Return 202 with an operation at once.
    #[serde(default, rename = "async")]
    pub is_async: bool,
    /// Many runs: 202 with an operation; items inherit the top-level fields and may name their
    /// own agent.
    pub batch: Option<Vec<BatchItem>>,
    /// Cancel the run when a streaming client disconnects (default: the run goes on).
    #[serde(default)]
    pub cancel_on_disconnect: bool,
    /// Post the run's end here (every run of a batch), signed with the workspace's default
    /// secret (`POST /v1/webhooks/secret`).
    pub webhook: Option<String>,
    /// AI SDK chat transport: the chat's id, which names the thread.
    pub id: Option<String>,
    /// AI SDK chat transport: `submit-message` or `regenerate-message`.
    pub trigger: Option<String>,
    /// AI SDK chat transport: the message to regenerate.
    #[serde(rename = "messageId")]
    pub message_id: Option<String>,
    /// Fields runq does not know, refused by name.
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: Map<String, Value>,
}

/// One item of `batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BatchItem {
    /// This item's agent (id or slug; `agent` is accepted too); default: the request's.
    #[serde(alias = "agent")]
    pub agent_id: Option<String>,
    #[serde(flatten)]
    pub turn: TurnFields,
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: Map<String, Value>,
}

/// Which run route a request came in on: they differ in what an omitted `stream` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunRoute {
    /// `POST /v1/run` (reference `004_…`): streams by default.
    Stream,
    /// `POST /api/v1/run` (reference `000_…`): answers JSON by default.
    Json,
}

fn refuse_unknown(field: &str, unknown: &Map<String, Value>) -> Result<()> {
    match unknown.keys().next() {
        Some(name) => Err(Error::invalid(format!("{field}{name}"), "unknown field")),
        None => Ok(()),
    }
}

fn agent_ref(field: &str, raw: Option<&str>) -> Result<AgentRef> {
    Ok(AgentRef::parse(raw.ok_or_else(|| Error::missing(field))?)?)
}

impl RunRequest {
    /// Reads the request's shape: its runs' agents and the delivery mode. Turns are validated
    /// later, once their agents are known to exist.
    pub fn plan(self, headers: &HeaderMap, route: RunRoute, limits: &Limits) -> Result<Plan> {
        refuse_unknown("", &self.unknown)?;
        let options = RunOptions::new(limits, self.cancel_on_disconnect);
        let mut turn = self.turn;
        if turn.thread_id.is_none() && self.id.is_some() {
            // the AI SDK chat transport names its chat `id`: that chat is this thread
            turn.thread_id = self.id;
        }
        let Some(batch) = self.batch else {
            let agent = agent_ref("agent_id", self.agent_id.as_deref())?;
            let mode = if self.is_async { Mode::Async } else { delivery(self.stream, headers, route) };
            return Ok(Plan::one(agent, turn, options, mode));
        };
        if batch.is_empty() {
            return Err(Error::invalid("batch", "must hold at least one item"));
        }
        if batch.len() > limits.max_batch {
            return Err(Error::invalid("batch", format!("at most {} items", limits.max_batch)));
        }
        let drafts = batch
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let field = format!("batch[{i}].");
                refuse_unknown(&field, &item.unknown)?;
                let agent = item.agent_id.as_deref().or(self.agent_id.as_deref());
                let agent = agent_ref(&format!("{field}agent_id"), agent)?;
                Ok(Draft { agent, field, turn: item.turn })
            })
            .collect::<Result<_>>()?;
        Ok(Plan {
            drafts,
            defaults: turn,
            options,
            mode: Mode::Batch,
            framing: Framing::UiMessageStream,
            webhook_url: None,
        })
    }
}

/// Sync or stream: an explicit `stream` wins, else the route's default, which `Accept` overrides.
fn delivery(stream: Option<bool>, headers: &HeaderMap, route: RunRoute) -> Mode {
    let streams = match (stream, route) {
        (Some(stream), _) => stream,
        (None, RunRoute::Stream) => !accepts_json_only(headers),
        (None, RunRoute::Json) => wants_stream(headers),
    };
    if streams { Mode::Stream } else { Mode::Sync }
}

fn accept(headers: &HeaderMap) -> &str {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Whether the caller asked for SSE through its `Accept` header.
pub fn wants_stream(headers: &HeaderMap) -> bool {
    accept(headers).contains("text/event-stream")
}

/// Whether `Accept` names JSON and not SSE.
pub fn accepts_json_only(headers: &HeaderMap) -> bool {
    accept(headers).contains("application/json") && !wants_stream(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, value.parse().unwrap());
        h
    }

    #[test]
    fn an_omitted_stream_streams_on_v1_run_unless_accept_asks_for_json_only() {
        assert_eq!(delivery(None, &HeaderMap::new(), RunRoute::Stream), Mode::Stream);
        assert_eq!(delivery(None, &accept("*/*"), RunRoute::Stream), Mode::Stream);
        assert_eq!(delivery(None, &accept("application/json"), RunRoute::Stream), Mode::Sync);
        assert_eq!(delivery(None, &accept("application/json, text/event-stream"), RunRoute::Stream), Mode::Stream);
        assert_eq!(delivery(None, &HeaderMap::new(), RunRoute::Json), Mode::Sync);
        assert_eq!(delivery(None, &accept("text/event-stream"), RunRoute::Json), Mode::Stream);
        assert_eq!(delivery(Some(false), &accept("text/event-stream"), RunRoute::Stream), Mode::Sync);
        assert_eq!(delivery(Some(true), &accept("application/json"), RunRoute::Json), Mode::Stream);
    }

    #[test]
    fn ui_messages_turn_into_the_last_user_message() {
        let messages: Vec<InMessage> = serde_json::from_value(json!([
            {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "first"}]},
            {"id": "m2", "role": "assistant", "parts": [{"type": "step-start"}, {"type": "text", "text": "Echo"}]},
            {"id": "m3", "role": "user", "parts": [{"type": "text", "text": "second "}, {"type": "text", "text": "turn"}]},
        ]))
        .unwrap();
        assert_eq!(turn_of("messages", messages).unwrap(), vec![ChatMessage::user("second turn")]);
    }

    #[test]
    fn unknown_fields_are_named() {
        let body: RunRequest =
            serde_json::from_value(json!({"agent_id": "a", "promt": "typo", "threadId": "t"})).unwrap();
        assert_eq!(body.turn.thread_id.as_deref(), Some("t"));
        let limits = Limits { sync_timeout: std::time::Duration::from_secs(1), max_batch: 10, run_timeout_ms: 1000 };
        match body.plan(&HeaderMap::new(), RunRoute::Stream, &limits) {
            Err(Error::Invalid { field, reason }) => {
                assert_eq!((field.as_str(), reason.as_str()), ("promt", "unknown field"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
