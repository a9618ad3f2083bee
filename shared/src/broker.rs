//! Redis: the connection and the names of every key and channel runq uses.
//!
//! All names hang off one prefix (`RUNQ_REDIS_PREFIX`), so several deployments or test runs can
//! share one Redis without seeing each other.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::StoreConfig;
use crate::queue::QueueKeys;

/// A cheap-to-clone, self-reconnecting Redis handle plus the key namespace.
#[derive(Clone)]
pub struct Broker {
    pub conn: ConnectionManager,
    prefix: String,
    queue: QueueKeys,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Broker {
    /// Connects lazily: the process starts while Redis is down and reconnects when it returns.
    pub fn connect(config: &StoreConfig) -> redis::RedisResult<Self> {
        let client = redis::Client::open(config.redis_url.expose().as_str())?;
        let timeout = Some(config.dependency_timeout());
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(Self { conn, prefix: config.redis_prefix.clone(), queue: QueueKeys::new(&config.redis_prefix) })
    }

    /// A connection of its own for blocking commands (`BLMPOP`), which would stall every other
    /// command queued behind them on a shared connection. It has no response timeout: the
    /// blocking command carries its own.
    pub fn dedicated(config: &StoreConfig) -> redis::RedisResult<ConnectionManager> {
        let client = redis::Client::open(config.redis_url.expose().as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.dependency_timeout()))
            .set_response_timeout(None);
        ConnectionManager::new_lazy_with_config(client, manager_config)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The job queue's keys.
    pub fn queue(&self) -> &QueueKeys {
        &self.queue
    }

    /// `{prefix}:{suffix}`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// Round-trips a PING, for health checks.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        redis::cmd("PING").query_async::<()>(&mut self.conn.clone()).await
    }
}
