//! Workspaces: the tenants.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::crypto::ApiKey;
use crate::db::backlog;
use crate::domain::{Plan, Scope};
use crate::error::ResultExt;
use crate::id::{KeyId, WorkspaceId};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    /// `free`, `pro` or `enterprise`.
    pub plan: String,
    /// Requests per rate-limit window for keys without their own limit, instead of the plan's
    /// default; `null` when not set.
    pub rate_limit_per_hour: Option<i32>,
    /// Most runs of the workspace running at once; `null` is no cap.
    pub concurrency_limit: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// An operator's change to a workspace; `None` leaves a field as it is, `Some(None)` clears a
/// limit.
#[derive(Debug, Clone, Default)]
pub struct WorkspacePatch {
    pub plan: Option<Plan>,
    pub rate_limit_per_hour: Option<Option<i32>>,
    pub concurrency_limit: Option<Option<i32>>,
}

/// Runs of a workspace that are not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RunCounts {
    pub running: i64,
    pub queued: i64,
}

/// Creates a workspace; a taken name is a conflict.
pub async fn create(db: &PgPool, name: &str) -> Result<Workspace> {
    sqlx::query_as("insert into workspaces (id, name) values ($1, $2) returning *")
        .bind(WorkspaceId::new())
        .bind(name)
        .fetch_one(db)
        .await
        .on_constraint("workspaces_name_key", || {
            Error::conflict("workspace_exists", format!("A workspace named {name:?} already exists"))
        })
}

pub async fn get(db: &PgPool, id: WorkspaceId) -> Result<Workspace> {
    sqlx::query_as("select * from workspaces where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(Error::workspace_not_found())
}

/// Applies an operator's change.
pub async fn update(db: &PgPool, id: WorkspaceId, patch: &WorkspacePatch) -> Result<Workspace> {
    sqlx::query_as(
        "update workspaces set
             plan = coalesce($2, plan),
             rate_limit_per_hour = case when $3 then $4 else rate_limit_per_hour end,
             concurrency_limit = case when $5 then $6 else concurrency_limit end
         where id = $1 returning *",
    )
    .bind(id)
    .bind(patch.plan.map(Plan::as_str))
    .bind(patch.rate_limit_per_hour.is_some())
    .bind(patch.rate_limit_per_hour.flatten())
    .bind(patch.concurrency_limit.is_some())
    .bind(patch.concurrency_limit.flatten())
    .fetch_optional(db)
    .await?
    .ok_or(Error::workspace_not_found())
}

/// How many of the workspace's runs are running and queued now (from its [`backlog`]).
pub async fn run_counts(db: &PgPool, id: WorkspaceId) -> Result<RunCounts> {
    let backlog = backlog::get(db, id).await?;
    Ok(RunCounts { running: backlog.running, queued: backlog.queued })
}

/// Makes sure workspace `name` exists and holds `key` as the operator's key (scopes `admin`,
/// `manage` and `run`). A workspace created here is on the `enterprise` plan, so the operator
/// is not rate limited. Idempotent, so every API replica can run it at start-up.
pub async fn ensure_admin_key(db: &PgPool, name: &str, key: &ApiKey) -> Result<WorkspaceId> {
    let mut tx = db.begin().await?;
    sqlx::query("insert into workspaces (id, name, plan) values ($1, $2, $3) on conflict (name) do nothing")
        .bind(WorkspaceId::new())
        .bind(name)
        .bind(Plan::Enterprise.as_str())
        .execute(&mut *tx)
        .await?;
    let (workspace,): (WorkspaceId,) =
        sqlx::query_as("select id from workspaces where name = $1").bind(name).fetch_one(&mut *tx).await?;
    sqlx::query(
        "insert into api_keys (id, workspace_id, name, prefix, key_hash, scopes)
         values ($1, $2, 'admin (RUNQ_ADMIN_KEY)', $3, $4, $5)
         on conflict (key_hash) do nothing",
    )
    .bind(KeyId::new())
    .bind(workspace)
    .bind(key.display_prefix())
    .bind(&key.hash()[..])
    .bind([Scope::Admin.as_str(), Scope::Manage.as_str(), Scope::Run.as_str()])
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(workspace)
}
