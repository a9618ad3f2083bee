//! The state every handler shares.

use std::sync::Arc;
use std::time::Duration;

use runq_shared::broker::Broker;
use runq_shared::config::OutboundConfig;
use runq_shared::crypto::MasterKey;
use runq_shared::ratelimit::Limiter;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthCache;
use crate::live::Hub;
use crate::observe::Metrics;
use crate::targets::TargetCache;

/// The state every handler shares, behind one `Arc`: axum clones it for every request, and every
/// open event stream keeps a clone (the fields are many, and some own strings).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub db: PgPool,
    /// Writes concurrent admissions together (group commit).
    pub admissions: runq_shared::admission::Admissions,
    pub broker: Broker,
    pub master_key: MasterKey,
    pub auth: Arc<AuthCache>,
    /// Agents ready to take runs, by workspace and reference.
    pub targets: Arc<TargetCache>,
    /// Per-key request limits, counted in Redis.
    pub rate_limiter: Arc<Limiter>,
    pub hub: Arc<Hub>,
    pub limits: Limits,
    /// Cancelled when the process shuts down: open streams close so clients reconnect elsewhere.
    pub shutdown: CancellationToken,
    /// The Prometheus exposition behind `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Whether webhook URLs may point at private addresses.
    pub outbound: OutboundConfig,
}

/// Request limits from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a sync run is waited for before the caller gets 202 and an operation.
    pub sync_timeout: Duration,
    /// Most items in one batch.
    pub max_batch: usize,
    /// A run's time limit when the request sets none, in milliseconds.
    pub run_timeout_ms: u32,
}
