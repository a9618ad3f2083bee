//! A workspace's backlog: how many runs wait, how many run, and how long the oldest has waited.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::Result;
use crate::id::WorkspaceId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Backlog {
    /// Runs `queued` (waiting for a worker, a free slot of the workspace, or their thread).
    pub queued: i64,
    /// Runs `running` on a worker.
    pub running: i64,
    /// When the oldest queued run was recorded.
    pub oldest_queued_at: Option<DateTime<Utc>>,
}

/// Counts the workspace's active runs (the `runs_live` partial index holds only live runs).
pub async fn get(db: impl PgExecutor<'_>, workspace: WorkspaceId) -> Result<Backlog> {
    Ok(sqlx::query_as(
        "select count(*) filter (where status = 'queued') as queued,
                count(*) filter (where status = 'running') as running,
                min(created_at) filter (where status = 'queued') as oldest_queued_at
         from runs where workspace_id = $1 and finished_at is null and status in ('queued', 'running')",
    )
    .bind(workspace)
    .fetch_one(db)
    .await?)
}
