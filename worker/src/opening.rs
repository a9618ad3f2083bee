//! A new run's first provider request, sent while its claim is in flight.
//!
//! Claiming a run is a Postgres round trip, and nothing else could reach the provider before it
//! returned. The job of a lone run that starts its thread carries the run's rendered messages
//! ([`Opening`]); the rest of its first request (model, tool specs, parameters, provider) is its
//! version's, which this worker keeps for a few seconds from the last run of that version it
//! executed ([`Versions`]). With both, the worker sends the request at once, from a task of its
//! own, and claims the run meanwhile; the run's first call then awaits that task's answer, under
//! the run's deadline and cancel as any call.
//!
//! The answer is used only when the claim succeeds and the run's own first request (built from
//! the claim, as always) is the same: a version whose provider or tools changed since is noticed
//! there. Otherwise the connection is dropped and the provider sees a cancelled request. Nothing
//! is published before the claim succeeds, with or without an opening.

use std::sync::Arc;
use std::time::Duration;

use runq_shared::cache::TtlCache;
use runq_shared::id::{VersionId, WorkspaceId};
use runq_shared::metrics as m;
use runq_shared::queue::Opening;
use serde_json::{Map, Value};

use tokio_util::task::AbortOnDropHandle;

use crate::provider::{ChatMessage, ChatRequest, Provider, ProviderConfig, ProviderError, ProviderStream, ToolSpec};

/// What a version puts in each of its runs' provider requests.
#[derive(Debug, Clone)]
pub struct Setup {
    pub config: ProviderConfig,
    pub model: String,
    pub tools: Vec<ToolSpec>,
    /// The version's parameters (a run's own override them).
    pub parameters: Map<String, Value>,
}

impl Setup {
    /// The request a run of this version makes with `messages` and the run's `parameters`.
    pub fn request(&self, messages: Vec<ChatMessage>, parameters: &Map<String, Value>) -> ChatRequest {
        let mut merged = self.parameters.clone();
        merged.extend(parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
        ChatRequest { model: self.model.clone(), messages, tools: self.tools.clone(), parameters: merged }
    }
}

/// The setups of the versions this worker ran lately, by workspace and version.
pub struct Versions {
    setups: TtlCache<(WorkspaceId, VersionId), Arc<Setup>>,
}

impl Versions {
    /// Setups older than `ttl` are not used: a provider's key or a workspace's tools may have
    /// changed (a changed request is caught before its answer is used, but it was sent).
    pub fn new(ttl: Duration) -> Self {
        Self { setups: TtlCache::new(ttl) }
    }

    /// Keeps `setup` for `version`, unless a fresh one is kept already.
    pub fn remember(&self, workspace: WorkspaceId, version: VersionId, setup: impl FnOnce() -> Setup) {
        let key = (workspace, version);
        if self.setups.get(&key).is_none() {
            self.setups.insert(key, Arc::new(setup()));
        }
    }

    /// The first request of the run `opening` belongs to, if its version's setup is kept.
    pub fn request(&self, workspace: WorkspaceId, opening: Opening) -> Option<(ProviderConfig, ChatRequest)> {
        let setup = self.setups.get(&(workspace, opening.version))?;
        Some((setup.config.clone(), setup.request(opening.messages, &opening.parameters)))
    }
}

/// A first request on its way: sent by a task of its own, so it proceeds while the run is claimed
/// and started, and is dropped (the connection with it) if this is.
pub struct Opened {
    config: ProviderConfig,
    /// Shared with the task sending it, rather than copied for the comparison.
    request: Arc<ChatRequest>,
    answer: AbortOnDropHandle<Result<ProviderStream, ProviderError>>,
}

impl Opened {
    /// Sends `request` to the provider `config` names, over `client`.
    pub fn send(client: reqwest::Client, config: ProviderConfig, request: ChatRequest) -> Self {
        let provider = Provider::new(client, config.clone());
        let request = Arc::new(request);
        let sent = Arc::clone(&request);
        let answer = AbortOnDropHandle::new(tokio::spawn(async move { provider.stream(&sent).await }));
        Self { config, request, answer }
    }

    /// The answer, if `config` and `request` are what was sent (counted either way). It is
    /// awaited like any provider call: under the run's deadline and cancel.
    pub fn answer_to(
        self,
        config: &ProviderConfig,
        request: &ChatRequest,
    ) -> Option<impl Future<Output = Result<ProviderStream, ProviderError>> + use<>> {
        let same = self.config == *config && *self.request == *request;
        counted(if same { "used" } else { "changed" });
        same.then_some(async move {
            self.answer
                .await
                .unwrap_or_else(|e| Err(ProviderError::Transport(format!("the early request failed: {e}"))))
        })
    }
}

/// Counts an opening by what became of it.
pub fn counted(outcome: &'static str) {
    metrics::counter!(m::PROVIDER_OPENINGS_TOTAL, "outcome" => outcome).increment(1);
}
