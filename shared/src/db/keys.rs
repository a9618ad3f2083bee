//! API keys: minted here, stored as hashes, looked up on every authenticated request.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::Result;
use crate::crypto::ApiKey;
use crate::db::Paged;
use crate::domain::{Page, Scope};
use crate::id::{KeyId, WorkspaceId};

/// A key as listed: never the secret, only its display prefix.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiKeyRecord {
    pub id: KeyId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub rate_limit_per_hour: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who a presented key speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAuth {
    pub key_id: KeyId,
    pub workspace_id: WorkspaceId,
    pub scopes: Vec<Scope>,
}

impl KeyAuth {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

macro_rules! columns {
    () => {
        "id, workspace_id, name, prefix, scopes, rate_limit_per_hour, created_at, revoked_at"
    };
}

/// Mints a key for `workspace`; the returned [`ApiKey`] is the only time the secret exists.
pub async fn create(
    db: &PgPool,
    workspace: WorkspaceId,
    name: &str,
    scopes: &[Scope],
) -> Result<(ApiKeyRecord, ApiKey)> {
    let key = ApiKey::generate();
    let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let record = sqlx::query_as(concat!(
        "insert into api_keys (id, workspace_id, name, prefix, key_hash, scopes)
         values ($1, $2, $3, $4, $5, $6) returning ",
        columns!(),
        ""
    ))
    .bind(KeyId::new())
    .bind(workspace)
    .bind(name)
    .bind(key.display_prefix())
    .bind(&key.hash()[..])
    .bind(&scopes)
    .fetch_one(db)
    .await?;
    Ok((record, key))
}

/// Resolves a key hash to its workspace and scopes; revoked and unknown keys resolve to `None`.
pub async fn authenticate(db: &PgPool, hash: &[u8; 32]) -> Result<Option<KeyAuth>> {
    let row: Option<(KeyId, WorkspaceId, Vec<String>)> =
        sqlx::query_as("select id, workspace_id, scopes from api_keys where key_hash = $1 and revoked_at is null")
            .bind(&hash[..])
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(key_id, workspace_id, scopes)| KeyAuth {
        key_id,
        workspace_id,
        scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
    }))
}

pub async fn list(db: &PgPool, workspace: WorkspaceId, page: Page) -> Result<Paged<ApiKeyRecord>> {
    let items = sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from api_keys where workspace_id = $1
         order by created_at, id limit $2 offset $3"
    ))
    .bind(workspace)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let (total,) =
        sqlx::query_as("select count(*) from api_keys where workspace_id = $1").bind(workspace).fetch_one(db).await?;
    Ok(Paged { items, total })
}

/// Revokes a key of `workspace`. Returns the revoked key's hash (so caches can drop it), or
/// `None` when the workspace has no such live key.
pub async fn revoke(db: &PgPool, workspace: WorkspaceId, id: KeyId) -> Result<Option<[u8; 32]>> {
    let row: Option<(Vec<u8>,)> = sqlx::query_as(
        "update api_keys set revoked_at = now()
         where id = $1 and workspace_id = $2 and revoked_at is null returning key_hash",
    )
    .bind(id)
    .bind(workspace)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|(hash,)| hash.try_into().ok()))
}
