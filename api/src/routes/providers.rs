//! Model providers. The API key goes in sealed and never comes back out.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::StatusCode;
use runq_shared::config::Secret;
use runq_shared::db::providers::{self, NewProvider, Provider};
use runq_shared::domain::{self, ProviderKind, ProviderRef};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{List, PageQuery};
use crate::error::{ErrorBody, Result};
use crate::extract::{Json, Manager, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(get))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateProvider {
    name: String,
    /// `openai` covers every OpenAI-compatible server.
    kind: ProviderKind,
    /// e.g. `https://api.openai.com/v1`, `https://api.anthropic.com/v1`.
    base_url: String,
    /// Stored encrypted; never returned (`has_api_key` says whether one is set).
    #[schema(value_type = Option<String>)]
    api_key: Option<String>,
}

/// Registers a provider in the caller's workspace.
#[utoipa::path(post, path = "/v1/providers", tag = "providers", security(("api_key" = [])), request_body = CreateProvider,
    responses((status = 201, body = Provider), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Json(body): Json<CreateProvider>,
) -> Result<(StatusCode, JsonResponse<Provider>)> {
    let new = NewProvider {
        name: domain::name("name", &body.name)?,
        kind: body.kind,
        base_url: domain::base_url(&body.base_url)?,
        api_key: body.api_key.filter(|k| !k.is_empty()).map(Secret::new),
    };
    let provider = providers::create(&state.db, &state.master_key, auth.workspace_id, new).await?;
    Ok((StatusCode::CREATED, JsonResponse(provider)))
}

/// Lists the workspace's providers.
#[utoipa::path(get, path = "/v1/providers", tag = "providers", security(("api_key" = [])), params(PageQuery),
    responses((status = 200, body = List<Provider>)))]
async fn list(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<Provider>>> {
    let page = query.page()?;
    Ok(List::new(page, providers::list(&state.db, auth.workspace_id, page).await?))
}

/// Shows one provider, by id or name.
#[utoipa::path(get, path = "/v1/providers/{id}", tag = "providers", security(("api_key" = [])),
    params(("id" = String, Path, description = "Provider id (`prv_…`) or name")),
    responses((status = 200, body = Provider), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<String>,
) -> Result<JsonResponse<Provider>> {
    let provider = ProviderRef::parse(&id)?;
    Ok(JsonResponse(providers::get(&state.db, auth.workspace_id, &provider).await?))
}
