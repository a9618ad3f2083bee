//! A workspace's HTTP tools: the model's arguments are POSTed (or sent with another method) to a
//! URL; the response is the tool's result. The auth header's value is sealed with the master key
//! and never returned.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool};

use crate::config::Secret;
use crate::crypto::MasterKey;
use crate::domain::is_builtin_tool;
use crate::error::ResultExt;
use crate::id::{ToolId, WorkspaceId};
use crate::{Error, Result};

/// A tool as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct HttpTool {
    pub id: ToolId,
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    #[schema(value_type = Object)]
    pub parameters: Json<Value>,
    pub url: String,
    pub method: String,
    #[schema(value_type = Object)]
    pub headers: Json<Map<String, Value>>,
    /// The auth header's name; its value is never returned.
    pub auth_header: Option<String>,
    pub has_auth: bool,
    pub timeout_ms: i32,
    pub requires_approval: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A tool as a worker calls it (the auth value still sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    pub parameters: Value,
    pub url: String,
    pub method: String,
    pub headers: Map<String, Value>,
    pub auth_header: Option<String>,
    /// hex of the sealed auth value
    pub auth_value_sealed: Option<String>,
    pub timeout_ms: i32,
    pub requires_approval: bool,
}

/// Everything a tool is made of; a PATCH replaces the fields it names.
#[derive(Debug)]
pub struct ToolFields {
    pub name: String,
    pub description: String,
    pub parameters: Value,
    pub url: String,
    pub method: String,
    pub headers: Map<String, Value>,
    /// `(header name, value)`; `None` keeps (on update) or omits (on create) the auth header.
    pub auth: Option<Option<(String, Secret<String>)>>,
    pub timeout_ms: i32,
    pub requires_approval: bool,
}

const COLUMNS: &str = "id, name, description, parameters, url, method, headers, auth_header,
     auth_value_sealed is not null as has_auth, timeout_ms, requires_approval, created_at, updated_at";

fn name_taken(name: &str) -> Error {
    Error::conflict("tool_name_taken", format!("A tool named {name:?} already exists"))
}

pub const fn tool_not_found() -> Error {
    Error::NotFound { code: "tool_not_found", message: "Tool not found" }
}

pub async fn create(db: &PgPool, key: &MasterKey, workspace: WorkspaceId, tool: ToolFields) -> Result<HttpTool> {
    if is_builtin_tool(&tool.name) {
        return Err(name_taken(&tool.name));
    }
    let (auth_header, sealed) = match &tool.auth {
        Some(Some((header, value))) => (Some(header.as_str()), Some(key.seal(value.expose().as_bytes()))),
        _ => (None, None),
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into tools (id, workspace_id, name, description, parameters, url, method, headers, auth_header,
                            auth_value_sealed, timeout_ms, requires_approval)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) returning {COLUMNS}"
    )))
    .bind(ToolId::new())
    .bind(workspace)
    .bind(&tool.name)
    .bind(&tool.description)
    .bind(Json(&tool.parameters))
    .bind(&tool.url)
    .bind(&tool.method)
    .bind(Json(&tool.headers))
    .bind(auth_header)
    .bind(sealed)
    .bind(tool.timeout_ms)
    .bind(tool.requires_approval)
    .fetch_one(db)
    .await
    .on_constraint("tools_workspace_name_key", || name_taken(&tool.name))
}

/// The workspace's tools, by name.
pub async fn list(db: &PgPool, workspace: WorkspaceId) -> Result<Vec<HttpTool>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from tools where workspace_id = $1 order by name"
    )))
    .bind(workspace)
    .fetch_all(db)
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, workspace: WorkspaceId, id: ToolId) -> Result<HttpTool> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("select {COLUMNS} from tools where workspace_id = $1 and id = $2")))
        .bind(workspace)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(tool_not_found)
}

/// Replaces a tool's fields (the auth header only when `tool.auth` is `Some`).
pub async fn update(
    db: &PgPool,
    key: &MasterKey,
    workspace: WorkspaceId,
    id: ToolId,
    tool: ToolFields,
) -> Result<HttpTool> {
    let (replace_auth, auth_header, sealed) = match &tool.auth {
        None => (false, None, None),
        Some(None) => (true, None, None),
        Some(Some((header, value))) => (true, Some(header.as_str()), Some(key.seal(value.expose().as_bytes()))),
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update tools set name = $3, description = $4, parameters = $5, url = $6, method = $7, headers = $8,
                auth_header = case when $9 then $10 else auth_header end,
                auth_value_sealed = case when $9 then $11 else auth_value_sealed end,
                timeout_ms = $12, requires_approval = $13, updated_at = now()
         where workspace_id = $1 and id = $2 returning {COLUMNS}"
    )))
    .bind(workspace)
    .bind(id)
    .bind(&tool.name)
    .bind(&tool.description)
    .bind(Json(&tool.parameters))
    .bind(&tool.url)
    .bind(&tool.method)
    .bind(Json(&tool.headers))
    .bind(replace_auth)
    .bind(auth_header)
    .bind(sealed)
    .bind(tool.timeout_ms)
    .bind(tool.requires_approval)
    .fetch_optional(db)
    .await
    .on_constraint("tools_workspace_name_key", || name_taken(&tool.name))?
    .ok_or_else(tool_not_found)
}

pub async fn delete(db: &PgPool, workspace: WorkspaceId, id: ToolId) -> Result<()> {
    let done = sqlx::query("delete from tools where workspace_id = $1 and id = $2")
        .bind(workspace)
        .bind(id)
        .execute(db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(tool_not_found());
    }
    Ok(())
}

/// Refuses the first of `names` that is neither built in nor a tool of the workspace.
pub async fn check_names(db: impl PgExecutor<'_>, workspace: WorkspaceId, field: &str, names: &[String]) -> Result<()> {
    let custom: Vec<&str> = names.iter().map(String::as_str).filter(|n| !is_builtin_tool(n)).collect();
    if custom.is_empty() {
        return Ok(());
    }
    let unknown: Option<(String,)> = sqlx::query_as(
        "select n from unnest($2::text[]) as n
         where not exists (select 1 from tools t where t.workspace_id = $1 and t.name = n) limit 1",
    )
    .bind(workspace)
    .bind(&custom)
    .fetch_optional(db)
    .await?;
    match unknown {
        Some((name,)) => Err(Error::invalid(field, format!("unknown tool {name:?}; see GET /v1/tools"))),
        None => Ok(()),
    }
}
