//! `runq-worker`: takes runs off the queue and executes them.
//!
//! A worker takes jobs round-robin across workspaces and blocks while none are queued (waking the
//! moment one is pushed), claims each
//! run in Postgres, streams the provider, runs tool steps, publishes every event, and records
//! the outcome. Beside the consumer it renews its leases, reconciles lost work, sends webhook
//! deliveries, and (when `RUNQ_WORKER_METRICS_BIND` is set) serves `GET /metrics`.
//!
//! # Layout
//! - [`config`] — settings (flags and environment).
//! - [`control`] — stopping runs: client cancels and shutdown hand-backs.
//! - [`execute`] — one run, from claim to recorded outcome.
//! - [`emit`] — event numbering and batched publishing.
//! - [`provider`] — streaming adapters for OpenAI-compatible and Anthropic APIs.
//! - [`outbound`] — the client for calls made on a user's behalf (tools, webhooks).
//! - [`tools`] — the built-in tools.
//! - [`reconcile`] — lease renewal and the reconciler.
//! - [`webhooks`] — sending webhook deliveries, with retries.
//! - [`observe`] — this worker's `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::ConnectionManager;
use runq_shared::broker::Broker;
use runq_shared::queue;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub mod config;
pub mod control;
pub mod emit;
pub mod execute;
pub mod observe;
pub mod outbound;
pub mod provider;
pub mod reconcile;
pub mod tools;
pub mod webhooks;

use crate::config::WorkerConfig;
use crate::execute::Ctx;

/// How long a run waits for a Postgres connection before its execution fails (and is handed
/// back): a busy pool under load is not an outage.
const DB_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most jobs taken in one pop.
const POP_BATCH: usize = 64;
/// How long one blocking wait lasts before looking at the shutdown token again, in seconds.
const WAIT_TIMEOUT_SECS: f64 = 1.0;

pub struct Worker {
    ctx: Arc<Ctx>,
    queue_conn: ConnectionManager,
    concurrency: usize,
    reconcile_interval: Duration,
    requeue_after: Duration,
    redis_client: redis::Client,
    shutdown_grace: Duration,
    webhooks: webhooks::Settings,
    metrics: Option<observe::Server>,
}

impl Worker {
    /// Connects and migrates (a worker may start before any API).
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        let db = runq_shared::db::pool(&config.store, DB_ACQUIRE_TIMEOUT).context("DATABASE_URL")?;
        let claims = runq_shared::db::relaxed_pool(&config.store, DB_ACQUIRE_TIMEOUT).context("DATABASE_URL")?;
        runq_shared::db::migrate(&db).await.context("applying migrations")?;
        let broker = Broker::connect(&config.store).context("REDIS_URL")?;
        let queue_conn = Broker::dedicated(&config.store).context("REDIS_URL")?;
        let http = reqwest::Client::builder()
            .read_timeout(Duration::from_millis(config.provider_idle_timeout_ms))
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(config.concurrency)
            .build()
            .context("building the HTTP client")?;
        let worker_id =
            config.worker_id.clone().unwrap_or_else(|| format!("worker-{}-{}", std::process::id(), &uuid_suffix()));
        Ok(Self {
            ctx: Arc::new(Ctx {
                db,
                claims,
                broker,
                master_key: config.store.master_key.expose().clone(),
                http,
                worker_id,
                lease: config.lease(),
                retry: execute::RetryPolicy {
                    max_retries: config.provider_max_retries,
                    base: Duration::from_millis(config.retry_base_ms),
                },
                registry: Arc::default(),
                webhooks_due: Arc::default(),
                approval_ttl: Duration::from_millis(config.approval_ttl_ms),
                allow_private_targets: config.outbound.allow_private_targets,
            }),
            redis_client: redis::Client::open(config.store.redis_url.expose().as_str()).context("REDIS_URL")?,
            shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
            queue_conn,
            webhooks: webhooks::Settings {
                schedule: runq_shared::webhooks::Schedule {
                    base: Duration::from_millis(config.webhook_retry_base_ms.max(1)),
                },
                allow_private_targets: config.outbound.allow_private_targets,
                poll: config.reconcile_interval().min(Duration::from_secs(1)),
            },
            metrics: match &config.metrics_bind {
                Some(bind) => Some(observe::Server::bind(bind).await.with_context(|| format!("binding {bind}"))?),
                None => None,
            },
            concurrency: config.concurrency.max(1),
            reconcile_interval: config.reconcile_interval(),
            requeue_after: config.requeue_after(),
        })
    }

    pub fn id(&self) -> &str {
        &self.ctx.worker_id
    }

    /// Where `GET /metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().and_then(|server| server.local_addr().ok())
    }

    /// Consumes jobs until `shutdown`, then waits for in-flight runs to finish.
    pub async fn run_until_stopped(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let background = CancellationToken::new();
        tokio::spawn(reconcile::keep_leases(self.ctx.clone(), background.clone()));
        tokio::spawn(reconcile::reconcile(
            self.ctx.clone(),
            self.reconcile_interval,
            self.requeue_after,
            background.clone(),
        ));
        tokio::spawn(control::listen(
            self.redis_client.clone(),
            self.ctx.broker.prefix().to_owned(),
            self.ctx.registry.clone(),
            background.clone(),
        ));
        tokio::spawn(webhooks::deliver(self.ctx.clone(), self.webhooks, background.clone()));
        if let Some(server) = self.metrics.take() {
            tokio::spawn(server.run(self.ctx.registry.clone(), self.concurrency, background.clone()));
        }

        let keys = self.ctx.broker.queue().clone();
        let mut conn = self.ctx.broker.conn.clone();
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut running = JoinSet::new();
        while !shutdown.is_cancelled() {
            // wait for a free slot before taking work, so jobs stay in Redis for other workers
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit?,
                _ = shutdown.cancelled() => break,
            };
            let room = (slots.available_permits() + 1).min(POP_BATCH);
            let jobs = match queue::pop(&mut conn, &keys, room).await {
                Ok(jobs) if jobs.is_empty() => {
                    // nothing queued: block until a workspace becomes ready, then pop again
                    if let Err(e) = queue::wait(&mut self.queue_conn, &keys, WAIT_TIMEOUT_SECS).await {
                        tracing::warn!(error = %e, "queue wait failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    continue;
                }
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "queue pop failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut permits =
                std::iter::once(first).chain(std::iter::from_fn(|| slots.clone().try_acquire_owned().ok()));
            for job in jobs {
                let permit = permits.next().expect("a slot was counted for every popped job");
                let ctx = self.ctx.clone();
                running.spawn(async move {
                    if let Err(e) = execute::handle(ctx, job).await {
                        tracing::error!(error = ?e, "run execution failed; the reconciler will retry it");
                    }
                    drop(permit);
                });
            }
            while running.try_join_next().is_some() {}
        }
        tracing::info!(in_flight = running.len(), "draining in-flight runs");
        let drain = async { while running.join_next().await.is_some() {} };
        if tokio::time::timeout(self.shutdown_grace, drain).await.is_err() {
            tracing::info!(in_flight = running.len(), "grace period over: handing runs to other workers");
            self.ctx.registry.stop_all(control::Stop::HandBack);
            while running.join_next().await.is_some() {}
        }
        background.cancel();
        Ok(())
    }
}

fn uuid_suffix() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 8..].to_owned()
}
