//! Model providers. Their API keys are sealed with the master key before they reach Postgres and
//! are never returned by any read.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::config::Secret;
use crate::crypto::MasterKey;
use crate::db::Paged;
use crate::domain::{Page, ProviderKind, ProviderRef};
use crate::error::ResultExt;
use crate::id::{ProviderId, WorkspaceId};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Provider {
    pub id: ProviderId,
    pub name: String,
    pub kind: String,
    pub base_url: String,
    /// Whether a secret is stored; the secret itself is never returned.
    pub has_api_key: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct NewProvider {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key: Option<Secret<String>>,
}

macro_rules! columns {
    () => {
        "id, name, kind, base_url, api_key_sealed is not null as has_api_key, created_at"
    };
}

pub async fn create(db: &PgPool, master_key: &MasterKey, workspace: WorkspaceId, new: NewProvider) -> Result<Provider> {
    let sealed = new.api_key.as_ref().map(|k| master_key.seal(k.expose().as_bytes()));
    sqlx::query_as(concat!(
        "insert into providers (id, workspace_id, name, kind, base_url, api_key_sealed)
         values ($1, $2, $3, $4, $5, $6) returning ",
        columns!(),
        ""
    ))
    .bind(ProviderId::new())
    .bind(workspace)
    .bind(&new.name)
    .bind(new.kind.as_str())
    .bind(&new.base_url)
    .bind(sealed)
    .fetch_one(db)
    .await
    .on_constraint("providers_workspace_name_key", || {
        Error::conflict("provider_name_taken", format!("A provider named {:?} already exists", new.name))
    })
}

pub async fn list(db: &PgPool, workspace: WorkspaceId, page: Page) -> Result<Paged<Provider>> {
    let items = sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from providers where workspace_id = $1 order by created_at, id limit $2 offset $3"
    ))
    .bind(workspace)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let (total,) =
        sqlx::query_as("select count(*) from providers where workspace_id = $1").bind(workspace).fetch_one(db).await?;
    Ok(Paged { items, total })
}

/// Finds a provider of `workspace` by id or name.
pub async fn get(db: impl sqlx::PgExecutor<'_>, workspace: WorkspaceId, provider: &ProviderRef) -> Result<Provider> {
    let query = match provider {
        ProviderRef::Id(id) => {
            sqlx::query_as(concat!("select ", columns!(), " from providers where workspace_id = $1 and id = $2"))
                .bind(workspace)
                .bind(*id)
        }
        ProviderRef::Name(name) => {
            sqlx::query_as(concat!("select ", columns!(), " from providers where workspace_id = $1 and name = $2"))
                .bind(workspace)
                .bind(name.as_str())
        }
    };
    query.fetch_optional(db).await?.ok_or_else(Error::provider_not_found)
}
