//! Reference `002_…`'s management surface, as a layer over runq's own resources: LLM providers
//! (the same providers as `/v1/providers`) and their models, capabilities (the built-in tools),
//! API keys under `/v1/auth/api-keys` (the same keys as `/v1/api-keys`), and the auth config.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use runq_shared::config::Secret;
use runq_shared::db::keys;
use runq_shared::db::models::{self, LlmModel, NewModel};
use runq_shared::db::providers::{self, NewProvider, Provider};
use runq_shared::db::versions::{self, Revision};
use runq_shared::db::{Paged, agents};
use runq_shared::domain::{self, AgentRef, ProviderKind, ProviderRef, Scope, ToolSpec, builtin_tools};
use runq_shared::id::{KeyId, ProviderId};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{List, PageQuery};
use crate::error::{Error, ErrorBody, Result};
use crate::extract::{Caller, Json, Manager, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_provider, list_providers))
        .routes(routes!(create_model, list_provider_models))
        .routes(routes!(list_models))
        .routes(routes!(capabilities))
        .routes(routes!(agent_capabilities, set_agent_capabilities))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(delete_key))
        .routes(routes!(auth_config))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateLlmProvider {
    name: String,
    provider_type: ProviderKind,
    /// Stored encrypted; never returned.
    #[schema(value_type = Option<String>)]
    api_key: Option<String>,
    /// Default: the provider's public API.
    base_url: Option<String>,
}

/// A provider as reference `002_…` shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LlmProvider {
    id: ProviderId,
    name: String,
    provider_type: String,
    base_url: String,
    has_api_key: bool,
    created_at: DateTime<Utc>,
}

impl From<Provider> for LlmProvider {
    fn from(p: Provider) -> Self {
        Self {
            id: p.id,
            name: p.name,
            provider_type: p.kind,
            base_url: p.base_url,
            has_api_key: p.has_api_key,
            created_at: p.created_at,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateLlmModel {
    /// The provider's name for the model (`gpt-4o`).
    model_id: String,
    /// Default: `model_id`.
    display_name: Option<String>,
    context_window: Option<i32>,
    /// Make it the workspace's default model (the first model is the default anyway).
    #[serde(default)]
    is_default: bool,
}

/// A capability: a built-in tool an agent may use.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Capability {
    id: &'static str,
    #[serde(flatten)]
    tool: ToolSpec,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CapabilityList {
    data: Vec<Capability>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentCapabilities {
    capability_ids: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateAuthKey {
    name: String,
    /// Reference `002_…` scopes (`agents:read`, `sessions:write`, …) or runq's (`run`, `manage`).
    scopes: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedAuthKey {
    id: KeyId,
    name: String,
    /// Shown this once.
    key: String,
    /// The scopes as asked for.
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuthConfig {
    /// Always `full`: every route takes an API key.
    mode: &'static str,
    password_auth_enabled: bool,
    oauth_providers: Vec<String>,
    signup_enabled: bool,
}

/// Registers an LLM provider (also listed under `/v1/providers`).
#[utoipa::path(post, path = "/v1/llm-providers", tag = "llm", security(("api_key" = [])), request_body = CreateLlmProvider,
    responses((status = 201, body = LlmProvider), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_provider(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Json(body): Json<CreateLlmProvider>,
) -> Result<(StatusCode, JsonResponse<LlmProvider>)> {
    let kind = body.provider_type;
    let new = NewProvider {
        name: domain::name("name", &body.name)?,
        kind,
        base_url: domain::base_url(body.base_url.as_deref().unwrap_or(kind.default_base_url()))?,
        api_key: body.api_key.filter(|k| !k.is_empty()).map(Secret::new),
    };
    let provider = providers::create(&state.db, &state.master_key, auth.workspace_id, new).await?;
    Ok((StatusCode::CREATED, JsonResponse(provider.into())))
}

/// Lists the workspace's LLM providers.
#[utoipa::path(get, path = "/v1/llm-providers", tag = "llm", security(("api_key" = [])), params(PageQuery),
    responses((status = 200, body = List<LlmProvider>)))]
async fn list_providers(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<LlmProvider>>> {
    let page = query.page()?;
    let found = providers::list(&state.db, auth.workspace_id, page).await?;
    Ok(List::new(page, Paged { items: found.items.into_iter().map(LlmProvider::from).collect(), total: found.total }))
}

/// Registers a model of the provider; the workspace's first model becomes its default.
#[utoipa::path(post, path = "/v1/llm-providers/{id}/models", tag = "llm", security(("api_key" = [])),
    request_body = CreateLlmModel, params(("id" = String, Path, description = "Provider id (`prv_…`) or name")),
    responses((status = 201, body = LlmModel), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_model(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<String>,
    Json(body): Json<CreateLlmModel>,
) -> Result<(StatusCode, JsonResponse<LlmModel>)> {
    let model_id = domain::name("model_id", &body.model_id)?;
    let new = NewModel {
        display_name: domain::name("display_name", body.display_name.as_deref().unwrap_or(&model_id))?,
        model_id,
        context_window: body.context_window.map(|n| domain::positive_limit("context_window", n)).transpose()?,
        is_default: body.is_default,
    };
    let model = models::create(&state.db, auth.workspace_id, &ProviderRef::parse(&id)?, new).await?;
    Ok((StatusCode::CREATED, JsonResponse(model)))
}

/// Lists one provider's models.
#[utoipa::path(get, path = "/v1/llm-providers/{id}/models", tag = "llm", security(("api_key" = [])),
    params(("id" = String, Path, description = "Provider id (`prv_…`) or name"), PageQuery),
    responses((status = 200, body = List<LlmModel>), (status = 404, body = ErrorBody)))]
async fn list_provider_models(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<LlmModel>>> {
    let page = query.page()?;
    let provider = ProviderRef::parse(&id)?;
    Ok(List::new(page, models::list(&state.db, auth.workspace_id, Some(&provider), page).await?))
}

/// Lists every model of the workspace.
#[utoipa::path(get, path = "/v1/llm-models", tag = "llm", security(("api_key" = [])), params(PageQuery),
    responses((status = 200, body = List<LlmModel>)))]
async fn list_models(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<LlmModel>>> {
    let page = query.page()?;
    Ok(List::new(page, models::list(&state.db, auth.workspace_id, None, page).await?))
}

/// Lists the capabilities an agent may be given (the built-in tools).
#[utoipa::path(get, path = "/v1/capabilities", tag = "agents", security(("api_key" = [])),
    responses((status = 200, body = CapabilityList)))]
async fn capabilities(_: Caller) -> JsonResponse<CapabilityList> {
    let data = builtin_tools().into_iter().map(|tool| Capability { id: tool.name, tool }).collect();
    JsonResponse(CapabilityList { data })
}

/// The capabilities of the agent's deployed version.
#[utoipa::path(get, path = "/v1/agents/{id}/capabilities", tag = "agents", security(("api_key" = [])),
    params(("id" = String, Path, description = "Agent id or slug")),
    responses((status = 200, body = AgentCapabilities), (status = 404, body = ErrorBody)))]
async fn agent_capabilities(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<String>,
) -> Result<JsonResponse<AgentCapabilities>> {
    let agent = agents::get(&state.db, auth.workspace_id, &AgentRef::parse(&id)?).await?;
    let capability_ids = match agent.deployed_version_id {
        Some(version) => versions::get(&state.db, auth.workspace_id, &AgentRef::Id(agent.id), version).await?.tools,
        None => Vec::new(),
    };
    Ok(JsonResponse(AgentCapabilities { capability_ids }))
}

/// Sets the agent's capabilities: deploys a new version with these tools.
#[utoipa::path(put, path = "/v1/agents/{id}/capabilities", tag = "agents", security(("api_key" = [])),
    request_body = AgentCapabilities, params(("id" = String, Path, description = "Agent id or slug")),
    responses((status = 200, body = AgentCapabilities), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_agent_capabilities(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<String>,
    Json(body): Json<AgentCapabilities>,
) -> Result<JsonResponse<AgentCapabilities>> {
    if let Some(unknown) = body.capability_ids.iter().find(|t| !domain::is_builtin_tool(t)) {
        return Err(Error::invalid(
            "capability_ids",
            format!("unknown capability {unknown:?}; see GET /v1/capabilities"),
        ));
    }
    let revision = Revision { tools: Some(body.capability_ids), ..Revision::default() };
    let version = versions::revise(&state.db, auth.workspace_id, &AgentRef::parse(&id)?, revision).await?;
    state.targets.evict_workspace(auth.workspace_id);
    Ok(JsonResponse(AgentCapabilities { capability_ids: version.tools }))
}

/// Mints a key (the same keys as `/v1/api-keys`), reading reference `002_…` scope names.
#[utoipa::path(post, path = "/v1/auth/api-keys", tag = "api-keys", security(("api_key" = [])), request_body = CreateAuthKey,
    responses((status = 201, body = CreatedAuthKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Json(body): Json<CreateAuthKey>,
) -> Result<(StatusCode, JsonResponse<CreatedAuthKey>)> {
    let name = domain::name("name", &body.name)?;
    let mut scopes = Vec::new();
    for (i, raw) in body.scopes.iter().enumerate() {
        let scope =
            Scope::parse_resource(raw).ok_or_else(|| Error::invalid(format!("scopes[{i}]"), "unknown scope"))?;
        if scope == Scope::Admin {
            return Err(Error::Forbidden("The 'admin' scope is granted through POST /v1/api-keys".into()));
        }
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(Error::invalid("scopes", "must name at least one scope"));
    }
    let (record, key) = keys::create(&state.db, auth.workspace_id, &name, &scopes, None).await?;
    let created = CreatedAuthKey {
        id: record.id,
        name: record.name,
        key: key.expose().to_owned(),
        scopes: body.scopes,
        created_at: record.created_at,
    };
    Ok((StatusCode::CREATED, JsonResponse(created)))
}

/// Lists the workspace's keys (as `GET /v1/api-keys`).
#[utoipa::path(get, path = "/v1/auth/api-keys", tag = "api-keys", security(("api_key" = [])), params(PageQuery),
    responses((status = 200, body = List<keys::ApiKeyRecord>)))]
async fn list_keys(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<keys::ApiKeyRecord>>> {
    let page = query.page()?;
    Ok(List::new(page, keys::list(&state.db, auth.workspace_id, page).await?))
}

/// Revokes a key (as `DELETE /v1/api-keys/{id}`).
#[utoipa::path(delete, path = "/v1/auth/api-keys/{id}", tag = "api-keys", security(("api_key" = [])),
    params(("id" = String, Path, description = "Key id (`key_…`)")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_key(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<KeyId>,
) -> Result<StatusCode> {
    super::keys::revoke_key(&state, auth.workspace_id, id).await
}

/// How clients authenticate: always with an API key.
#[utoipa::path(get, path = "/v1/auth/config", tag = "api-keys", responses((status = 200, body = AuthConfig)))]
async fn auth_config() -> JsonResponse<AuthConfig> {
    JsonResponse(AuthConfig {
        mode: "full",
        password_auth_enabled: false,
        oauth_providers: Vec::new(),
        signup_enabled: false,
    })
}
