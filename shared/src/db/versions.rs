//! Agent versions: immutable once created (a trigger refuses updates), exactly one deployed per
//! agent (a partial unique index). Deploying an older version is the rollback.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};

use crate::db::models::{self, LlmModel, ModelRef};
use crate::db::{Paged, agents};
use crate::domain::{AgentRef, Page, PromptMessage, ProviderRef};
use crate::id::{AgentId, ProviderId, VersionId, WorkspaceId};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Version {
    pub id: VersionId,
    pub agent_id: AgentId,
    pub number: i32,
    pub provider_id: ProviderId,
    pub model: String,
    pub system_prompt: Option<String>,
    #[schema(value_type = Vec<PromptMessage>)]
    pub messages: Json<Vec<PromptMessage>>,
    #[schema(value_type = Object)]
    pub parameters: Json<serde_json::Map<String, serde_json::Value>>,
    pub tools: Vec<String>,
    pub max_steps: i32,
    pub deployed: bool,
    pub deployed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct NewVersion {
    pub provider: ProviderRef,
    pub model: String,
    pub system_prompt: Option<String>,
    pub messages: Vec<PromptMessage>,
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub tools: Vec<String>,
    pub max_steps: i32,
    pub deploy: bool,
}

/// Locks the agent row so version numbering and deployment are serialized per agent.
async fn lock_agent(tx: &mut Transaction<'_, Postgres>, workspace: WorkspaceId, agent: &AgentRef) -> Result<AgentId> {
    let agent = agents::get(&mut **tx, workspace, agent).await?;
    sqlx::query("select 1 from agents where id = $1 for update").bind(agent.id).execute(&mut **tx).await?;
    Ok(agent.id)
}

async fn set_deployed(tx: &mut Transaction<'_, Postgres>, agent: AgentId, version: VersionId) -> Result<Version> {
    sqlx::query(
        "update agent_versions set deployed = false, deployed_at = null where agent_id = $1 and deployed and id <> $2",
    )
    .bind(agent)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    sqlx::query_as(
        "update agent_versions set deployed = true, deployed_at = coalesce(deployed_at, now())
         where agent_id = $1 and id = $2 returning *",
    )
    .bind(agent)
    .bind(version)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(Error::version_not_found)
}

pub async fn create(db: &PgPool, workspace: WorkspaceId, agent: &AgentRef, new: NewVersion) -> Result<Version> {
    let mut tx = db.begin().await?;
    let agent = lock_agent(&mut tx, workspace, agent).await?;
    let version = insert(&mut tx, workspace, agent, new).await?;
    tx.commit().await?;
    Ok(version)
}

/// Inserts the agent's next version (deployed when `new.deploy`); the agent row is locked or new.
pub(crate) async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    workspace: WorkspaceId,
    agent: AgentId,
    new: NewVersion,
) -> Result<Version> {
    crate::db::tools::check_names(&mut **tx, workspace, "tools", &new.tools).await?;
    let provider = crate::db::providers::get(&mut **tx, workspace, &new.provider).await?;
    let mut version: Version = sqlx::query_as(
        "insert into agent_versions
             (id, agent_id, workspace_id, number, provider_id, model, system_prompt, messages, parameters, tools, max_steps)
         values ($1, $2, $3,
                 (select coalesce(max(number), 0) + 1 from agent_versions where agent_id = $2),
                 $4, $5, $6, $7, $8, $9, $10)
         returning *",
    )
    .bind(VersionId::new())
    .bind(agent)
    .bind(workspace)
    .bind(provider.id)
    .bind(&new.model)
    .bind(&new.system_prompt)
    .bind(Json(&new.messages))
    .bind(Json(&new.parameters))
    .bind(&new.tools)
    .bind(new.max_steps)
    .fetch_one(&mut **tx)
    .await?;
    if new.deploy {
        version = set_deployed(tx, agent, version.id).await?;
    }
    Ok(version)
}

impl NewVersion {
    /// A deployed version on `model` with a system prompt and tools, the rest defaults.
    pub fn on_model(model: &LlmModel, system_prompt: Option<String>, tools: Vec<String>) -> Self {
        Self {
            provider: ProviderRef::Id(model.provider_id),
            model: model.model_id.clone(),
            system_prompt,
            messages: Vec::new(),
            parameters: serde_json::Map::new(),
            tools,
            max_steps: DEFAULT_MAX_STEPS,
            deploy: true,
        }
    }
}

/// Most provider calls per run when a version does not say.
pub const DEFAULT_MAX_STEPS: i32 = 8;

/// What a revision changes in an agent's deployed version; `None` keeps the field.
#[derive(Debug, Default)]
pub struct Revision {
    pub system_prompt: Option<String>,
    pub tools: Option<Vec<String>>,
}

/// Creates and deploys the agent's next version: its deployed version with `revision` applied,
/// or, when none is deployed, a version on the workspace's default model.
pub async fn revise(db: &PgPool, workspace: WorkspaceId, agent: &AgentRef, revision: Revision) -> Result<Version> {
    let mut tx = db.begin().await?;
    let agent = lock_agent(&mut tx, workspace, agent).await?;
    let deployed: Option<Version> = sqlx::query_as("select * from agent_versions where agent_id = $1 and deployed")
        .bind(agent)
        .fetch_optional(&mut *tx)
        .await?;
    let new = match deployed {
        Some(base) => NewVersion {
            provider: ProviderRef::Id(base.provider_id),
            model: base.model,
            system_prompt: revision.system_prompt.or(base.system_prompt),
            messages: base.messages.0,
            parameters: base.parameters.0,
            tools: revision.tools.unwrap_or(base.tools),
            max_steps: base.max_steps,
            deploy: true,
        },
        None => {
            let model = models::find(&mut *tx, workspace, &ModelRef::Default).await?;
            NewVersion::on_model(&model, revision.system_prompt, revision.tools.unwrap_or_default())
        }
    };
    let version = insert(&mut tx, workspace, agent, new).await?;
    tx.commit().await?;
    Ok(version)
}

/// Makes `version` the agent's deployed version (also how a rollback is done).
pub async fn deploy(db: &PgPool, workspace: WorkspaceId, agent: &AgentRef, version: VersionId) -> Result<Version> {
    let mut tx = db.begin().await?;
    let agent = lock_agent(&mut tx, workspace, agent).await?;
    let version = set_deployed(&mut tx, agent, version).await?;
    tx.commit().await?;
    Ok(version)
}

pub async fn list(db: &PgPool, workspace: WorkspaceId, agent: &AgentRef, page: Page) -> Result<Paged<Version>> {
    let agent = agents::get(db, workspace, agent).await?;
    let items =
        sqlx::query_as("select * from agent_versions where agent_id = $1 order by number desc limit $2 offset $3")
            .bind(agent.id)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(db)
            .await?;
    let (total,) =
        sqlx::query_as("select count(*) from agent_versions where agent_id = $1").bind(agent.id).fetch_one(db).await?;
    Ok(Paged { items, total })
}

pub async fn get(db: &PgPool, workspace: WorkspaceId, agent: &AgentRef, version: VersionId) -> Result<Version> {
    let agent = agents::get(db, workspace, agent).await?;
    sqlx::query_as("select * from agent_versions where agent_id = $1 and id = $2")
        .bind(agent.id)
        .bind(version)
        .fetch_optional(db)
        .await?
        .ok_or_else(Error::version_not_found)
}
