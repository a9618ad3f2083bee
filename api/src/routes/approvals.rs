//! Approvals (reference `003_…`): tool calls waiting for a person. Approving or denying the last
//! pending call of a run puts the run back on the queue; any worker continues it.

use axum::Json as JsonResponse;
use axum::extract::State;
use runq_shared::db::approvals::{self, Approval, Decision};
use runq_shared::id::ApprovalId;
use runq_shared::queue::{self, Job};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{List, PageQuery};
use crate::error::{Error, ErrorBody, Result};
use crate::extract::{Caller, OptionalJson, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(get)).routes(routes!(approve)).routes(routes!(deny))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ApprovalListQuery {
    /// 1-based page number (default 1).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `pending`, `approved`, `denied` or `expired`.
    status: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct DecisionBody {
    /// Why; a denial's reason is what the model is told.
    reason: Option<String>,
    /// sha256 (hex) of the canonical JSON arguments the decider saw; a mismatch is 409.
    payload_hash: Option<String>,
}

/// The workspace's approvals, newest first (`?status=pending` for those waiting).
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", security(("api_key" = [])), params(ApprovalListQuery),
    responses((status = 200, body = List<Approval>), (status = 400, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Query(q): Query<ApprovalListQuery>,
) -> Result<JsonResponse<List<Approval>>> {
    let page = PageQuery { page: q.page, limit: q.limit }.page()?;
    if let Some(status) = q.status.as_deref().filter(|s| !matches!(*s, "pending" | "approved" | "denied" | "expired")) {
        return Err(Error::invalid("status", format!("{status:?} is not pending, approved, denied or expired")));
    }
    Ok(List::new(page, approvals::list(&state.db, auth.workspace_id, q.status.as_deref(), page).await?))
}

/// Shows an approval.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", security(("api_key" = [])),
    params(("id" = String, Path, description = "`apr_…`")),
    responses((status = 200, body = Approval), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<ApprovalId>,
) -> Result<JsonResponse<Approval>> {
    Ok(JsonResponse(approvals::get(&state.db, auth.workspace_id, id).await?))
}

async fn decide(
    state: &AppState,
    auth: &Caller,
    id: ApprovalId,
    decision: Decision,
    body: DecisionBody,
) -> Result<Approval> {
    let workspace = auth.0.workspace_id;
    let hash = body.payload_hash.as_deref();
    let (approval, resumed) =
        approvals::decide(&state.db, workspace, id, decision, body.reason.as_deref(), hash).await?;
    if let Some(resumed) = resumed {
        let job = Job::new(resumed.run, resumed.workspace, resumed.cap);
        // a lost push is not lost work: the reconciler pushes runs that stay queued
        queue::push(&mut state.broker.conn.clone(), state.broker.queue(), &[job]).await?;
    }
    Ok(approval)
}

/// Approves the tool call: the tool runs and the run goes on.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals", security(("api_key" = [])),
    request_body = DecisionBody, params(("id" = String, Path, description = "`apr_…`")),
    responses((status = 200, body = Approval), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ApprovalId>,
    OptionalJson(body): OptionalJson<DecisionBody>,
) -> Result<JsonResponse<Approval>> {
    Ok(JsonResponse(decide(&state, &caller, id, Decision::Approve, body.unwrap_or_default()).await?))
}

/// Denies the tool call: the model is told so (with the reason) and the run goes on.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals", security(("api_key" = [])),
    request_body = DecisionBody, params(("id" = String, Path, description = "`apr_…`")),
    responses((status = 200, body = Approval), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn deny(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ApprovalId>,
    OptionalJson(body): OptionalJson<DecisionBody>,
) -> Result<JsonResponse<Approval>> {
    Ok(JsonResponse(decide(&state, &caller, id, Decision::Deny, body.unwrap_or_default()).await?))
}
