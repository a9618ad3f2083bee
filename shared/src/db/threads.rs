//! Threads and their messages. Thread ids are client-nameable, scoped to the workspace.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::types::Json;

use crate::chat::ChatMessage;
use crate::db::Paged;
use crate::domain::{Page, ThreadId};
use crate::error::ResultExt;
use crate::id::{MessageId, RunId, WorkspaceId};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Thread {
    pub id: String,
    #[schema(value_type = Object)]
    pub metadata: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StoredMessage {
    pub id: MessageId,
    pub run_id: Option<RunId>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub content: Json<ChatMessage>,
    pub created_at: DateTime<Utc>,
}

/// Creates a thread; a taken id is a conflict.
pub async fn create(db: &PgPool, workspace: WorkspaceId, id: &ThreadId, metadata: serde_json::Value) -> Result<Thread> {
    sqlx::query_as("insert into threads (workspace_id, id, metadata) values ($1, $2, $3) returning id, metadata, created_at, updated_at")
        .bind(workspace)
        .bind(id.as_str())
        .bind(Json(metadata))
        .fetch_one(db)
        .await
        .on_constraint("threads_pkey", || Error::conflict("thread_exists", format!("Thread {:?} already exists", id.as_str())))
}

pub async fn get(db: &PgPool, workspace: WorkspaceId, id: &ThreadId) -> Result<Thread> {
    sqlx::query_as("select id, metadata, created_at, updated_at from threads where workspace_id = $1 and id = $2")
        .bind(workspace)
        .bind(id.as_str())
        .fetch_optional(db)
        .await?
        .ok_or(Error::NotFound { code: "thread_not_found", message: "Thread not found" })
}

pub async fn messages(db: &PgPool, workspace: WorkspaceId, id: &ThreadId, page: Page) -> Result<Paged<StoredMessage>> {
    get(db, workspace, id).await?;
    let items = sqlx::query_as(
        "select id, run_id, content, created_at from messages where workspace_id = $1 and thread_id = $2
         order by run_id, id limit $3 offset $4",
    )
    .bind(workspace)
    .bind(id.as_str())
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let (total,) = sqlx::query_as("select count(*) from messages where workspace_id = $1 and thread_id = $2")
        .bind(workspace)
        .bind(id.as_str())
        .fetch_one(db)
        .await?;
    Ok(Paged { items, total })
}
