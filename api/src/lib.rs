//! `runq-api`: the HTTP face of runq.
//!
//! Handlers extract, call into `runq_shared`, and map the result; they hold no domain rules. The
//! binary only parses settings and calls [`Application::build`] then
//! [`Application::run_until_stopped`]; tests drive the same path.
//!
//! # Layout
//! - [`config`] — settings (flags and environment).
//! - [`state`] — [`state::AppState`], the handles every handler shares.
//! - [`auth`] — key authentication with a short-lived cache.
//! - [`targets`] — agents ready to take runs, cached the same way.
//! - [`extract`] — JSON, query, path and caller extractors that reject in the error envelope.
//! - [`ratelimit`] — per-key rate limits: the check after authentication and the response headers.
//! - [`observe`] — request logs and HTTP metrics, and the `/metrics` exposition.
//! - [`outbound`] — checking a URL a client gives (webhook, tool) against the outbound address rules.
//! - [`live`] — the pub/sub fan-out and the SSE pump (replay, then live).
//! - [`request`] — run request bodies and their conversion into run inputs.
//! - [`submit`] — recording a run request and delivering its answer (stream, sync, operation).
//! - [`serve`] — the HTTP/1.1 server loop, with graceful shutdown.
//! - [`error`] — [`error::Error`], the one error type of this boundary, and the envelope.
//! - [`routes`] — one module per resource, each with its own `router()`; the OpenAPI document is
//!   generated from them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use runq_shared::broker::Broker;
use runq_shared::crypto::ApiKey;
use runq_shared::db;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod live;
pub mod observe;
pub mod outbound;
pub mod ratelimit;
pub mod request;
pub mod routes;
pub mod serve;
pub mod state;
pub mod submit;
pub mod targets;

use crate::config::ApiConfig;
use crate::state::AppState;

/// The workspace that holds `RUNQ_ADMIN_KEY`.
pub const ADMIN_WORKSPACE: &str = "default";

/// A bound, ready-to-serve API.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    streams: CancellationToken,
}

impl Application {
    /// Connects, migrates, bootstraps the admin key and binds the listener.
    pub async fn build(config: ApiConfig) -> anyhow::Result<Self> {
        let state = connect(&config).await?;
        if let Some(admin) = &config.admin_key {
            let key = ApiKey::parse(admin.expose()).context("RUNQ_ADMIN_KEY")?;
            db::workspaces::ensure_admin_key(&state.db, ADMIN_WORKSPACE, &key)
                .await
                .context("bootstrapping RUNQ_ADMIN_KEY")?;
        }
        let streams = state.shutdown.clone();
        let router = routes::router(state, config.max_body_bytes);
        let listener = TcpListener::bind(&config.bind).await.with_context(|| format!("binding {}", config.bind))?;
        Ok(Self { listener, router, streams })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then closes open event streams (their clients
    /// reconnect to another replica with `Last-Event-ID`) and drains the other requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let streams = self.streams;
        serve::serve(self.listener, self.router, async move {
            shutdown.cancelled().await;
            streams.cancel();
        })
        .await;
    }
}

async fn connect(config: &ApiConfig) -> anyhow::Result<AppState> {
    let db = db::pool(&config.store, config.store.dependency_timeout()).context("DATABASE_URL")?;
    db::migrate(&db).await.context("applying migrations")?;
    let broker = Broker::connect(&config.store).context("REDIS_URL")?;
    let hub = live::Hub::start(redis::Client::open(config.store.redis_url.expose().as_str()).context("REDIS_URL")?);
    // a quarter of the pool writes admissions; the rest serves reads and the other writes
    let writers = usize::try_from(config.store.db_max_connections / 4).unwrap_or(1).max(1);
    Ok(AppState::new(state::Shared {
        admissions: runq_shared::admission::admissions(db.clone(), writers),
        db,
        broker,
        master_key: config.store.master_key.expose().clone(),
        auth: Arc::new(auth::AuthCache::new(config.auth_cache_ttl(), config.plan_limits())),
        targets: Arc::new(targets::TargetCache::new(config.agent_cache_ttl())),
        rate_limiter: Arc::new(runq_shared::ratelimit::Limiter::new(config.rate_limit_window_secs)),
        hub,
        limits: state::Limits {
            sync_timeout: std::time::Duration::from_millis(config.sync_timeout_ms),
            max_batch: config.max_batch,
            run_timeout_ms: config.run_timeout_ms,
        },
        shutdown: CancellationToken::new(),
        metrics: Arc::new(observe::Metrics::install()),
        outbound: config.outbound,
    }))
}

/// `runq-api bootstrap`: creates a workspace (on the `free` plan) and mints its first management
/// key, returned once.
pub async fn bootstrap(config: &ApiConfig, workspace: &str) -> anyhow::Result<serde_json::Value> {
    let state = connect(config).await?;
    let name = runq_shared::domain::name("workspace", workspace)?;
    let ws = db::workspaces::create(&state.db, &name).await?;
    let scopes = [runq_shared::domain::Scope::Manage, runq_shared::domain::Scope::Run];
    let (record, key) = db::keys::create(&state.db, ws.id, "bootstrap", &scopes, None).await?;
    Ok(serde_json::json!({
        "workspace_id": ws.id,
        "workspace": ws.name,
        "key_id": record.id,
        "key": key.expose(),
        "scopes": record.scopes,
    }))
}
