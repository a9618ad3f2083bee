//! Workspaces: the tenants.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::crypto::ApiKey;
use crate::domain::Scope;
use crate::error::ResultExt;
use crate::id::{KeyId, WorkspaceId};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub plan: String,
    pub concurrency_limit: Option<i32>,
    pub created_at: DateTime<Utc>,
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

/// Makes sure workspace `name` exists and holds `key` as a management key. Idempotent, so every
/// API replica can run it at start-up.
pub async fn ensure_admin_key(db: &PgPool, name: &str, key: &ApiKey) -> Result<WorkspaceId> {
    let mut tx = db.begin().await?;
    sqlx::query("insert into workspaces (id, name) values ($1, $2) on conflict (name) do nothing")
        .bind(WorkspaceId::new())
        .bind(name)
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
    .bind([Scope::Manage.as_str(), Scope::Run.as_str()])
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(workspace)
}
