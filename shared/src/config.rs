//! The typed settings tree shared by both binaries.
//!
//! Each binary flattens these groups into its own clap parser, so every setting is a flag and
//! an environment variable at once, documented in `--help`. Secrets are wrapped in [`Secret`]
//! so they never reach a log line.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::crypto::MasterKey;

/// A value that must never be printed: `Debug` shows `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself; call sites that use it are easy to grep for.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: FromStr> FromStr for Secret<T> {
    type Err = T::Err;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

/// Where the state lives: Postgres, Redis, and the key that seals provider secrets.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreConfig {
    /// Postgres connection URL (the source of truth).
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/runq?sslmode=disable")]
    pub database_url: Secret<String>,

    /// Most Postgres connections this process opens.
    #[arg(long, env = "RUNQ_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Redis connection URL (queue, live events, replay logs).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: Secret<String>,

    /// Prefix of every Redis key and channel, so several deployments (or test runs) can share
    /// one Redis.
    #[arg(long, env = "RUNQ_REDIS_PREFIX", default_value = "runq")]
    pub redis_prefix: String,

    /// 32 bytes as 64 hex characters; encrypts provider secrets. API and worker must share it.
    #[arg(long, env = "RUNQ_MASTER_KEY")]
    pub master_key: Secret<MasterKey>,

    /// How long to wait for Postgres or Redis before a request gives up with 503, in milliseconds.
    #[arg(long, env = "RUNQ_DEPENDENCY_TIMEOUT_MS", default_value_t = 2000)]
    pub dependency_timeout_ms: u64,
}

impl StoreConfig {
    pub fn dependency_timeout(&self) -> Duration {
        Duration::from_millis(self.dependency_timeout_ms)
    }
}

/// Log format of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logging and trace export.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryConfig {
    /// `text` for people, `json` for log shippers. Filter with `RUST_LOG`.
    #[arg(long, env = "RUNQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OTLP/HTTP collector endpoint (e.g. `http://127.0.0.1:4318`); trace export is off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Requests runq makes on a user's behalf (webhooks; tools later).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct OutboundConfig {
    /// Let webhooks reach loopback, private and link-local addresses (local development and
    /// tests; never on a shared deployment: users could reach the operator's own network).
    #[arg(long, env = "RUNQ_ALLOW_PRIVATE_TARGETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_private_targets: bool,
}
