//! Sessions (reference `002_…`): a thread bound to an agent, with a title. A session is `running`
//! while one of its runs is queued or running, `pending` otherwise; its messages are the thread's
//! user and assistant turns, numbered from 1, with the turn of a run still under way listed under
//! the id it will be stored with (see [`crate::db::runs::finish`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::db::Paged;
use crate::domain::{Page, ThreadId};
use crate::id::{AgentId, MessageId, RunId, WorkspaceId};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Session {
    /// The thread's id.
    pub id: String,
    pub agent_id: AgentId,
    pub title: Option<String>,
    /// `pending` (idle) or `running`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user or assistant turn of a session.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SessionMessage {
    pub id: MessageId,
    pub session_id: String,
    /// Position in the session, from 1.
    pub sequence: i64,
    pub role: String,
    #[sqlx(skip)]
    #[schema(value_type = Object)]
    pub content: serde_json::Value,
    #[serde(skip)]
    pub text: String,
    pub created_at: DateTime<Utc>,
}

macro_rules! select {
    () => {
        "select t.id, t.agent_id, t.title, t.created_at, t.updated_at,
                case when exists (select 1 from runs r
                                  where r.workspace_id = t.workspace_id and r.thread_id = t.id
                                    and r.finished_at is null)
                     then 'running' else 'pending' end as status
         from threads t "
    };
}

/// The turns of thread `$2` of workspace `$1`: stored messages, then the first input message of
/// runs not finished yet, numbered in run order.
macro_rules! turns {
    () => {
        "with stored as (
             select m.id, m.run_id, m.content, m.created_at from messages m
             where m.workspace_id = $1 and m.thread_id = $2
             union all
             select r.id, r.id, r.input -> 0, r.created_at from runs r
             where r.workspace_id = $1 and r.thread_id = $2 and r.finished_at is null
               and jsonb_array_length(r.input) > 0),
         turns as (
             select id, run_id, content ->> 'role' as role, content ->> 'content' as text, created_at,
                    row_number() over (order by run_id, id) as sequence
             from stored
             where content ->> 'role' in ('user', 'assistant') and coalesce(content ->> 'content', '') <> '') "
    };
}

pub async fn create(db: &PgPool, workspace: WorkspaceId, agent: AgentId, title: Option<&str>) -> Result<Session> {
    let id = ThreadId::generate();
    sqlx::query("insert into threads (workspace_id, id, agent_id, title) values ($1, $2, $3, $4)")
        .bind(workspace)
        .bind(id.as_str())
        .bind(agent)
        .bind(title)
        .execute(db)
        .await?;
    get(db, workspace, agent, id.as_str()).await
}

pub async fn get(db: &PgPool, workspace: WorkspaceId, agent: AgentId, id: &str) -> Result<Session> {
    sqlx::query_as(concat!(select!(), "where t.workspace_id = $1 and t.agent_id = $2 and t.id = $3"))
        .bind(workspace)
        .bind(agent)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(Error::NotFound { code: "session_not_found", message: "Session not found" })
}

/// The agent's sessions, newest first.
pub async fn list(db: &PgPool, workspace: WorkspaceId, agent: AgentId, page: Page) -> Result<Paged<Session>> {
    let items = sqlx::query_as(concat!(
        select!(),
        "where t.workspace_id = $1 and t.agent_id = $2 order by t.created_at desc, t.id desc limit $3 offset $4"
    ))
    .bind(workspace)
    .bind(agent)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let (total,) = sqlx::query_as("select count(*) from threads where workspace_id = $1 and agent_id = $2")
        .bind(workspace)
        .bind(agent)
        .fetch_one(db)
        .await?;
    Ok(Paged { items, total })
}

/// The session's turns, oldest first.
pub async fn messages(db: &PgPool, workspace: WorkspaceId, session: &str, page: Page) -> Result<Paged<SessionMessage>> {
    let rows: Vec<SessionMessage> = sqlx::query_as(concat!(
        turns!(),
        "select id, $2 as session_id, sequence, role, text, created_at from turns order by sequence limit $3 offset $4"
    ))
    .bind(workspace)
    .bind(session)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let (total,) = sqlx::query_as(concat!(turns!(), "select count(*) from turns"))
        .bind(workspace)
        .bind(session)
        .fetch_one(db)
        .await?;
    Ok(Paged { items: rows.into_iter().map(SessionMessage::with_content).collect(), total })
}

/// The turn a run of the session started with (the user message that started it).
pub async fn turn_of(db: &PgPool, workspace: WorkspaceId, session: &str, run: RunId) -> Result<SessionMessage> {
    let row: Option<SessionMessage> = sqlx::query_as(concat!(
        turns!(),
        "select id, $2 as session_id, sequence, role, text, created_at from turns where id = $3"
    ))
    .bind(workspace)
    .bind(session)
    .bind(run)
    .fetch_optional(db)
    .await?;
    row.map(SessionMessage::with_content)
        .ok_or(Error::NotFound { code: "message_not_found", message: "Message not found" })
}

/// The session's latest run, if it has one.
pub async fn latest_run(db: &PgPool, workspace: WorkspaceId, session: &str) -> Result<Option<RunId>> {
    let row: Option<(RunId,)> = sqlx::query_as(
        "select id from runs where workspace_id = $1 and thread_id = $2 order by created_at desc, id desc limit 1",
    )
    .bind(workspace)
    .bind(session)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(id,)| id))
}

impl SessionMessage {
    /// Reference `002_…` shows a message's content as `{"text": …}`.
    fn with_content(self) -> Self {
        Self { content: serde_json::json!({ "text": self.text }), ..self }
    }
}
