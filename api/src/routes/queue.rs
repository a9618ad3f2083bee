//! The caller's queue at a glance: runs waiting, runs in flight, and the oldest wait.

use axum::Json as JsonResponse;
use axum::extract::State;
use chrono::{DateTime, Utc};
use runq_shared::db::backlog;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Result;
use crate::extract::Caller;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueBody {
    /// Runs waiting to start (`queued`).
    pub queued: i64,
    /// Runs executing on a worker (`running`).
    pub running: i64,
    /// When the oldest queued run was recorded.
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// How long the oldest queued run has waited, in milliseconds.
    pub oldest_wait_ms: Option<i64>,
}

/// Depth of the workspace's queue: queued and running runs, and the oldest queued run's wait.
#[utoipa::path(get, path = "/v1/queue", tag = "runs", security(("api_key" = [])),
    responses((status = 200, body = QueueBody)))]
async fn get(State(state): State<AppState>, Caller(auth): Caller) -> Result<JsonResponse<QueueBody>> {
    let backlog = backlog::get(&state.db, auth.workspace_id).await?;
    Ok(JsonResponse(QueueBody {
        queued: backlog.queued,
        running: backlog.running,
        oldest_queued_at: backlog.oldest_queued_at,
        oldest_wait_ms: backlog.oldest_queued_at.map(|at| (Utc::now() - at).num_milliseconds().max(0)),
    }))
}
