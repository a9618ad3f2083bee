//! Settings of `runq-worker`, from flags or environment variables.

use std::time::Duration;

use runq_shared::config::{OutboundConfig, StoreConfig, TelemetryConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    /// Most runs this process executes at once (they are I/O bound: thousands are fine).
    #[arg(long, env = "RUNQ_WORKER_CONCURRENCY", default_value_t = 1024)]
    pub concurrency: usize,

    /// How long a claimed run stays ours without renewal, in milliseconds; renewed every third.
    #[arg(long, env = "RUNQ_LEASE_MS", default_value_t = 30_000)]
    pub lease_ms: u64,

    /// How often the reconciler looks for lost jobs and expired leases, in milliseconds.
    #[arg(long, env = "RUNQ_RECONCILE_INTERVAL_MS", default_value_t = 5_000)]
    pub reconcile_interval_ms: u64,

    /// How long a run may sit queued after its last push before its job counts as lost, in ms.
    #[arg(long, env = "RUNQ_REQUEUE_AFTER_MS", default_value_t = 30_000)]
    pub requeue_after_ms: u64,

    /// Longest silence from a provider mid-stream before the call fails, in milliseconds.
    #[arg(long, env = "RUNQ_PROVIDER_IDLE_TIMEOUT_MS", default_value_t = 120_000)]
    pub provider_idle_timeout_ms: u64,

    /// How many times a failed provider call (429, 5xx, timeout, dropped connection) is retried.
    #[arg(long, env = "RUNQ_PROVIDER_MAX_RETRIES", default_value_t = 4)]
    pub provider_max_retries: u32,

    /// First retry delay, in milliseconds; doubles each retry (with jitter) unless the provider
    /// sent `Retry-After`.
    #[arg(long, env = "RUNQ_RETRY_BASE_MS", default_value_t = 500)]
    pub retry_base_ms: u64,

    /// On SIGTERM, how long in-flight runs may finish before they are handed to other workers,
    /// in milliseconds.
    #[arg(long, env = "RUNQ_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// This worker's name in leases; defaults to `worker-<pid>-<random>`, unique per process.
    #[arg(long, env = "RUNQ_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Serve `GET /metrics` (Prometheus) on this address (`host:port`; port 0 picks a free port,
    /// which is logged). Off when unset.
    #[arg(long, env = "RUNQ_WORKER_METRICS_BIND")]
    pub metrics_bind: Option<String>,

    /// First webhook retry delay, in milliseconds; later retries wait fixed multiples of it
    /// (5 s → 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), with jitter, or the receiver's `Retry-After`.
    #[arg(long, env = "RUNQ_WEBHOOK_RETRY_BASE_MS", default_value_t = 5_000)]
    pub webhook_retry_base_ms: u64,
    /// How long a tool call waits for a person's approval before it counts as denied.
    #[arg(long, env = "RUNQ_APPROVAL_TTL_MS", default_value_t = 86_400_000)]
    pub approval_ttl_ms: u64,

    #[command(flatten)]
    pub store: StoreConfig,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,

    #[command(flatten)]
    pub outbound: OutboundConfig,
}

impl WorkerConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_millis(self.reconcile_interval_ms)
    }

    pub fn requeue_after(&self) -> Duration {
        Duration::from_millis(self.requeue_after_ms)
    }
}
