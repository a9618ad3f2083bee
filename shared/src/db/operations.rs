//! Operations: what a client polls for an async run or a batch. Progress is counted from the
//! runs themselves, so finishing a run never contends on a shared counter row.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use crate::id::{OperationId, RunId, WorkspaceId};
use crate::{Error, Result};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Operation {
    pub id: OperationId,
    pub kind: String,
    pub total: i32,
    pub created_at: DateTime<Utc>,
}

/// Counts of an operation's runs by outcome.
#[derive(Debug, Clone, Copy, Default, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Progress {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
    pub running: i64,
    pub queued: i64,
}

impl Progress {
    /// Operation status (seed 001 wording): `pending | running | succeeded | failed`.
    pub fn status(&self) -> &'static str {
        if self.completed + self.failed >= self.total {
            if self.failed == self.total && self.total > 0 { "failed" } else { "succeeded" }
        } else if self.running + self.completed + self.failed > 0 {
            "running"
        } else {
            "pending"
        }
    }

    pub fn is_done(&self) -> bool {
        self.completed + self.failed >= self.total
    }
}

/// An operation to record with its runs (see [`crate::db::runs::insert_many`]).
#[derive(Debug, Clone, Copy)]
pub struct NewOperation {
    pub id: OperationId,
    pub workspace_id: WorkspaceId,
    /// `run` (one async run) or `batch`.
    pub kind: &'static str,
    pub total: i32,
}

impl NewOperation {
    pub fn new(workspace_id: WorkspaceId, kind: &'static str, total: usize) -> Self {
        Self { id: OperationId::new(), workspace_id, kind, total: i32::try_from(total).unwrap_or(i32::MAX) }
    }
}

pub async fn create(db: impl PgExecutor<'_>, operation: &NewOperation) -> Result<()> {
    sqlx::query("insert into operations (id, workspace_id, kind, total) values ($1, $2, $3, $4)")
        .bind(operation.id)
        .bind(operation.workspace_id)
        .bind(operation.kind)
        .bind(operation.total)
        .execute(db)
        .await?;
    Ok(())
}

/// Gives a run an operation to be polled by (a sync call that outlived its wait), once.
pub async fn for_run(db: &PgPool, workspace: WorkspaceId, run: RunId) -> Result<OperationId> {
    let mut tx = db.begin().await?;
    // by id alone, the workspace compared on the row (see `runs`)
    let row: Option<(WorkspaceId, Option<OperationId>)> =
        sqlx::query_as("select workspace_id, operation_id from runs where id = $1 for update")
            .bind(run)
            .fetch_optional(&mut *tx)
            .await?;
    let (_, existing) = row
        .filter(|(owner, _)| *owner == workspace)
        .ok_or(Error::NotFound { code: "run_not_found", message: "Run not found" })?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let operation = NewOperation::new(workspace, "run", 1);
    create(&mut *tx, &operation).await?;
    sqlx::query("update runs set operation_id = $2, item_index = 0 where id = $1")
        .bind(run)
        .bind(operation.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(operation.id)
}

pub async fn get(db: &PgPool, workspace: WorkspaceId, id: OperationId) -> Result<(Operation, Progress)> {
    // by id alone, the workspace compared on the row: an index led by `workspace_id` must never
    // be the plan for a lookup by primary key (see `runs`)
    let row: Option<(WorkspaceId, String, i32, DateTime<Utc>)> =
        sqlx::query_as("select workspace_id, kind, total, created_at from operations where id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    let operation = row
        .filter(|(owner, ..)| *owner == workspace)
        .map(|(_, kind, total, created_at)| Operation { id, kind, total, created_at })
        .ok_or(Error::NotFound { code: "operation_not_found", message: "Operation not found" })?;
    let progress = sqlx::query_as(
        "select $2::bigint as total,
                count(*) filter (where status = 'completed') as completed,
                count(*) filter (where status in ('failed', 'cancelled', 'timed_out')) as failed,
                count(*) filter (where status = 'running') as running,
                count(*) filter (where status = 'queued') as queued
         from runs where operation_id = $1",
    )
    .bind(id)
    .bind(i64::from(operation.total))
    .fetch_one(db)
    .await?;
    Ok((operation, progress))
}
