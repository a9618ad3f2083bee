//! Approvals: a tool call that needs a person's yes before it runs. The worker records one when
//! it pauses the run (`requires_action`); approving or denying it (or its expiry) puts the run back
//! on the queue once none of its calls is still pending, and the worker that resumes it reads the
//! decisions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;

use crate::db::Paged;
use crate::domain::Page;
use crate::id::{ApprovalId, RunId, WorkspaceId};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Approval {
    pub id: ApprovalId,
    pub run_id: RunId,
    pub tool_call_id: String,
    pub tool_name: String,
    #[schema(value_type = Object)]
    pub arguments: Json<Value>,
    /// sha256 (hex) of the canonical JSON arguments: what `X-Payload-Hash` / `payload_hash` name.
    pub payload_hash: String,
    /// `pending | approved | denied | expired`
    pub status: String,
    pub reason: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A call the worker pauses on.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub id: ApprovalId,
    pub tool_call_id: String,
    pub tool_name: String,
    pub arguments: Value,
    pub payload_hash: String,
}

impl NewApproval {
    pub fn new(tool_call_id: &str, tool_name: &str, arguments: &Value) -> Self {
        Self {
            id: ApprovalId::new(),
            tool_call_id: tool_call_id.to_owned(),
            tool_name: tool_name.to_owned(),
            arguments: arguments.clone(),
            payload_hash: payload_hash(arguments),
        }
    }
}

/// sha256 (hex) of `arguments` as canonical JSON: object keys sorted, no whitespace. What
/// reference `003_…` sends as `X-Payload-Hash`.
pub fn payload_hash(arguments: &Value) -> String {
    fn canonical(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    canonical(&map[key], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut text = String::new();
    canonical(arguments, &mut text);
    hex::encode(crate::crypto::digest(text.as_bytes()))
}

/// A run that can go on: its job is to be pushed.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Resumed {
    pub run: RunId,
    pub workspace: WorkspaceId,
    /// The workspace's concurrency cap, carried in the job.
    pub cap: Option<i32>,
}

/// A person's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

const COLUMNS: &str =
    "id, run_id, tool_call_id, tool_name, arguments, payload_hash, status, reason, expires_at, decided_at, created_at";

fn not_found() -> Error {
    Error::NotFound { code: "approval_not_found", message: "Approval not found" }
}

/// Every approval of a run (pending or decided), oldest first.
pub async fn of_run(db: &PgPool, run: RunId) -> Result<Vec<Approval>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from approvals where run_id = $1 order by created_at, id"
    )))
    .bind(run)
    .fetch_all(db)
    .await?)
}

/// The workspace's approvals, newest first, optionally in one status.
pub async fn list(db: &PgPool, workspace: WorkspaceId, status: Option<&str>, page: Page) -> Result<Paged<Approval>> {
    const WHERE: &str = "where workspace_id = $1 and ($2::text is null or status = $2)";
    let items = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from approvals {WHERE} order by created_at desc, id desc limit $3 offset $4"
    )))
    .bind(workspace)
    .bind(status)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let (total,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("select count(*) from approvals {WHERE}")))
        .bind(workspace)
        .bind(status)
        .fetch_one(db)
        .await?;
    Ok(Paged { items, total })
}

pub async fn get(db: &PgPool, workspace: WorkspaceId, id: ApprovalId) -> Result<Approval> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("select {COLUMNS} from approvals where workspace_id = $1 and id = $2")))
        .bind(workspace)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(not_found)
}

/// Decides a pending approval. When it was the run's last pending one, the run goes back to the
/// queue (its deadline restarts: the wait for a person is not the run's time) and is returned,
/// for the caller to push its job.
pub async fn decide(
    db: &PgPool,
    workspace: WorkspaceId,
    id: ApprovalId,
    decision: Decision,
    reason: Option<&str>,
    payload_hash: Option<&str>,
) -> Result<(Approval, Option<Resumed>)> {
    let mut tx = db.begin().await?;
    let current: Approval = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from approvals where workspace_id = $1 and id = $2 for update"
    )))
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(not_found)?;
    if current.status != "pending" {
        return Err(Error::conflict("approval_decided", format!("This approval is already {}", current.status)));
    }
    if payload_hash.is_some_and(|hash| !hash.eq_ignore_ascii_case(&current.payload_hash)) {
        return Err(Error::conflict("payload_hash_mismatch", "payload_hash does not match the tool call's arguments"));
    }
    let status = match decision {
        Decision::Approve => "approved",
        Decision::Deny => "denied",
    };
    let decided: Approval = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update approvals set status = $2, reason = $3, decided_at = now() where id = $1 returning {COLUMNS}"
    )))
    .bind(id)
    .bind(status)
    .bind(reason)
    .fetch_one(&mut *tx)
    .await?;
    let resumed = resume_if_decided(&mut tx, current.run_id).await?;
    tx.commit().await?;
    Ok((decided, resumed))
}

/// Puts the run back on the queue when it waits and none of its approvals is pending.
async fn resume_if_decided(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, run: RunId) -> Result<Option<Resumed>> {
    Ok(sqlx::query_as(
        "update runs set status = 'queued', enqueued_at = now(),
                deadline_at = now() + timeout_ms * interval '1 millisecond'
         where id = $1 and status = 'requires_action'
           and not exists (select 1 from approvals where run_id = $1 and status = 'pending')
         returning id as run, workspace_id as workspace,
                   (select concurrency_limit from workspaces w where w.id = runs.workspace_id) as cap",
    )
    .bind(run)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Expires pending approvals past their time (as denials) and returns the runs that can go on.
pub async fn expire(db: &PgPool, limit: i64) -> Result<Vec<Resumed>> {
    let mut tx = db.begin().await?;
    let expired: Vec<(RunId,)> = sqlx::query_as(
        "update approvals set status = 'expired', reason = 'the approval expired', decided_at = now()
         where id in (select id from approvals where status = 'pending' and expires_at <= now()
                      order by expires_at limit $1 for update skip locked)
         returning run_id",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut resumed = Vec::new();
    for (run,) in expired {
        resumed.extend(resume_if_decided(&mut tx, run).await?);
    }
    tx.commit().await?;
    Ok(resumed)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_payload_hash_does_not_depend_on_key_order_or_spacing() {
        let a = payload_hash(&json!({"b": 1, "a": {"y": [1, 2], "x": "é"}}));
        let b = payload_hash(&serde_json::from_str(r#"{ "a": {"x": "é", "y": [1,2]}, "b": 1 }"#).unwrap());
        assert_eq!(a, b);
        // sha256 of `{"a":1}`
        assert_eq!(payload_hash(&json!({"a": 1})), "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862");
    }
}
