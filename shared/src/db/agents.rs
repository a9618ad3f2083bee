//! Agents: named, slugged, archivable; their behaviour lives in immutable versions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use crate::db::Paged;
use crate::db::versions::{self, NewVersion};
use crate::domain::{AgentRef, Page, Slug};
use crate::error::ResultExt;
use crate::id::{AgentId, VersionId, WorkspaceId};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Agent {
    pub id: AgentId,
    #[serde(skip)]
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub slug: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// The version runs execute, if any is deployed.
    pub deployed_version_id: Option<VersionId>,
    /// The deployed version's system prompt.
    pub system_prompt: Option<String>,
    /// `active`, or `archived` (reference `002_…`).
    pub status: String,
    pub archived: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct NewAgent {
    pub name: String,
    pub slug: Slug,
    pub description: Option<String>,
    pub tags: Vec<String>,
}

/// Fields a PATCH may change; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub slug: Option<Slug>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

macro_rules! select {
    () => {
        "select a.id, a.workspace_id, a.name, a.slug, a.description, a.tags,
                v.id as deployed_version_id, v.system_prompt,
                case when a.archived_at is null then 'active' else 'archived' end as status,
                a.archived_at is not null as archived, a.created_at, a.updated_at
         from agents a
         left join agent_versions v on v.agent_id = a.id and v.deployed "
    };
}

fn slug_taken(slug: &Slug) -> Error {
    Error::conflict("agent_slug_taken", format!("An agent with slug {:?} already exists", slug.as_str()))
}

/// Creates an agent, with its first version (deployed when it says so) in the same transaction.
pub async fn create(db: &PgPool, workspace: WorkspaceId, new: NewAgent, first: Option<NewVersion>) -> Result<Agent> {
    let id = AgentId::new();
    let mut tx = db.begin().await?;
    sqlx::query("insert into agents (id, workspace_id, name, slug, description, tags) values ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(workspace)
        .bind(&new.name)
        .bind(&new.slug)
        .bind(&new.description)
        .bind(&new.tags)
        .execute(&mut *tx)
        .await
        .on_constraint("agents_workspace_slug_key", || slug_taken(&new.slug))?;
    if let Some(version) = first {
        versions::insert(&mut tx, workspace, id, version).await?;
    }
    let agent = by_id(&mut *tx, id).await?.ok_or_else(Error::agent_not_found)?;
    tx.commit().await?;
    Ok(agent)
}

async fn by_id(db: impl PgExecutor<'_>, id: AgentId) -> Result<Option<Agent>> {
    Ok(sqlx::query_as(concat!(select!(), "where a.id = $1")).bind(id).fetch_optional(db).await?)
}

/// Resolves an agent by id or slug. An id of another workspace's agent is
/// [`Error::OtherWorkspace`], so the API can answer 403 rather than pretend it does not exist.
pub async fn get(db: impl PgExecutor<'_>, workspace: WorkspaceId, agent: &AgentRef) -> Result<Agent> {
    let found = match agent {
        AgentRef::Id(id) => by_id(db, *id).await?,
        AgentRef::Slug(slug) => {
            sqlx::query_as(concat!(select!(), "where a.workspace_id = $1 and a.slug = $2"))
                .bind(workspace)
                .bind(slug)
                .fetch_optional(db)
                .await?
        }
    };
    match found {
        Some(agent) if agent.workspace_id == workspace => Ok(agent),
        Some(_) => Err(Error::OtherWorkspace { what: "Agent" }),
        None => Err(Error::agent_not_found()),
    }
}

pub async fn list(db: &PgPool, workspace: WorkspaceId, page: Page, include_archived: bool) -> Result<Paged<Agent>> {
    let items = sqlx::query_as(concat!(
        select!(),
        "where a.workspace_id = $1 and ($2 or a.archived_at is null)
         order by a.created_at, a.id limit $3 offset $4"
    ))
    .bind(workspace)
    .bind(include_archived)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let (total,) =
        sqlx::query_as("select count(*) from agents where workspace_id = $1 and ($2 or archived_at is null)")
            .bind(workspace)
            .bind(include_archived)
            .fetch_one(db)
            .await?;
    Ok(Paged { items, total })
}

/// The workspace's agents that can run: not archived, with a deployed version.
pub async fn deployed(db: &PgPool, workspace: WorkspaceId) -> Result<Vec<Agent>> {
    Ok(sqlx::query_as(concat!(
        select!(),
        "where a.workspace_id = $1 and a.archived_at is null and v.id is not null order by a.created_at, a.id"
    ))
    .bind(workspace)
    .fetch_all(db)
    .await?)
}

pub async fn update(db: &PgPool, workspace: WorkspaceId, agent: &AgentRef, patch: AgentPatch) -> Result<Agent> {
    let current = get(db, workspace, agent).await?;
    let slug = patch.slug.clone();
    sqlx::query(
        "update agents set name = coalesce($2, name), slug = coalesce($3, slug),
                description = coalesce($4, description), tags = coalesce($5, tags), updated_at = now()
         where id = $1",
    )
    .bind(current.id)
    .bind(patch.name)
    .bind(patch.slug)
    .bind(patch.description)
    .bind(patch.tags)
    .execute(db)
    .await
    .on_constraint("agents_workspace_slug_key", || slug_taken(slug.as_ref().expect("only a new slug can clash")))?;
    by_id(db, current.id).await?.ok_or_else(Error::agent_not_found)
}

/// Archives an agent: it leaves listings and takes no new runs, but its history stays.
pub async fn archive(db: &PgPool, workspace: WorkspaceId, agent: &AgentRef) -> Result<Agent> {
    let current = get(db, workspace, agent).await?;
    sqlx::query("update agents set archived_at = coalesce(archived_at, now()), updated_at = now() where id = $1")
        .bind(current.id)
        .execute(db)
        .await?;
    by_id(db, current.id).await?.ok_or_else(Error::agent_not_found)
}
