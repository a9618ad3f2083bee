//! Stopping runs from outside: a client's cancel (signalled on the control channel, or found at
//! lease renewal when a signal was missed) and the worker's own shutdown (hand-back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use runq_shared::events;
use runq_shared::id::RunId;
use tokio_util::sync::CancellationToken;

/// Why a run is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The client asked: the run ends `cancelled`.
    Cancel,
    /// The worker is shutting down: the run goes back to the queue for another worker.
    HandBack,
}

/// The stop switch of one executing run.
#[derive(Debug, Default)]
pub struct Control {
    token: CancellationToken,
    reason: OnceLock<Stop>,
}

impl Control {
    pub fn stop(&self, why: Stop) {
        let _ = self.reason.set(why);
        self.token.cancel();
    }

    /// Resolves once the run must stop, with the first reason given.
    pub async fn stopped(&self) -> Stop {
        self.token.cancelled().await;
        self.reason.get().copied().unwrap_or(Stop::Cancel)
    }
}

/// The runs this worker is executing.
#[derive(Debug, Default)]
pub struct Registry {
    runs: Mutex<HashMap<RunId, Arc<Control>>>,
}

impl Registry {
    /// Registers a run; it is removed when the returned guard drops.
    pub fn enter(self: &Arc<Self>, run: RunId) -> Entry {
        let control = Arc::new(Control::default());
        self.lock().insert(run, control.clone());
        Entry { registry: self.clone(), run, control }
    }

    pub fn stop(&self, run: RunId, why: Stop) {
        if let Some(control) = self.lock().get(&run) {
            control.stop(why);
        }
    }

    /// The runs executing now.
    pub fn ids(&self) -> Vec<RunId> {
        self.lock().keys().copied().collect()
    }

    pub fn stop_all(&self, why: Stop) {
        for control in self.lock().values() {
            control.stop(why);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Arc<Control>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Entry {
    registry: Arc<Registry>,
    run: RunId,
    pub control: Arc<Control>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.run);
    }
}

/// Listens for `cancel <run id>` on the control channel, reconnecting as needed.
pub async fn listen(client: redis::Client, prefix: String, registry: Arc<Registry>, shutdown: CancellationToken) {
    let channel = events::control_channel(&prefix);
    loop {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let payload = String::from_utf8_lossy(message.get_payload_bytes());
                if let Some(run) = payload.strip_prefix("cancel ").and_then(|id| id.parse().ok()) {
                    registry.stop(run, Stop::Cancel);
                }
            }
            Ok::<_, redis::RedisError>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = connected => if let Err(e) = result {
                tracing::warn!(error = %e, "control channel lost; reconnecting");
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
