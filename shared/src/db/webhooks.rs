//! Webhooks: endpoints, the workspace's default secret, and deliveries with their attempts.
//!
//! Deliveries are inserted by the `runs_webhook_events` trigger in the transaction that changes
//! a run's status (see the migration), never here. Workers take due deliveries with
//! [`claim_due`] (`for update skip locked`, and a lease on `next_attempt_at` so a worker that
//! dies mid-send leaves the delivery to another) and record each attempt with [`record`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;

use crate::db::Paged;
use crate::domain::Page;
use crate::id::{DeliveryId, EventId, WebhookId, WorkspaceId};
use crate::webhooks::EventType;
use crate::{Error, Result};

/// An endpoint as listed: never its secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: WebhookId,
    pub url: String,
    pub events: Vec<String>,
    /// Set when the receiver answered 410 Gone: nothing more is sent to it.
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const fn endpoint_not_found() -> Error {
    Error::NotFound { code: "webhook_not_found", message: "Webhook not found" }
}

pub async fn create(
    db: &PgPool,
    workspace: WorkspaceId,
    url: &str,
    events: &[EventType],
    secret_sealed: &[u8],
) -> Result<Endpoint> {
    let events: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    Ok(sqlx::query_as(
        "insert into webhook_endpoints (id, workspace_id, url, events, secret_sealed) values ($1, $2, $3, $4, $5)
         returning id, url, events, disabled_at, created_at",
    )
    .bind(WebhookId::new())
    .bind(workspace)
    .bind(url)
    .bind(&events)
    .bind(secret_sealed)
    .fetch_one(db)
    .await?)
}

pub async fn list(db: &PgPool, workspace: WorkspaceId, page: Page) -> Result<Paged<Endpoint>> {
    let items = sqlx::query_as(
        "select id, url, events, disabled_at, created_at from webhook_endpoints where workspace_id = $1
         order by created_at desc, id desc limit $2 offset $3",
    )
    .bind(workspace)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let (total,) = sqlx::query_as("select count(*) from webhook_endpoints where workspace_id = $1")
        .bind(workspace)
        .fetch_one(db)
        .await?;
    Ok(Paged { items, total })
}

/// Removes an endpoint and its delivery history; pending deliveries are not sent.
pub async fn delete(db: &PgPool, workspace: WorkspaceId, id: WebhookId) -> Result<()> {
    let done = sqlx::query("delete from webhook_endpoints where id = $1 and workspace_id = $2")
        .bind(id)
        .bind(workspace)
        .execute(db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(endpoint_not_found());
    }
    Ok(())
}

/// Replaces the workspace's default secret (signing deliveries to runs' own `webhook` URLs).
pub async fn set_default_secret(db: &PgPool, workspace: WorkspaceId, secret_sealed: &[u8]) -> Result<()> {
    sqlx::query(
        "insert into webhook_secrets (workspace_id, secret_sealed) values ($1, $2)
         on conflict (workspace_id) do update set secret_sealed = excluded.secret_sealed, created_at = now()",
    )
    .bind(workspace)
    .bind(secret_sealed)
    .execute(db)
    .await?;
    Ok(())
}

/// The workspace's default secret (sealed), made from `make` when it has none yet.
pub async fn default_secret(db: &PgPool, workspace: WorkspaceId, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>> {
    let (sealed,): (Vec<u8>,) = sqlx::query_as(
        "with made as (
             insert into webhook_secrets (workspace_id, secret_sealed) values ($1, $2)
             on conflict (workspace_id) do nothing returning secret_sealed)
         select secret_sealed from made
         union all
         select secret_sealed from webhook_secrets where workspace_id = $1
         limit 1",
    )
    .bind(workspace)
    .bind(make())
    .fetch_one(db)
    .await?;
    Ok(sealed)
}

/// One attempt at a delivery.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    /// The receiver's status; `null` when no response came.
    pub status_code: Option<i32>,
    /// The start of the response body, or why there was no response.
    pub response: Option<String>,
    pub duration_ms: i32,
}

/// A delivery as listed, with its attempts.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Delivery {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub event_type: String,
    /// `pending | delivered | failed | disabled`.
    pub status: String,
    pub url: String,
    #[schema(value_type = Object)]
    pub payload: Json<Value>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    #[schema(value_type = Vec<Attempt>)]
    pub attempts: Json<Vec<Attempt>>,
}

/// An endpoint's deliveries, newest first.
pub async fn deliveries(db: &PgPool, workspace: WorkspaceId, id: WebhookId, page: Page) -> Result<Paged<Delivery>> {
    let exists: Option<(WebhookId,)> =
        sqlx::query_as("select id from webhook_endpoints where id = $1 and workspace_id = $2")
            .bind(id)
            .bind(workspace)
            .fetch_optional(db)
            .await?;
    exists.ok_or(endpoint_not_found())?;
    let items = sqlx::query_as(
        "select d.id, d.event_id, d.event_type, d.status, d.url, d.payload, d.created_at, d.delivered_at,
                case when d.status = 'pending' then d.next_attempt_at end as next_attempt_at,
                coalesce((select jsonb_agg(jsonb_build_object('attempt', a.attempt, 'at', a.at,
                                  'status_code', a.status_code, 'response', a.response,
                                  'duration_ms', a.duration_ms) order by a.attempt)
                          from webhook_attempts a where a.delivery_id = d.id), '[]') as attempts
         from webhook_deliveries d where d.endpoint_id = $1
         order by d.created_at desc, d.id desc limit $2 offset $3",
    )
    .bind(id)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db)
    .await?;
    let (total,) =
        sqlx::query_as("select count(*) from webhook_deliveries where endpoint_id = $1").bind(id).fetch_one(db).await?;
    Ok(Paged { items, total })
}

/// A delivery a worker took to send.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub id: DeliveryId,
    pub workspace_id: WorkspaceId,
    /// `None`: a run's own `webhook` URL, signed with the workspace's default secret.
    pub endpoint_id: Option<WebhookId>,
    pub url: String,
    pub event_id: EventId,
    pub event_type: String,
    pub payload: Json<Value>,
    /// This attempt's number, from 1.
    pub attempts: i32,
    pub endpoint_secret: Option<Vec<u8>>,
}

/// Takes up to `limit` due deliveries and counts an attempt for each. While it is sent, the
/// delivery is not due again until `lease` passes, so one whose worker died is taken by another.
pub async fn claim_due(db: &PgPool, limit: i64, lease: Duration) -> Result<Vec<Due>> {
    Ok(sqlx::query_as(
        "update webhook_deliveries d
         set attempts = d.attempts + 1, next_attempt_at = now() + $2 * interval '1 millisecond'
         where d.id in (select id from webhook_deliveries where status = 'pending' and next_attempt_at <= now()
                        order by next_attempt_at limit $1 for update skip locked)
         returning d.id, d.workspace_id, d.endpoint_id, d.url, d.event_id, d.event_type, d.payload, d.attempts,
                   (select e.secret_sealed from webhook_endpoints e where e.id = d.endpoint_id) as endpoint_secret",
    )
    .bind(limit)
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .fetch_all(db)
    .await?)
}

/// What became of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Try again after this delay.
    Retry(Duration),
    /// No attempts left.
    Failed,
    /// The receiver answered 410 Gone: its endpoint is disabled, its other deliveries dropped.
    Disabled,
}

/// What an attempt got back.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub status_code: Option<u16>,
    pub response: Option<String>,
    pub duration: Duration,
}

/// Records an attempt of `due` and what follows from it, in one transaction.
pub async fn record(db: &PgPool, due: &Due, result: &AttemptResult, next: Next) -> Result<()> {
    let (status, retry_ms) = match next {
        Next::Delivered => ("delivered", None),
        Next::Retry(delay) => ("pending", Some(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))),
        Next::Failed => ("failed", None),
        Next::Disabled => ("disabled", None),
    };
    let mut tx = db.begin().await?;
    sqlx::query(
        "insert into webhook_attempts (delivery_id, attempt, status_code, response, duration_ms)
         values ($1, $2, $3, $4, $5) on conflict do nothing",
    )
    .bind(due.id)
    .bind(due.attempts)
    .bind(result.status_code.map(i32::from))
    .bind(&result.response)
    .bind(i32::try_from(result.duration.as_millis()).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update webhook_deliveries set status = $3,
                next_attempt_at = case when $4::bigint is null then next_attempt_at
                                       else now() + $4 * interval '1 millisecond' end,
                delivered_at = case when $3 = 'delivered' then now() end
         where id = $1 and attempts = $2 and status = 'pending'",
    )
    .bind(due.id)
    .bind(due.attempts)
    .bind(status)
    .bind(retry_ms)
    .execute(&mut *tx)
    .await?;
    if let (Next::Disabled, Some(endpoint)) = (next, due.endpoint_id) {
        sqlx::query("update webhook_endpoints set disabled_at = coalesce(disabled_at, now()) where id = $1")
            .bind(endpoint)
            .execute(&mut *tx)
            .await?;
        sqlx::query("update webhook_deliveries set status = 'disabled' where endpoint_id = $1 and status = 'pending'")
            .bind(endpoint)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
