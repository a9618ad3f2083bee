//! Threads and their messages. Thread ids are client-nameable, scoped to the workspace.
//!
//! A thread has a row when it was created on its own (`POST /v1/threads`, a session). A thread
//! that a run started (named by the client, or generated) has none: it exists through its runs,
//! and reads as created with its first run, without metadata. Runs write no thread row, so a
//! one-shot run costs Postgres no insert for a thread nobody may continue.

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

/// Creates a thread; a taken id (a thread's row, or a run's thread) is a conflict.
pub async fn create(db: &PgPool, workspace: WorkspaceId, id: &ThreadId, metadata: serde_json::Value) -> Result<Thread> {
    let taken = || Error::conflict("thread_exists", format!("Thread {:?} already exists", id.as_str()));
    let created: Option<Thread> = sqlx::query_as(
        "insert into threads (workspace_id, id, metadata)
         select $1, $2, $3 where not exists (select 1 from runs where workspace_id = $1 and thread_id = $2)
         returning id, metadata, created_at, updated_at",
    )
    .bind(workspace)
    .bind(id.as_str())
    .bind(Json(metadata))
    .fetch_optional(db)
    .await
    .on_constraint("threads_pkey", taken)?;
    created.ok_or_else(taken)
}

/// The thread's row, or else the thread its first run started.
pub async fn get(db: &PgPool, workspace: WorkspaceId, id: &ThreadId) -> Result<Thread> {
    sqlx::query_as(
        "select id, metadata, created_at, updated_at from threads where workspace_id = $1 and id = $2
         union all
         (select thread_id, '{}', created_at, created_at from runs where workspace_id = $1 and thread_id = $2
          order by created_at limit 1)
         limit 1",
    )
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
