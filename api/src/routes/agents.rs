//! Agents, their immutable versions, and deployment (rollback = deploying an older version).

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::StatusCode;
use runq_shared::db::agents::{self, Agent, AgentPatch, NewAgent};
use runq_shared::db::models::{self, ModelRef};
use runq_shared::db::versions::{self, DEFAULT_MAX_STEPS, NewVersion, Revision, Version};
use runq_shared::domain::{self, AgentRef, PromptMessage, ProviderRef, Slug};
use runq_shared::id::{ModelId, VersionId};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{List, PageQuery};
use crate::error::{Error, ErrorBody, Result};
use crate::extract::{Json, Manager, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, update, archive))
        .routes(routes!(create_version, list_versions))
        .routes(routes!(get_version))
        .routes(routes!(deploy))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateAgent {
    name: String,
    /// Defaults to a slug derived from `name`.
    slug: Option<String>,
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    /// With a system prompt (reference `002_…`) the agent is runnable at once: a first version
    /// on `model` (or the workspace's default model) is created and deployed.
    system_prompt: Option<String>,
    /// A registered model (`mdl_…` or the provider's model name) for that first version.
    model: Option<String>,
    /// Same as `model`, by id.
    #[schema(value_type = Option<String>)]
    default_model_id: Option<ModelId>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct UpdateAgent {
    name: Option<String>,
    slug: Option<String>,
    description: Option<String>,
    tags: Option<Vec<String>>,
    /// Deploys a new version: the deployed one with this system prompt.
    system_prompt: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct AgentListQuery {
    /// 1-based page number (default 1).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Include archived agents (default false).
    #[serde(default)]
    include_archived: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateVersion {
    /// Provider id (`prv_…`) or name.
    provider: String,
    model: String,
    system_prompt: Option<String>,
    #[serde(default)]
    messages: Vec<PromptMessage>,
    /// Defaults for the provider call (`temperature`, `max_tokens`, …); a run may override them.
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: serde_json::Map<String, serde_json::Value>,
    /// Built-in tool names (see `GET /v1/tools`).
    #[serde(default)]
    tools: Vec<String>,
    /// Most provider calls per run (tool loops), 1-64; default 8.
    max_steps: Option<i32>,
    /// Deploy this version at once.
    #[serde(default)]
    deploy: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Deploy {
    #[schema(value_type = String)]
    version_id: VersionId,
}

fn tags(tags: Vec<String>) -> Result<Vec<String>> {
    if tags.len() > 32 || tags.iter().any(|t| t.is_empty() || t.len() > 64) {
        return Err(Error::invalid("tags", "at most 32 tags of 1-64 characters"));
    }
    Ok(tags)
}

fn agent_ref(raw: &str) -> Result<AgentRef> {
    Ok(AgentRef::parse(raw)?)
}

/// Creates an agent. With `system_prompt` (or `model`), a first version is created and deployed
/// on that model or the workspace's default one; without, runs wait for a deployed version.
#[utoipa::path(post, path = "/v1/agents", tag = "agents", security(("api_key" = [])), request_body = CreateAgent,
    responses((status = 201, body = Agent), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Json(body): Json<CreateAgent>,
) -> Result<(StatusCode, JsonResponse<Agent>)> {
    let name = domain::name("name", &body.name)?;
    let slug = match &body.slug {
        Some(slug) => Slug::parse("slug", slug)?,
        None => Slug::from_name(&name)?,
    };
    let model = match (body.default_model_id, body.model) {
        (Some(id), _) => Some(ModelRef::Id(id)),
        (None, Some(model)) => Some(model.parse().map_or(ModelRef::Name(model), ModelRef::Id)),
        (None, None) => body.system_prompt.is_some().then_some(ModelRef::Default),
    };
    let first = match model {
        Some(model) => {
            let model = models::find(&state.db, auth.workspace_id, &model).await?;
            Some(NewVersion::on_model(&model, body.system_prompt, Vec::new()))
        }
        None => None,
    };
    let new = NewAgent { name, slug, description: body.description, tags: tags(body.tags)? };
    Ok((StatusCode::CREATED, JsonResponse(agents::create(&state.db, auth.workspace_id, new, first).await?)))
}

/// Lists the workspace's agents, archived ones only when asked.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", security(("api_key" = [])), params(AgentListQuery),
    responses((status = 200, body = List<Agent>)))]
async fn list(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Query(query): Query<AgentListQuery>,
) -> Result<JsonResponse<List<Agent>>> {
    let page = PageQuery { page: query.page, limit: query.limit }.page()?;
    let agents = agents::list(&state.db, auth.workspace_id, page, query.include_archived).await?;
    Ok(List::new(page, agents))
}

/// Shows an agent by id or slug.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", security(("api_key" = [])),
    params(("id" = String, Path, description = "Agent id (`agt_…`) or slug")),
    responses((status = 200, body = Agent), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<String>,
) -> Result<JsonResponse<Agent>> {
    Ok(JsonResponse(agents::get(&state.db, auth.workspace_id, &agent_ref(&id)?).await?))
}

/// Changes an agent's name, slug, description or tags; a `system_prompt` deploys a new version
/// with it.
#[utoipa::path(patch, path = "/v1/agents/{id}", tag = "agents", security(("api_key" = [])), request_body = UpdateAgent,
    params(("id" = String, Path, description = "Agent id (`agt_…`) or slug")),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<String>,
    Json(body): Json<UpdateAgent>,
) -> Result<JsonResponse<Agent>> {
    let patch = AgentPatch {
        name: body.name.as_deref().map(|n| domain::name("name", n)).transpose()?,
        slug: body.slug.as_deref().map(|s| Slug::parse("slug", s)).transpose()?,
        description: body.description,
        tags: body.tags.map(tags).transpose()?,
    };
    let agent = agent_ref(&id)?;
    if let Some(system_prompt) = body.system_prompt {
        let revision = Revision { system_prompt: Some(system_prompt), ..Revision::default() };
        versions::revise(&state.db, auth.workspace_id, &agent, revision).await?;
        state.targets.evict_workspace(auth.workspace_id);
    }
    let updated = agents::update(&state.db, auth.workspace_id, &agent, patch).await?;
    state.targets.evict_workspace(auth.workspace_id);
    Ok(JsonResponse(updated))
}

/// Archives an agent: it leaves listings and takes no new runs; its history stays.
#[utoipa::path(delete, path = "/v1/agents/{id}", tag = "agents", security(("api_key" = [])),
    params(("id" = String, Path, description = "Agent id (`agt_…`) or slug")),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
async fn archive(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<String>,
) -> Result<JsonResponse<Agent>> {
    let archived = agents::archive(&state.db, auth.workspace_id, &agent_ref(&id)?).await?;
    state.targets.evict_workspace(auth.workspace_id);
    Ok(JsonResponse(archived))
}

/// Creates an immutable version; `deploy: true` also deploys it.
#[utoipa::path(post, path = "/v1/agents/{id}/versions", tag = "agents", security(("api_key" = [])), request_body = CreateVersion,
    params(("id" = String, Path, description = "Agent id (`agt_…`) or slug")),
    responses((status = 201, body = Version), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_version(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<String>,
    Json(body): Json<CreateVersion>,
) -> Result<(StatusCode, JsonResponse<Version>)> {
    let max_steps = body.max_steps.unwrap_or(DEFAULT_MAX_STEPS);
    if !(1..=64).contains(&max_steps) {
        return Err(Error::invalid("max_steps", "must be between 1 and 64"));
    }
    let new = NewVersion {
        provider: ProviderRef::parse(&body.provider)?,
        model: domain::name("model", &body.model)?,
        system_prompt: body.system_prompt,
        messages: body.messages,
        parameters: body.parameters,
        tools: body.tools,
        max_steps,
        deploy: body.deploy,
    };
    let version = versions::create(&state.db, auth.workspace_id, &agent_ref(&id)?, new).await?;
    state.targets.evict_workspace(auth.workspace_id);
    Ok((StatusCode::CREATED, JsonResponse(version)))
}

/// Lists an agent's versions, newest first.
#[utoipa::path(get, path = "/v1/agents/{id}/versions", tag = "agents", security(("api_key" = [])),
    params(("id" = String, Path, description = "Agent id (`agt_…`) or slug"), PageQuery),
    responses((status = 200, body = List<Version>), (status = 404, body = ErrorBody)))]
async fn list_versions(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<Version>>> {
    let page = query.page()?;
    Ok(List::new(page, versions::list(&state.db, auth.workspace_id, &agent_ref(&id)?, page).await?))
}

/// Shows one version. Versions have no PATCH: they never change after creation.
#[utoipa::path(get, path = "/v1/agents/{id}/versions/{version_id}", tag = "agents", security(("api_key" = [])),
    params(("id" = String, Path, description = "Agent id or slug"), ("version_id" = String, Path, description = "`ver_…`")),
    responses((status = 200, body = Version), (status = 404, body = ErrorBody)))]
async fn get_version(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path((id, version)): Path<(String, VersionId)>,
) -> Result<JsonResponse<Version>> {
    Ok(JsonResponse(versions::get(&state.db, auth.workspace_id, &agent_ref(&id)?, version).await?))
}

/// Deploys a version of the agent; the previously deployed one stops serving new runs.
#[utoipa::path(post, path = "/v1/agents/{id}/deploy", tag = "agents", security(("api_key" = [])), request_body = Deploy,
    params(("id" = String, Path, description = "Agent id (`agt_…`) or slug")),
    responses((status = 200, body = Version), (status = 404, body = ErrorBody)))]
async fn deploy(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<String>,
    Json(body): Json<Deploy>,
) -> Result<JsonResponse<Version>> {
    let deployed = versions::deploy(&state.db, auth.workspace_id, &agent_ref(&id)?, body.version_id).await?;
    state.targets.evict_workspace(auth.workspace_id);
    Ok(JsonResponse(deployed))
}
