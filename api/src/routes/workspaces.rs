//! Workspaces: the caller's own (plan, limits, usage), and an operator's changes to any.

use axum::Json as JsonResponse;
use axum::extract::State;
use runq_shared::db::workspaces::{self, RunCounts, Workspace, WorkspacePatch};
use runq_shared::domain::{self, Plan};
use runq_shared::id::WorkspaceId;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ErrorBody, Result};
use crate::extract::{Admin, Caller, Json, Path, nullable};
use crate::ratelimit::Counted;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(current)).routes(routes!(update))
}

/// The caller's workspace as its key sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkspaceView {
    #[schema(value_type = String)]
    id: WorkspaceId,
    name: String,
    /// `free`, `pro` or `enterprise`.
    plan: String,
    limits: LimitsView,
    usage: UsageView,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LimitsView {
    /// Requests per window the calling key may make; `null` is unlimited.
    rate_limit_per_hour: Option<u32>,
    /// Length of a rate-limit window, in seconds.
    window_secs: u64,
    /// Most runs of the workspace running at once; `null` is no cap.
    concurrency_limit: Option<i32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UsageView {
    /// Requests of the calling key in the current window, this one included; `null` when the key
    /// is not rate limited.
    requests_in_window: Option<u64>,
    #[serde(flatten)]
    runs: RunCounts,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct UpdateWorkspace {
    plan: Option<Plan>,
    /// Requests per window for keys without their own limit; `null` returns to the plan's default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>)]
    rate_limit_per_hour: Option<Option<i32>>,
    /// Most runs running at once; `null` removes the cap.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>)]
    concurrency_limit: Option<Option<i32>>,
}

fn limit(field: &str, raw: Option<Option<i32>>) -> Result<Option<Option<i32>>> {
    Ok(raw.map(|value| value.map(|n| domain::positive_limit(field, n)).transpose()).transpose()?)
}

/// The caller's workspace: plan, the calling key's effective limits, and usage.
#[utoipa::path(get, path = "/v1/workspace", tag = "workspaces", security(("api_key" = [])),
    responses((status = 200, body = WorkspaceView), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn current(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Counted(counted): Counted,
) -> Result<JsonResponse<WorkspaceView>> {
    let (workspace, runs) = tokio::try_join!(
        workspaces::get(&state.db, auth.workspace_id),
        workspaces::run_counts(&state.db, auth.workspace_id)
    )?;
    Ok(JsonResponse(WorkspaceView {
        id: workspace.id,
        name: workspace.name,
        plan: workspace.plan,
        limits: LimitsView {
            rate_limit_per_hour: auth.rate_limit,
            window_secs: state.rate_limiter.window_secs(),
            concurrency_limit: workspace.concurrency_limit,
        },
        usage: UsageView { requests_in_window: counted.map(|info| info.count), runs },
    }))
}

/// Changes a workspace's plan and limits (admin keys only). Other replicas apply a new rate
/// limit once their cached key verdicts expire (`RUNQ_AUTH_CACHE_TTL_MS`).
#[utoipa::path(patch, path = "/v1/workspaces/{id}", tag = "workspaces", security(("api_key" = [])),
    request_body = UpdateWorkspace, params(("id" = String, Path, description = "Workspace id (`wsp_…`)")),
    responses((status = 200, body = Workspace), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<WorkspaceId>,
    Json(body): Json<UpdateWorkspace>,
) -> Result<JsonResponse<Workspace>> {
    let patch = WorkspacePatch {
        plan: body.plan,
        rate_limit_per_hour: limit("rate_limit_per_hour", body.rate_limit_per_hour)?,
        concurrency_limit: limit("concurrency_limit", body.concurrency_limit)?,
    };
    let workspace = workspaces::update(&state.db, id, &patch).await?;
    state.auth.evict_workspace(id);
    state.targets.evict_workspace(id);
    Ok(JsonResponse(workspace))
}
