//! `runq-worker`: takes runs off the queue and executes them.
//!
//! The worker is an apalis worker (concurrency limit, tracing and catch-panic layers, graceful
//! stop under a monitor) over runq's own queue ([`backend`]): it takes jobs round-robin across
//! workspaces and blocks while none are queued (waking the moment one is pushed). For each job it
//! claims the run in Postgres (claims and finishes made close together are written together),
//! streams the provider, runs tool steps, publishes every event, and records the outcome. Beside
//! the consumer it renews its leases, reconciles lost work, sends webhook deliveries, and (when
//! `RUNQ_WORKER_METRICS_BIND` is set) serves `GET /metrics`.
//!
//! # Layout
//! - [`backend`] — the Redis queue as the apalis backend the worker runs on.
//! - [`config`] — settings (flags and environment).
//! - [`control`] — stopping runs: client cancels and shutdown hand-backs.
//! - [`execute`] — one run, from claim to recorded outcome.
//! - [`opening`] — a new run's first provider request, sent while its claim is in flight.
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
use apalis::prelude::{BoxDynError, Data, Monitor, ParallelizeExt, WorkerBuilder, WorkerBuilderExt};
use redis::aio::ConnectionManager;
use runq_shared::broker::Broker;
use runq_shared::db::{self, Sessions, runs};
use runq_shared::group::GroupCommit;
use runq_shared::queue::Job;
use tokio_util::sync::CancellationToken;

pub mod backend;
pub mod config;
pub mod control;
pub mod emit;
pub mod execute;
pub mod observe;
pub mod opening;
pub mod outbound;
pub mod provider;
pub mod reconcile;
pub mod tools;
pub mod webhooks;

use crate::backend::RedisQueue;
use crate::config::WorkerConfig;
use crate::execute::Ctx;

/// How long a run waits for a Postgres connection before its execution fails (and is handed
/// back): a busy pool under load is not an outage.
const DB_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Claim and finish statements in flight at once (each writing every claim or finish that
/// arrived meanwhile).
const GROUP_WRITERS: usize = 2;
/// Most claims or finishes in one statement.
const GROUP_MAX: usize = 64;
/// How long a version's provider set-up is used for sending first requests before the claim.
const VERSION_TTL: Duration = Duration::from_secs(5);

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
        let sessions = Sessions { by_index: true, ..Sessions::default() };
        let db = db::pool_with(&config.store, DB_ACQUIRE_TIMEOUT, sessions).context("DATABASE_URL")?;
        let relaxed = Sessions { relaxed_commit: true, ..sessions };
        let claims = db::pool_with(&config.store, DB_ACQUIRE_TIMEOUT, relaxed).context("DATABASE_URL")?;
        db::migrate(&db).await.context("applying migrations")?;
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
        let claiming = GroupCommit::start(
            runs::Claims { db: claims.clone(), owner: worker_id.clone(), lease: config.lease() },
            GROUP_WRITERS,
            GROUP_MAX,
        );
        let finishing = GroupCommit::start(runs::Finishes { db: db.clone() }, GROUP_WRITERS, GROUP_MAX);
        Ok(Self {
            ctx: Arc::new(Ctx {
                db,
                claims,
                claiming,
                finishing,
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
                versions: opening::Versions::new(VERSION_TTL),
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

        let monitor = {
            let (ctx, waiter, concurrency) = (self.ctx.clone(), self.queue_conn.clone(), self.concurrency);
            Monitor::new().register(move |_| {
                let source =
                    RedisQueue::new(ctx.broker.conn.clone(), waiter.clone(), ctx.broker.queue().clone(), concurrency);
                WorkerBuilder::new(ctx.worker_id.as_str())
                    .backend(source)
                    .data(ctx.clone())
                    .concurrency(concurrency)
                    // each run on a task of its own; its span and panic guard go with it
                    .parallelize(tokio::spawn)
                    .enable_tracing()
                    .catch_panic()
                    .build(run_job)
            })
        };
        // stopping: take no more jobs and let the runs in flight finish; once the grace period
        // is over, hand the rest back to other workers (their executions then end at once)
        let (registry, grace) = (self.ctx.registry.clone(), self.shutdown_grace);
        let stopping = shutdown.clone();
        let hand_back = async move {
            stopping.cancelled().await;
            tokio::time::sleep(grace).await;
            tracing::info!(in_flight = registry.ids().len(), "grace period over: handing runs to other workers");
            registry.stop_all(control::Stop::HandBack);
            std::future::pending::<()>().await;
        };
        let signal = async move {
            shutdown.cancelled().await;
            tracing::info!("stopping: draining in-flight runs");
            Ok(())
        };
        // the monitor polls the queue on a task of its own: the future a `#[tokio::main]` blocks
        // on is polled outside the runtime's worker threads, so every job popped there would
        // cross threads to be claimed (two thread wake-ups, 0.2-0.5 ms of a run's start)
        let consuming = tokio::spawn(monitor.run_with_signal(signal));
        tokio::select! {
            stopped = consuming => stopped.context("the apalis monitor task")?.context("the apalis monitor")?,
            () = hand_back => {}
        }
        background.cancel();
        Ok(())
    }
}

/// Executes one job (the worker's apalis handler). A failed execution was handed back (or is
/// retried once its lease expires): it is logged here, never retried by apalis.
async fn run_job(job: Job, ctx: Data<Arc<Ctx>>) -> Result<(), BoxDynError> {
    if let Err(e) = execute::handle(Arc::clone(&ctx), job).await {
        tracing::error!(error = ?e, "run execution failed; the reconciler will retry it");
    }
    Ok(())
}

fn uuid_suffix() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 8..].to_owned()
}
