//! Threads: conversations that runs continue.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::StatusCode;
use runq_shared::db::threads::{self, StoredMessage, Thread};
use runq_shared::domain::ThreadId;
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{List, PageQuery};
use crate::error::{ErrorBody, Result};
use crate::extract::{Caller, Json, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create)).routes(routes!(get)).routes(routes!(messages))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateThread {
    /// Your own id for the thread; generated (`thr_…`) when absent.
    #[serde(alias = "threadId", alias = "id")]
    thread_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// Creates a thread.
#[utoipa::path(post, path = "/v1/threads", tag = "threads", security(("api_key" = [])), request_body = CreateThread,
    responses((status = 201, body = Thread), (status = 409, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Json(body): Json<CreateThread>,
) -> Result<(StatusCode, JsonResponse<Thread>)> {
    let id = match body.thread_id {
        Some(id) => ThreadId::parse("thread_id", &id)?,
        None => ThreadId::generate(),
    };
    let metadata = body.metadata.unwrap_or_else(|| serde_json::json!({}));
    Ok((StatusCode::CREATED, JsonResponse(threads::create(&state.db, auth.workspace_id, &id, metadata).await?)))
}

/// Shows a thread.
#[utoipa::path(get, path = "/v1/threads/{id}", tag = "threads", security(("api_key" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Thread), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<JsonResponse<Thread>> {
    let id = ThreadId::parse("id", &id)?;
    Ok(JsonResponse(threads::get(&state.db, auth.workspace_id, &id).await?))
}

/// The thread's messages, oldest first.
#[utoipa::path(get, path = "/v1/threads/{id}/messages", tag = "threads", security(("api_key" = [])),
    params(("id" = String, Path), PageQuery), responses((status = 200, body = List<StoredMessage>), (status = 404, body = ErrorBody)))]
async fn messages(
    State(state): State<AppState>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<StoredMessage>>> {
    let page = query.page()?;
    let id = ThreadId::parse("id", &id)?;
    Ok(List::new(page, threads::messages(&state.db, auth.workspace_id, &id, page).await?))
}
