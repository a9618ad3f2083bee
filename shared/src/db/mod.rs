//! Postgres: pool set-up, migrations, and the queries, one module per table family.
//!
//! Queries are checked at run time (`query_as` + `FromRow`) rather than by the compile-time
//! macros, so building never needs a live database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::StoreConfig;

pub mod agents;
pub mod approvals;
pub mod backlog;
pub mod keys;
pub mod models;
pub mod operations;
pub mod providers;
pub mod runs;
pub mod sessions;
pub mod threads;
pub mod tools;
pub mod versions;
pub mod webhooks;
pub mod workspaces;

/// The migrations in `migrations/`, embedded in the binaries and applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens the pool lazily: a process starts even while Postgres is down. Waiting for a connection
/// gives up after `acquire_timeout`: short for the API (a client gets 503 rather than a hang),
/// longer for a worker (a busy pool is not an outage).
pub fn pool(config: &StoreConfig, acquire_timeout: Duration) -> Result<PgPool, sqlx::Error> {
    pool_with(config, acquire_timeout, Sessions::default())
}

/// How the sessions of a pool are set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sessions {
    /// Commits return before the WAL reaches disk, for writes that a Postgres crash may lose
    /// without losing a run: a claim or a lease renewal is redone from what is durable (the run
    /// goes back to the queue). Half the commit flushes of a run's life, on a disk where flushing
    /// is the bottleneck.
    pub relaxed_commit: bool,
    /// Plans read tables through their indexes (`enable_seqscan = off`), for a process whose
    /// statements all find their rows by key or through an index (a worker). Postgres keeps the
    /// plan of a prepared statement once it has run five times; made while a table was small, or
    /// had no statistics (autovacuum off), that plan may read the whole table, and it is kept as
    /// the table grows: a finish of 64 runs that reads every run ever recorded. A table no index
    /// serves is still read whole.
    pub by_index: bool,
}

/// [`pool`] with its sessions set up as `sessions` says.
pub fn pool_with(config: &StoreConfig, acquire_timeout: Duration, sessions: Sessions) -> Result<PgPool, sqlx::Error> {
    let mut options = PgConnectOptions::from_str(config.database_url.expose())?;
    if sessions.relaxed_commit {
        options = options.options([("synchronous_commit", "off")]);
    }
    if sessions.by_index {
        options = options.options([("enable_seqscan", "off")]);
    }
    Ok(pool_options(config, acquire_timeout).connect_lazy_with(options))
}

/// A pooled connection idle for longer than this is pinged before it is handed out.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Connections are pinged before use only after [`PING_IDLE_AFTER`] of idleness: sqlx's default
/// pings every one, a round trip to Postgres before each statement (3 % of the worker's CPU in
/// the sustained scenario, and latency on every claim and finish). A connection in steady use
/// needs no ping: if Postgres went away under it, the statement fails as the ping would have (the
/// API answers 503, the worker hands the run back) and the pool drops it. sqlx still pings each
/// connection as it goes back to the pool (no option turns that off); that round trip is off the
/// caller's path.
fn pool_options(config: &StoreConfig, acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Whether an error means Postgres is unreachable or going away, rather than that a query is
/// wrong: no connection within the acquire timeout, a broken socket, or the server ending the
/// session (a shutdown terminates every session with `57P01`, a crash with `57P02`; `57P03`
/// while it starts; class `08`: connection exceptions; `53300`: no connection slot left). A
/// caller may retry once it is back; the API answers 503.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Applies pending migrations. Safe to call from several processes at once: sqlx takes an
/// advisory lock. While Postgres cannot be reached ([`is_unavailable`]) it waits and tries again
/// (100 ms, doubling to 5 s): a process started before its database, or during an outage, comes
/// up once Postgres does. Any other failure (a migration that does not apply) returns at once.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut delay = Duration::from_millis(100);
    loop {
        match MIGRATOR.run(pool).await {
            Err(sqlx::migrate::MigrateError::Execute(e)) if is_unavailable(&e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "Postgres is unreachable; waiting for it");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            done => return done,
        }
    }
}

/// A page of rows and the total count across all pages.
#[derive(Debug)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub total: i64,
}
