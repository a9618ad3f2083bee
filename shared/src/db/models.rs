//! LLM models (reference `002_…`): a provider's model registered in a workspace. One of them is
//! the workspace's default, used by agents created from a system prompt alone; the first model a
//! workspace registers becomes its default.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use crate::db::{Paged, providers};
use crate::domain::{Page, ProviderRef};
use crate::error::ResultExt;
use crate::id::{ModelId, ProviderId, WorkspaceId};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LlmModel {
    pub id: ModelId,
    pub provider_id: ProviderId,
    /// The provider's name for the model (`gpt-4o`).
    pub model_id: String,
    pub display_name: String,
    pub context_window: Option<i32>,
    /// Whether agents created without a model use this one.
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct NewModel {
    pub model_id: String,
    pub display_name: String,
    pub context_window: Option<i32>,
    /// Make this the workspace's default (the first model is the default anyway).
    pub is_default: bool,
}

/// How a request names a model: by id (`mdl_…`), by the provider's model name, or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Id(ModelId),
    Name(String),
    Default,
}

const COLUMNS: &str = "id, provider_id, model_id, display_name, context_window, is_default, created_at";

/// Registers a model of a provider of `workspace`.
pub async fn create(db: &PgPool, workspace: WorkspaceId, provider: &ProviderRef, new: NewModel) -> Result<LlmModel> {
    let mut tx = db.begin().await?;
    let provider = providers::get(&mut *tx, workspace, provider).await?;
    // serializes default changes per workspace, so exactly one model ends up the default
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::text, 1))")
        .bind(workspace)
        .execute(&mut *tx)
        .await?;
    if new.is_default {
        sqlx::query("update llm_models set is_default = false where workspace_id = $1 and is_default")
            .bind(workspace)
            .execute(&mut *tx)
            .await?;
    }
    let model = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into llm_models (id, workspace_id, provider_id, model_id, display_name, context_window, is_default)
         values ($1, $2, $3, $4, $5, $6,
                 $7 or not exists (select 1 from llm_models where workspace_id = $2 and is_default))
         returning {COLUMNS}"
    )))
    .bind(ModelId::new())
    .bind(workspace)
    .bind(provider.id)
    .bind(&new.model_id)
    .bind(&new.display_name)
    .bind(new.context_window)
    .bind(new.is_default)
    .fetch_one(&mut *tx)
    .await
    .on_constraint("llm_models_provider_model_key", || {
        Error::conflict("model_exists", format!("This provider already has a model {:?}", new.model_id))
    })?;
    tx.commit().await?;
    Ok(model)
}

/// The workspace's models, or one provider's, oldest first.
pub async fn list(
    db: &PgPool,
    workspace: WorkspaceId,
    provider: Option<&ProviderRef>,
    page: Page,
) -> Result<Paged<LlmModel>> {
    let provider = match provider {
        Some(provider) => Some(providers::get(db, workspace, provider).await?.id),
        None => None,
    };
    const WHERE: &str = "where workspace_id = $1 and ($2::uuid is null or provider_id = $2)";
    let items = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from llm_models {WHERE} order by created_at, id limit $3 offset $4"
    )))
    .bind(workspace)
    .bind(provider)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let (total,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("select count(*) from llm_models {WHERE}")))
        .bind(workspace)
        .bind(provider)
        .fetch_one(db)
        .await?;
    Ok(Paged { items, total })
}

/// Finds a model of `workspace`; [`ModelRef::Default`] is the workspace's default model.
pub async fn find(db: impl PgExecutor<'_>, workspace: WorkspaceId, model: &ModelRef) -> Result<LlmModel> {
    let query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from llm_models
         where workspace_id = $1
           and case when $2::uuid is not null then id = $2
                    when $3::text is not null then model_id = $3
                    else is_default end
         order by created_at, id limit 1"
    )))
    .bind(workspace);
    let query = match model {
        ModelRef::Id(id) => query.bind(Some(*id)).bind(None::<&str>),
        ModelRef::Name(name) => query.bind(None::<ModelId>).bind(Some(name.as_str())),
        ModelRef::Default => query.bind(None::<ModelId>).bind(None::<&str>),
    };
    query.fetch_optional(db).await?.ok_or_else(|| match model {
        ModelRef::Default => Error::invalid(
            "model",
            "this workspace has no default model yet: register one with POST /v1/llm-providers/{id}/models",
        ),
        _ => Error::NotFound { code: "model_not_found", message: "Model not found" },
    })
}
