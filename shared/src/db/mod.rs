//! Postgres: pool set-up, migrations, and the queries, one module per table family.
//!
//! Queries are checked at run time (`query_as` + `FromRow`) rather than by the compile-time
//! macros, so building never needs a live database.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::StoreConfig;

pub mod agents;
pub mod keys;
pub mod operations;
pub mod providers;
pub mod runs;
pub mod threads;
pub mod versions;
pub mod workspaces;

/// The migrations in `migrations/`, embedded in the binaries and applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens the pool lazily: a process starts even while Postgres is down. Waiting for a connection
/// gives up after `acquire_timeout`: short for the API (a client gets 503 rather than a hang),
/// longer for a worker (a busy pool is not an outage).
pub fn pool(config: &StoreConfig, acquire_timeout: Duration) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy(config.database_url.expose())
}

/// Applies pending migrations. Safe to call from several processes at once: sqlx takes an
/// advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// A page of rows and the total count across all pages.
#[derive(Debug)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub total: i64,
}
