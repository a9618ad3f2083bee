//! Live events: one Redis pub/sub connection per API process, fanned out to every SSE client
//! and sync waiter of this process, and the SSE pump that merges replay and live delivery.
//!
//! A client's stream is always "replay from the log, then live": it subscribes first, replays
//! what the log holds after its `Last-Event-ID`, then forwards live events whose `seq` it has not
//! sent yet. A gap, a lagging receiver or a reconnect to Redis triggers another replay, so every
//! event arrives exactly once and in order.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use runq_shared::db::runs;
use runq_shared::events::{self, Event, RunKeys};
use runq_shared::id::{RunId, WorkspaceId};
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::state::AppState;

/// Live events buffered per run channel before a slow receiver lags (and replays instead).
const CHANNEL_CAPACITY: usize = 16;
/// Silence after which a stream re-reads the log, in case a notification was lost.
const IDLE_RESYNC: Duration = Duration::from_secs(15);

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Live {
    Event(Arc<Event>),
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
        if first {
            let (done, confirmed) = oneshot::channel();
            if self.commands.send(Command::Subscribe(channel.clone(), done)).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), confirmed).await;
            }
        }
        Subscription { rx, hub: self.clone(), channel }
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
                    let Some(event) = Event::from_message(payload) else { continue };
                    if let Some(channel) = lock(&channels).get(message.get_channel_name()) {
                        let _ = channel.tx.send(Live::Event(Arc::new(event)));
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
    /// Cancel the run when the client goes away.
    pub cancel_on_disconnect: bool,
}

/// The SSE response for a run: replay, then live, then `[DONE]`; `: ping` every 15 s.
pub fn sse(stream: RunStream) -> Response {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        // the pump ends when the stream does: the run ended, the client left, or shutdown
        let _open = runq_shared::metrics::GaugeGuard::new(runq_shared::metrics::SSE_STREAMS_OPEN);
        if let Err(e) = pump(stream, &tx).await {
            tracing::warn!(error = %e, "event stream ended early");
            let _ = tx
                .send(Ok(SseEvent::default()
                    .data(r#"{"type":"error","errorText":"stream interrupted; reconnect with Last-Event-ID"}"#)))
                .await;
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("ping"))
        .into_response()
}

type Tx = mpsc::Sender<Result<SseEvent, Infallible>>;

/// Sends the events after `last`; returns `true` once the terminal event and `[DONE]` went out.
/// `Err` means the client went away.
async fn deliver(tx: &Tx, last: &mut u64, events: impl IntoIterator<Item = Event>) -> Result<bool, ()> {
    for event in events {
        if event.seq <= *last {
            continue;
        }
        *last = event.seq;
        let terminal = event.is_terminal();
        tx.send(Ok(SseEvent::default().id(event.seq.to_string()).data(event.data))).await.map_err(|_| ())?;
        if terminal {
            tx.send(Ok(SseEvent::default().data("[DONE]"))).await.map_err(|_| ())?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Catches up from the Redis log, or from Postgres once Redis has forgotten a finished run.
async fn catch_up(stream: &mut RunStream, tx: &Tx, last: &mut u64) -> anyhow::Result<Option<bool>> {
    let replayed = events::replay(&mut stream.state.broker.conn.clone(), &stream.keys, *last).await?;
    if !replayed.is_empty() {
        return Ok(deliver(tx, last, replayed).await.ok());
    }
    if let Some(stored) = runs::stored_events(&stream.state.db, stream.workspace, stream.run).await? {
        let stored: Vec<Event> = serde_json::from_value(stored)?;
        return Ok(deliver(tx, last, stored).await.ok());
    }
    Ok(Some(false))
}

async fn pump(mut stream: RunStream, tx: &Tx) -> anyhow::Result<()> {
    let mut last = stream.after;
    if catch_up(&mut stream, tx, &mut last).await? != Some(false) {
        return Ok(());
    }
    loop {
        let live = tokio::select! {
            live = stream.subscription.recv() => Some(live),
            _ = tokio::time::sleep(IDLE_RESYNC) => None,
            _ = stream.state.shutdown.cancelled() => return Ok(()),
            _ = tx.closed() => {
                if stream.cancel_on_disconnect {
                    let state = &stream.state;
                    runq_shared::cancel::request(&state.db, &state.broker, stream.workspace, stream.run).await?;
                }
                return Ok(());
            }
        };
        let outcome = match live {
            Some(Live::Event(event)) if event.seq == last + 1 => deliver(tx, &mut last, [(*event).clone()]).await.ok(),
            Some(Live::Event(event)) if event.seq <= last => Some(false),
            // a gap, a lag, a reconnect or a long silence: read the log
            _ => catch_up(&mut stream, tx, &mut last).await?,
        };
        if outcome != Some(false) {
            return Ok(());
        }
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
                Live::Event(event) if event.is_terminal() => return true,
                Live::Event(_) => {}
                Live::Resync => if finished().await { return true },
            },
            _ = tokio::time::sleep(IDLE_RESYNC) => if finished().await { return true },
            _ = tokio::time::sleep_until(deadline) => return finished().await,
        }
    }
}
