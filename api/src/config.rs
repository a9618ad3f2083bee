//! Settings of `runq-api`, from flags or environment variables.

use std::time::Duration;

use runq_shared::config::{OutboundConfig, Secret, StoreConfig, TelemetryConfig};
use runq_shared::ratelimit::PlanLimits;

#[derive(Debug, Clone, clap::Args)]
pub struct ApiConfig {
    /// Address to listen on (`host:port`; port 0 picks a free port, which is logged).
    #[arg(long, env = "RUNQ_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// A management key the API makes sure exists in the `default` workspace at start-up.
    #[arg(long, env = "RUNQ_ADMIN_KEY")]
    pub admin_key: Option<Secret<String>>,

    /// Largest accepted request body, in bytes (a 10,000-query batch fits in the default).
    #[arg(long, env = "RUNQ_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long an authenticated key is trusted before Postgres is asked again, in milliseconds.
    #[arg(long, env = "RUNQ_AUTH_CACHE_TTL_MS", default_value_t = 5000)]
    pub auth_cache_ttl_ms: u64,

    /// How long an agent's deployed version is trusted before Postgres is asked again, in
    /// milliseconds (a deploy through another replica reaches this one within it).
    #[arg(long, env = "RUNQ_AGENT_CACHE_TTL_MS", default_value_t = 5000)]
    pub agent_cache_ttl_ms: u64,

    /// How long a sync `POST /v1/run` waits for the answer before replying 202 with an
    /// operation to poll, in milliseconds.
    #[arg(long, env = "RUNQ_SYNC_TIMEOUT_MS", default_value_t = 60_000)]
    pub sync_timeout_ms: u64,

    /// A run's time limit when the request sets no `timeout_ms`, in milliseconds.
    #[arg(long, env = "RUNQ_RUN_TIMEOUT_MS", default_value_t = 600_000)]
    pub run_timeout_ms: u32,

    /// Most items accepted in one batch.
    #[arg(long, env = "RUNQ_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,

    /// Length of a rate-limit window, in seconds; a key's limit (`rate_limit_per_hour`) is the
    /// requests it may make per window.
    #[arg(long, env = "RUNQ_RATE_LIMIT_WINDOW_SECS", default_value_t = 3600,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub rate_limit_window_secs: u64,

    /// Requests per window of a `free` workspace's keys without a custom limit.
    #[arg(long, env = "RUNQ_PLAN_FREE_LIMIT", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub plan_free_limit: u32,

    /// Requests per window of a `pro` workspace's keys without a custom limit.
    #[arg(long, env = "RUNQ_PLAN_PRO_LIMIT", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub plan_pro_limit: u32,

    #[command(flatten)]
    pub store: StoreConfig,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,

    #[command(flatten)]
    pub outbound: OutboundConfig,
}

impl ApiConfig {
    pub fn auth_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.auth_cache_ttl_ms)
    }

    pub fn agent_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.agent_cache_ttl_ms)
    }

    pub fn plan_limits(&self) -> PlanLimits {
        PlanLimits { free: self.plan_free_limit, pro: self.plan_pro_limit }
    }
}
