//! Operations: polling an async run or a batch, and a batch's results page by page.

use axum::Json as JsonResponse;
use axum::extract::State;
use runq_shared::db::operations::{self, Progress};
use runq_shared::db::runs;
use runq_shared::id::{OperationId, RunId};
use serde::Serialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::runs::RunObject;
use super::{List, PageQuery};
use crate::error::{ErrorBody, Result};
use crate::extract::{Caller, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get)).routes(routes!(results))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProgressBody {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
}

/// What a poller sees (seed 001's shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OperationBody {
    pub operation_id: OperationId,
    /// The run of a single-run operation (`async: true`, or a sync call that outlived its wait).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    /// `pending | running | succeeded | failed`.
    pub status: &'static str,
    pub check_url: String,
    pub progress: ProgressBody,
    /// The run object, once a single-run operation is done.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Where a batch's per-item results are listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results_url: Option<String>,
}

impl OperationBody {
    /// A freshly accepted operation.
    pub fn pending(id: OperationId, total: usize, run: Option<RunId>) -> Self {
        let progress = Progress { total: i64::try_from(total).unwrap_or(i64::MAX), ..Progress::default() };
        Self::new(id, &progress, run.is_none(), run, None)
    }

    fn new(id: OperationId, progress: &Progress, batch: bool, run: Option<RunId>, result: Option<Value>) -> Self {
        Self {
            operation_id: id,
            run_id: run,
            status: progress.status(),
            check_url: format!("/v1/operations/{id}"),
            progress: ProgressBody { total: progress.total, completed: progress.completed, failed: progress.failed },
            result,
            results_url: batch.then(|| format!("/v1/operations/{id}/results")),
        }
    }
}

/// Status and progress of an operation; a done single-run operation carries its run.
#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations", security(("api_key" = [])),
    params(("id" = String, Path, description = "`op_…`")),
    responses((status = 200, body = OperationBody), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<OperationId>,
) -> Result<JsonResponse<OperationBody>> {
    let (operation, progress) = operations::get(&state.db, auth.workspace_id, id).await?;
    if operation.kind == "batch" {
        return Ok(JsonResponse(OperationBody::new(id, &progress, true, None, None)));
    }
    let page = runq_shared::domain::Page::new(None, Some(1))?;
    let run = runs::of_operation(&state.db, id, page).await?.into_iter().next();
    let run_id = run.as_ref().map(|run| run.id);
    let result =
        run.filter(|_| progress.is_done()).map(|run| serde_json::to_value(RunObject::from(run)).unwrap_or_default());
    Ok(JsonResponse(OperationBody::new(id, &progress, false, run_id, result)))
}

/// The runs of an operation in item order, paginated.
#[utoipa::path(get, path = "/v1/operations/{id}/results", tag = "operations", security(("api_key" = [])),
    params(("id" = String, Path, description = "`op_…`"), PageQuery),
    responses((status = 200, body = List<RunObject>), (status = 404, body = ErrorBody)))]
async fn results(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<OperationId>,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<RunObject>>> {
    let page = query.page()?;
    let (operation, _) = operations::get(&state.db, auth.workspace_id, id).await?;
    let items = runs::of_operation(&state.db, id, page).await?.into_iter().map(RunObject::from).collect();
    Ok(List::new(page, runq_shared::db::Paged { items, total: i64::from(operation.total) }))
}
