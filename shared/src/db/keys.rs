//! API keys: minted here, stored as hashes, looked up on every authenticated request.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::Result;
use crate::crypto::ApiKey;
use crate::db::Paged;
use crate::domain::{Page, Plan, Scope};
use crate::id::{KeyId, WorkspaceId};
use crate::ratelimit::{PlanLimits, effective_limit};

/// A key as listed: never the secret, only its display prefix.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiKeyRecord {
    pub id: KeyId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    /// Requests per rate-limit window, overriding the workspace's limit; `null` when not set.
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
    /// Requests per rate-limit window this key is held to ([`effective_limit`]); `None` is
    /// unlimited.
    pub rate_limit: Option<u32>,
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

/// Mints a key for `workspace`, optionally with its own rate limit; the returned [`ApiKey`] is
/// the only time the secret exists.
pub async fn create(
    db: &PgPool,
    workspace: WorkspaceId,
    name: &str,
    scopes: &[Scope],
    rate_limit_per_hour: Option<i32>,
) -> Result<(ApiKeyRecord, ApiKey)> {
    let key = ApiKey::generate();
    let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let record = sqlx::query_as(concat!(
        "insert into api_keys (id, workspace_id, name, prefix, key_hash, scopes, rate_limit_per_hour)
         values ($1, $2, $3, $4, $5, $6, $7) returning ",
        columns!(),
        ""
    ))
    .bind(KeyId::new())
    .bind(workspace)
    .bind(name)
    .bind(key.display_prefix())
    .bind(&key.hash()[..])
    .bind(&scopes)
    .bind(rate_limit_per_hour)
    .fetch_one(db)
    .await?;
    Ok((record, key))
}

#[derive(sqlx::FromRow)]
struct AuthRow {
    id: KeyId,
    workspace_id: WorkspaceId,
    scopes: Vec<String>,
    key_limit: Option<i32>,
    workspace_limit: Option<i32>,
    plan: String,
}

/// Resolves a key hash to its workspace, scopes and effective rate limit (one query, joining
/// the workspace); revoked and unknown keys resolve to `None`.
pub async fn authenticate(db: &PgPool, hash: &[u8; 32], plans: &PlanLimits) -> Result<Option<KeyAuth>> {
    let row: Option<AuthRow> = sqlx::query_as(
        "select k.id, k.workspace_id, k.scopes, k.rate_limit_per_hour as key_limit,
                w.rate_limit_per_hour as workspace_limit, w.plan
         from api_keys k join workspaces w on w.id = k.workspace_id
         where k.key_hash = $1 and k.revoked_at is null",
    )
    .bind(&hash[..])
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| {
        // the column's check constraint admits only known plans
        let plan = Plan::parse(&row.plan).unwrap_or(Plan::Free);
        KeyAuth {
            key_id: row.id,
            workspace_id: row.workspace_id,
            scopes: row.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            rate_limit: effective_limit(row.key_limit, row.workspace_limit, plan, plans),
        }
    }))
}

/// Sets or clears (`None`) a live key's own rate limit, whatever its workspace (an operator's
/// change). `None` when there is no such live key.
pub async fn set_rate_limit(db: &PgPool, id: KeyId, rate_limit_per_hour: Option<i32>) -> Result<Option<ApiKeyRecord>> {
    Ok(sqlx::query_as(concat!(
        "update api_keys set rate_limit_per_hour = $2 where id = $1 and revoked_at is null returning ",
        columns!(),
        ""
    ))
    .bind(id)
    .bind(rate_limit_per_hour)
    .fetch_optional(db)
    .await?)
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
