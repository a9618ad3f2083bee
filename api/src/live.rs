//! Live events: one Redis pub/sub connection per API process, fanned out to every SSE client
//! and sync waiter of this process, and the SSE pump that merges replay and live delivery.
//!
//! A client's stream is "replay from the log, then live": it subscribes first, replays what the
//! log holds after its `Last-Event-ID`, then forwards live events whose `seq` it has not sent
//! yet. A gap, a lagging receiver or a reconnect to Redis triggers another replay, so every event
//! arrives exactly once and in order. The stream of a run just submitted skips the first replay:
//! it subscribed before the run's job was pushed, so the log holds nothing it will not receive.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use runq_shared::db::{runs, sessions};
use runq_shared::events::{self, Event, RunKeys};
use runq_shared::id::{RunId, WorkspaceId};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::error::Result;
use crate::state::AppState;

/// Live batches buffered per run channel before a slow receiver lags (and replays instead). A
/// short answer arrives in about four.
const CHANNEL_CAPACITY: usize = 8;
/// Silence after which a stream re-reads the log, in case a notification was lost.
const IDLE_RESYNC: Duration = Duration::from_secs(15);

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Live {
    /// A batch of the run's events, in order and never empty: one message of the worker's.
    Batch(Arc<[Event]>),
    /// The pub/sub connection was re-established: messages may have been missed.
    Resync,
}

enum Command {
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

struct Channel {
    tx: broadcast::Sender<Live>,
    subscribers: usize,
}

/// The process-wide pub/sub fan-out.
pub struct Hub {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Hub {
    /// Starts the connection task; it reconnects by itself when Redis goes away.
    pub fn start(client: redis::Client) -> Arc<Self> {
        let channels = Arc::new(Mutex::new(HashMap::new()));
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client, channels.clone(), rx));
        Arc::new(Self { channels, commands })
    }

    /// Subscribes to `channel`; returns once Redis confirmed the subscription (or after a short
    /// wait while Redis is unreachable: replay covers what is missed meanwhile).
    pub async fn subscribe(self: &Arc<Self>, channel: String) -> Subscription {
        let (rx, first) = {
            let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            match channels.entry(channel.clone()) {
                Entry::Occupied(mut entry) => {
                    entry.get_mut().subscribers += 1;
                    (entry.get().tx.subscribe(), false)
                }
                Entry::Vacant(entry) => {
                    let (tx, rx) = broadcast::channel(CHANNEL_CAPACITY);
                    entry.insert(Channel { tx, subscribers: 1 });
                    (rx, true)
                }
            }
        };
        let mut confirmed = false;
        if first {
            let (done, confirmation) = oneshot::channel();
            if self.commands.send(Command::Subscribe(channel.clone(), done)).is_ok() {
                confirmed = matches!(tokio::time::timeout(Duration::from_secs(2), confirmation).await, Ok(Ok(())));
            }
        }
        Subscription { rx, hub: self.clone(), channel, confirmed }
    }

    fn release(&self, channel: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = channels.get_mut(channel) {
            entry.subscribers -= 1;
            if entry.subscribers == 0 {
                channels.remove(channel);
                let _ = self.commands.send(Command::Unsubscribe(channel.to_owned()));
            }
        }
    }
}

/// A live feed of one channel; unsubscribes when the last one is dropped.
pub struct Subscription {
    rx: broadcast::Receiver<Live>,
    hub: Arc<Hub>,
    channel: String,
    /// Redis confirmed the subscription before it was handed out: every message published since
    /// reaches it (unless it lags, or the connection drops: then it gets [`Live::Resync`]).
    confirmed: bool,
}

impl Subscription {
    /// The next live message; a lagging receiver gets [`Live::Resync`].
    pub async fn recv(&mut self) -> Live {
        match self.rx.recv().await {
            Ok(live) => live,
            Err(broadcast::error::RecvError::Lagged(_)) => Live::Resync,
            // the sender lives as long as this subscription holds the channel
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.release(&self.channel);
    }
}

/// The connection task. Commands are handled in order by this one task, so a subscribe and an
/// unsubscribe of the same channel can never overtake each other.
async fn run(
    client: redis::Client,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let (mut sink, mut stream) = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub.split(),
            Err(e) => {
                tracing::warn!(error = %e, "pub/sub connection failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let wanted: Vec<String> = lock(&channels).keys().cloned().collect();
        if !wanted.is_empty() {
            if let Err(e) = sink.subscribe(&wanted).await {
                tracing::warn!(error = %e, "re-subscribing failed");
                continue;
            }
            for channel in lock(&channels).values() {
                let _ = channel.tx.send(Live::Resync);
            }
        }
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("pub/sub connection lost; reconnecting");
                        break;
                    };
                    let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else { continue };
                    let batch: Arc<[Event]> = events::decode_batch(payload).collect();
                    if let Some(channel) = lock(&channels).get(message.get_channel_name())
                        && !batch.is_empty()
                    {
                        let _ = channel.tx.send(Live::Batch(batch));
                    }
                }
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe(channel, done)) => {
                        if lock(&channels).contains_key(&channel) && sink.subscribe(&channel).await.is_err() {
                            break;
                        }
                        let _ = done.send(());
                    }
                    Some(Command::Unsubscribe(channel)) => {
                        if !lock(&channels).contains_key(&channel) && sink.unsubscribe(&channel).await.is_err() {
                            break;
                        }
                    }
                },
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything a stream of one run needs.
pub struct RunStream {
    pub state: AppState,
    pub workspace: WorkspaceId,
    pub run: RunId,
    pub keys: RunKeys,
    pub subscription: Subscription,
    /// Last `seq` the client has.
    pub after: u64,
    /// The run's job was pushed after `subscription` was made: the log holds nothing yet that
    /// the subscription will not deliver, so the stream starts live (when Redis confirmed the
    /// subscription) without reading it.
    pub fresh: bool,
    /// Cancel the run when the client goes away.
    pub cancel_on_disconnect: bool,
    pub framing: Framing,
}

/// How a run's events are written on the wire.
#[derive(Debug, Clone)]
pub enum Framing {
    /// The AI SDK UI message stream: `id:` + `data:` part, then `data: [DONE]`.
    UiMessageStream,
    /// Reference `002_…`'s session events: named `event:`s with small payloads, same `id:`s.
    Session(SessionFraming),
    /// OpenAI `chat.completion.chunk`s: unnamed `data:` events, no `id:` lines, no pings (the
    /// official clients choke on them), then `data: [DONE]`.
    ChatCompletion(ChatFraming),
}

/// What the chat completion framing needs to write chunks.
#[derive(Debug, Clone)]
pub struct ChatFraming {
    model: String,
    created: i64,
    include_usage: bool,
    /// `chatcmpl-<run>`, from the `start` part.
    id: String,
    usage: Value,
}

impl ChatFraming {
    pub fn new(model: String, include_usage: bool) -> Self {
        let created = chrono::Utc::now().timestamp();
        Self { model, created, include_usage, id: String::new(), usage: Value::Null }
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "system_fingerprint": null, "choices": choices,
        })
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> SseEvent {
        let chunk = self.chunk(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]));
        SseEvent::default().data(chunk.to_string())
    }

    fn frame(&mut self, part: &Value) -> Option<SseEvent> {
        Some(match part["type"].as_str()? {
            "start" => {
                let run = part["messageMetadata"]["runId"].as_str().unwrap_or_default();
                self.id = format!("chatcmpl-{}", run.trim_start_matches("run_"));
                self.delta(json!({"role": "assistant", "content": ""}), None)
            }
            "text-delta" => self.delta(json!({"content": part["delta"]}), None),
            "finish" => {
                self.usage = part["messageMetadata"]["usage"].clone();
                self.delta(json!({}), Some("stop"))
            }
            "error" | "abort" => {
                let message = part["errorText"].as_str().unwrap_or("the run was cancelled");
                let error = json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}});
                SseEvent::default().data(error.to_string())
            }
            _ => return None,
        })
    }

    /// The usage chunk OpenAI sends last when `stream_options.include_usage` is set.
    fn usage_chunk(&self) -> Option<SseEvent> {
        let (input, output) = (self.usage["input_tokens"].as_u64()?, self.usage["output_tokens"].as_u64()?);
        let mut chunk = self.chunk(json!([]));
        chunk["usage"] = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
        self.include_usage.then(|| SseEvent::default().data(chunk.to_string()))
    }
}

/// What the session framing remembers between events of one run.
#[derive(Debug, Clone)]
pub struct SessionFraming {
    session: String,
    run: RunId,
    /// The answer's message id (from the `start` part).
    message: Option<String>,
    step: u32,
    /// Whether the current step called tools: only a step without calls ends in the message.
    step_called_tools: bool,
}

impl Framing {
    /// The frames of one event: at most one, since every frame carries the event's `seq`.
    fn frame(&mut self, event: &Event) -> Option<SseEvent> {
        if let Self::UiMessageStream = self {
            return Some(SseEvent::default().id(event.seq.to_string()).data(&event.data));
        }
        let part: Value = serde_json::from_str(&event.data).ok()?;
        match self {
            Self::Session(session) => {
                let (name, data) = session.name(&part)?;
                Some(SseEvent::default().id(event.seq.to_string()).event(name).data(data.to_string()))
            }
            Self::ChatCompletion(chat) => chat.frame(&part),
            Self::UiMessageStream => None,
        }
    }

    /// What follows the terminal event.
    fn done(&self) -> Vec<SseEvent> {
        let done = || SseEvent::default().data("[DONE]");
        match self {
            Self::UiMessageStream => vec![done()],
            Self::Session(_) => Vec::new(),
            Self::ChatCompletion(chat) => chat.usage_chunk().into_iter().chain([done()]).collect(),
        }
    }

    /// Whether the stream carries `: ping` comments while idle.
    fn pings(&self) -> bool {
        !matches!(self, Self::ChatCompletion(_))
    }
}

impl SessionFraming {
    fn name(&mut self, part: &Value) -> Option<(&'static str, Value)> {
        let (session, run) = (&self.session, self.run);
        Some(match part["type"].as_str()? {
            "start" => {
                self.message = part["messageId"].as_str().map(str::to_owned);
                ("session.started", json!({"session_id": session, "run_id": run}))
            }
            "start-step" => {
                self.step += 1;
                self.step_called_tools = false;
                ("step.started", json!({"step_id": format!("{run}_{}", self.step)}))
            }
            "text-delta" => ("message.delta", json!({"delta": part["delta"]})),
            "tool-input-available" => {
                self.step_called_tools = true;
                let call =
                    json!({"tool_call_id": part["toolCallId"], "tool_name": part["toolName"], "input": part["input"]});
                ("tool.started", call)
            }
            "tool-output-available" => {
                ("tool.completed", json!({"tool_call_id": part["toolCallId"], "output": part["output"]}))
            }
            "finish-step" if !self.step_called_tools => {
                ("message.created", json!({"message_id": self.message, "session_id": session}))
            }
            "finish" if part["messageMetadata"]["status"] == "completed" => {
                let usage = &part["messageMetadata"]["usage"];
                ("session.completed", json!({"session_id": session, "run_id": run, "usage": usage}))
            }
            "finish" | "abort" => {
                let status = part["messageMetadata"]["status"].as_str().unwrap_or("cancelled");
                ("session.failed", json!({"session_id": session, "run_id": run, "status": status}))
            }
            "error" => ("session.failed", json!({"session_id": session, "run_id": run, "error": part["errorText"]})),
            _ => return None,
        })
    }
}

/// The SSE response for a run: replay, then live, then `[DONE]`; `: ping` every 15 s.
pub fn sse(stream: RunStream) -> Response {
    let pings = stream.framing.pings();
    respond(pings, std::future::ready(Ok(Some(stream))))
}

/// A session's events (reference `002_…`): the run `run`, else the session's latest, else the
/// next one to start (looked for every [`SESSION_POLL`] while the client waits).
pub fn session_sse(
    state: AppState,
    workspace: WorkspaceId,
    session: String,
    run: Option<RunId>,
    after: u64,
) -> Response {
    respond(true, async move {
        let run = match run {
            Some(run) => run,
            None => loop {
                if let Some(run) = sessions::latest_run(&state.db, workspace, &session).await? {
                    break run;
                }
                tokio::select! {
                    _ = tokio::time::sleep(SESSION_POLL) => {}
                    _ = state.shutdown.cancelled() => return Ok(None),
                }
            },
        };
        let keys = RunKeys::new(state.broker.prefix(), run);
        let subscription = state.hub.subscribe(keys.channel.clone()).await;
        let framing =
            Framing::Session(SessionFraming { session, run, message: None, step: 0, step_called_tools: false });
        Ok(Some(RunStream {
            state,
            workspace,
            run,
            keys,
            subscription,
            after,
            fresh: false,
            cancel_on_disconnect: false,
            framing,
        }))
    })
}

/// How often a session's event stream looks for its first run.
const SESSION_POLL: Duration = Duration::from_millis(200);

/// Streams the frames of the run `source` finds (none if it finds none), with keep-alive pings
/// if asked; a failure ends the stream with an error event.
///
/// The stream is the response body itself, polled by the connection's task: no task and no
/// channel of its own per open stream. `source` is boxed: it is done with before the first frame.
fn respond<F>(pings: bool, source: F) -> Response
where
    F: Future<Output = anyhow::Result<Option<RunStream>>> + Send + 'static,
{
    let frames = async_stream::stream! {
        // the stream is open until it ends: the run ended, the client left, or shutdown
        let _open = runq_shared::metrics::GaugeGuard::new(runq_shared::metrics::SSE_STREAMS_OPEN);
        let mut pump = match Box::pin(source).await {
            Ok(Some(stream)) => {
                let caught_up = stream.fresh && stream.subscription.confirmed;
                Pump { last: stream.after, stream, caught_up, over: false }
            }
            Ok(None) => return,
            Err(e) => {
                yield Ok::<_, Infallible>(interrupted(&e));
                return;
            }
        };
        loop {
            match pump.next().await {
                Ok(Some(frames)) => {
                    for frame in frames {
                        yield Ok(frame);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    yield Ok(interrupted(&e));
                    break;
                }
            }
        }
    };
    let sse = Sse::new(frames);
    if pings {
        sse.keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("ping")).into_response()
    } else {
        sse.into_response()
    }
}

/// The event that ends a stream cut short by a failure (Postgres or Redis).
fn interrupted(error: &anyhow::Error) -> SseEvent {
    tracing::warn!(error = %error, "event stream ended early");
    SseEvent::default().data(r#"{"type":"error","errorText":"stream interrupted; reconnect with Last-Event-ID"}"#)
}

/// Frames the events after `last` into `out`; returns `true` once the terminal event and `[DONE]`
/// are among them. A client that already has the terminal event (it resumed at or past the end)
/// gets `[DONE]` alone, unless that event only paused the run for a person: then it waits for
/// the rest.
fn deliver(
    framing: &mut Framing,
    last: &mut u64,
    events: impl IntoIterator<Item = Event>,
    out: &mut Vec<SseEvent>,
) -> bool {
    for event in events {
        let terminal = event.is_terminal() && (event.seq > *last || !event.is_pause());
        if event.seq > *last {
            *last = event.seq;
            out.extend(framing.frame(&event));
        }
        if terminal {
            out.extend(framing.done());
            return true;
        }
    }
    false
}

/// The run's events after `after`: from the Redis log, or from Postgres once Redis has forgotten
/// a finished run (then the whole stored log: callers skip what they have).
pub async fn logged(state: &AppState, workspace: WorkspaceId, run: RunId, after: u64) -> Result<Vec<Event>> {
    let keys = RunKeys::new(state.broker.prefix(), run);
    let replayed = events::replay(&mut state.broker.conn.clone(), &keys, after).await?;
    if !replayed.is_empty() {
        return Ok(replayed);
    }
    Ok(runs::stored_events(&state.db, workspace, run).await?.unwrap_or_default())
}

/// A stream being served: its run, and how far its client got.
struct Pump {
    stream: RunStream,
    /// Last `seq` sent.
    last: u64,
    /// The log was read once (the first frames replay it), or need not be (a fresh run).
    caught_up: bool,
    /// Nothing follows: the terminal event went out, the process is stopping, or a read failed.
    over: bool,
}

impl Pump {
    /// The next frames; `None` once the stream is over.
    async fn next(&mut self) -> anyhow::Result<Option<Vec<SseEvent>>> {
        let next = self.advance().await;
        if next.is_err() {
            self.over = true;
        }
        next
    }

    /// Reads of the log are boxed: the state the stream waits in, which is most of its life,
    /// does not reserve their room.
    async fn advance(&mut self) -> anyhow::Result<Option<Vec<SseEvent>>> {
        let mut frames = Vec::new();
        while !self.over && frames.is_empty() {
            let events = if self.caught_up {
                let live = tokio::select! {
                    live = self.stream.subscription.recv() => Some(live),
                    _ = tokio::time::sleep(IDLE_RESYNC) => None,
                    _ = self.stream.state.shutdown.cancelled() => {
                        self.over = true;
                        break;
                    }
                };
                match live {
                    Some(Live::Batch(batch))
                        if batch[0].seq <= self.last + 1 && batch[batch.len() - 1].seq > self.last =>
                    {
                        let fresh = batch.partition_point(|e| e.seq <= self.last);
                        batch[fresh..].to_vec()
                    }
                    Some(Live::Batch(batch)) if batch[batch.len() - 1].seq <= self.last => continue,
                    // a gap, a lag, a reconnect or a long silence: read the log
                    _ => self.read_log().await?,
                }
            } else {
                self.caught_up = true;
                self.read_log().await?
            };
            self.over = deliver(&mut self.stream.framing, &mut self.last, events, &mut frames);
        }
        Ok((!frames.is_empty()).then_some(frames))
    }

    async fn read_log(&self) -> Result<Vec<Event>> {
        let stream = &self.stream;
        Box::pin(logged(&stream.state, stream.workspace, stream.run, self.last)).await
    }
}

impl Drop for Pump {
    /// A client gone before the end (the body is dropped with its connection) cancels the run,
    /// if it asked for that.
    fn drop(&mut self) {
        let stream = &self.stream;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.over || !stream.cancel_on_disconnect || stream.state.shutdown.is_cancelled() {
            return;
        }
        let (state, workspace, run) = (stream.state.clone(), stream.workspace, stream.run);
        runtime.spawn(async move {
            if let Err(e) = runq_shared::cancel::request(&state.db, &state.broker, workspace, run).await {
                tracing::warn!(error = %e, %run, "cancelling the run of a client that went away failed");
            }
        });
    }
}

/// Waits for the run's terminal event (a sync caller); `false` when `timeout` ran out first.
/// Postgres is asked too, for when a notification may have been missed.
pub async fn wait_terminal(
    subscription: &mut Subscription,
    timeout: Duration,
    db: &PgPool,
    workspace: WorkspaceId,
    run: RunId,
) -> bool {
    let finished = || async move { runs::get(db, workspace, run).await.is_ok_and(|r| r.is_terminal()) };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            live = subscription.recv() => match live {
                Live::Batch(batch) if batch.iter().any(Event::is_terminal) => return true,
                Live::Batch(_) => {}
                Live::Resync => if finished().await { return true },
            },
            _ = tokio::time::sleep(IDLE_RESYNC) => if finished().await { return true },
            _ = tokio::time::sleep_until(deadline) => return finished().await,
        }
    }
}
