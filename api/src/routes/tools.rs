//! Tools: the built-in catalogue and the workspace's HTTP tools (reference `003_…`). A tool's auth
//! secret goes in sealed and never comes back out; a version names tools by name.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode};
use runq_shared::config::Secret;
use runq_shared::db::tools::{self, HttpTool, ToolFields};
use runq_shared::domain::{ToolSpec, builtin_tools};
use runq_shared::id::ToolId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, ErrorBody, Result};
use crate::extract::{Caller, Json, Manager, Path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(get, update, delete))
}

/// A tool of the catalogue: built in, or one of the workspace's HTTP tools.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ToolEntry {
    Builtin(ToolSpec),
    Http(HttpTool),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ToolList {
    data: Vec<ToolEntry>,
}

/// The auth header a tool call carries; its value is stored encrypted and never returned.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ToolAuth {
    header: String,
    #[schema(value_type = String)]
    value: String,
}

/// A tool's fields: all required on create except the defaults noted; a PATCH names only what
/// changes (`auth: null` removes the auth header).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ToolBody {
    /// 1-64 letters, digits, `_` or `-`: what the model calls it.
    name: Option<String>,
    /// What the tool does, for the model. Default empty.
    description: Option<String>,
    /// JSON Schema of the arguments (an `object` schema). Default: no arguments.
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
    /// `http://` or `https://`.
    url: Option<String>,
    /// `GET` (arguments as query parameters), `POST` (default), `PUT`, `PATCH` or `DELETE`.
    method: Option<String>,
    /// Static request headers.
    #[schema(value_type = Option<Object>)]
    headers: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "crate::extract::nullable")]
    #[schema(value_type = Option<ToolAuth>)]
    auth: Option<Option<ToolAuth>>,
    /// 100-120000; default 10000.
    timeout_ms: Option<i32>,
    /// Calls wait for a person's approval (`POST /v1/approvals/{id}/approve`). Default false.
    requires_approval: Option<bool>,
}

fn tool_name(raw: &str) -> Result<String> {
    let ok = (1..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then(|| raw.to_owned()).ok_or_else(|| Error::invalid("name", "must be 1-64 letters, digits, '_' or '-'"))
}

fn parameters(schema: Value) -> Result<Value> {
    let valid = schema.as_object().is_some_and(|o| {
        o.get("type").is_none_or(|t| t == "object") && o.get("properties").is_none_or(Value::is_object)
    });
    valid.then_some(schema).ok_or_else(|| Error::invalid("parameters", "must be a JSON Schema of an object"))
}

fn headers(headers: Map<String, Value>) -> Result<Map<String, Value>> {
    for (name, value) in &headers {
        if HeaderName::try_from(name.as_str()).is_err() || value.as_str().is_none_or(|v| v.contains(['\r', '\n'])) {
            return Err(Error::invalid(format!("headers.{name}"), "must be a valid header name with a string value"));
        }
    }
    Ok(headers)
}

fn auth(auth: Option<ToolAuth>) -> Result<Option<(String, Secret<String>)>> {
    auth.map(|a| {
        if HeaderName::try_from(a.header.as_str()).is_err() {
            return Err(Error::invalid("auth.header", "must be a valid header name"));
        }
        if a.value.is_empty() || a.value.contains(['\r', '\n']) {
            return Err(Error::invalid("auth.value", "must be a non-empty header value"));
        }
        Ok((a.header, Secret::new(a.value)))
    })
    .transpose()
}

impl ToolBody {
    /// The body with its `url` (if any) checked against the outbound address rules.
    async fn with_checked_url(mut self, state: &AppState) -> Result<Self> {
        if let Some(url) = &self.url {
            self.url = Some(crate::outbound::check_url(state, "url", url).await?);
        }
        Ok(self)
    }

    /// The tool's fields: this body over `current` (a PATCH), or over the defaults (a create).
    fn fields(self, current: Option<&HttpTool>) -> Result<ToolFields> {
        let required = |field: &str| Error::missing(field);
        let name = match (self.name, current) {
            (Some(name), _) => tool_name(&name)?,
            (None, Some(tool)) => tool.name.clone(),
            (None, None) => return Err(required("name")),
        };
        let url = match (self.url, current) {
            (Some(url), _) => url,
            (None, Some(tool)) => tool.url.clone(),
            (None, None) => return Err(required("url")),
        };
        let method = self.method.or_else(|| current.map(|t| t.method.clone())).unwrap_or_else(|| "POST".into());
        if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
            return Err(Error::invalid("method", "must be GET, POST, PUT, PATCH or DELETE"));
        }
        let timeout_ms = self.timeout_ms.or(current.map(|t| t.timeout_ms)).unwrap_or(10_000);
        if !(100..=120_000).contains(&timeout_ms) {
            return Err(Error::invalid("timeout_ms", "must be between 100 and 120000"));
        }
        let default_schema = || json!({"type": "object", "properties": {}});
        Ok(ToolFields {
            name,
            description: self.description.or_else(|| current.map(|t| t.description.clone())).unwrap_or_default(),
            parameters: parameters(
                self.parameters.or_else(|| current.map(|t| t.parameters.0.clone())).unwrap_or_else(default_schema),
            )?,
            url,
            method,
            headers: headers(self.headers.or_else(|| current.map(|t| t.headers.0.clone())).unwrap_or_default())?,
            auth: self.auth.map(auth).transpose()?,
            timeout_ms,
            requires_approval: self.requires_approval.or(current.map(|t| t.requires_approval)).unwrap_or(false),
        })
    }
}

/// Lists the tools a version may name: the built-ins, then the workspace's HTTP tools.
#[utoipa::path(get, path = "/v1/tools", tag = "tools", security(("api_key" = [])),
    responses((status = 200, body = ToolList), (status = 401, body = ErrorBody)))]
async fn list(State(state): State<AppState>, Caller(auth): Caller) -> Result<JsonResponse<ToolList>> {
    let builtin = builtin_tools().into_iter().map(ToolEntry::Builtin);
    let http = tools::list(&state.db, auth.workspace_id).await?.into_iter().map(ToolEntry::Http);
    Ok(JsonResponse(ToolList { data: builtin.chain(http).collect() }))
}

/// Registers an HTTP tool.
#[utoipa::path(post, path = "/v1/tools", tag = "tools", security(("api_key" = [])), request_body = ToolBody,
    responses((status = 201, body = HttpTool), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Json(body): Json<ToolBody>,
) -> Result<(StatusCode, JsonResponse<HttpTool>)> {
    let body = body.with_checked_url(&state).await?;
    let tool = tools::create(&state.db, &state.master_key, auth.workspace_id, body.fields(None)?).await?;
    Ok((StatusCode::CREATED, JsonResponse(tool)))
}

/// Shows an HTTP tool (never its auth secret).
#[utoipa::path(get, path = "/v1/tools/{id}", tag = "tools", security(("api_key" = [])),
    params(("id" = String, Path, description = "`tool_…`")),
    responses((status = 200, body = HttpTool), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<ToolId>,
) -> Result<JsonResponse<HttpTool>> {
    Ok(JsonResponse(tools::get(&state.db, auth.workspace_id, id).await?))
}

/// Changes an HTTP tool; versions that name it call the new definition from their next run.
#[utoipa::path(patch, path = "/v1/tools/{id}", tag = "tools", security(("api_key" = [])), request_body = ToolBody,
    params(("id" = String, Path, description = "`tool_…`")),
    responses((status = 200, body = HttpTool), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<ToolId>,
    Json(body): Json<ToolBody>,
) -> Result<JsonResponse<HttpTool>> {
    let current = tools::get(&state.db, auth.workspace_id, id).await?;
    let fields = body.with_checked_url(&state).await?.fields(Some(&current))?;
    Ok(JsonResponse(tools::update(&state.db, &state.master_key, auth.workspace_id, id, fields).await?))
}

/// Deletes an HTTP tool; a run of a version naming it answers the model that the tool is gone.
#[utoipa::path(delete, path = "/v1/tools/{id}", tag = "tools", security(("api_key" = [])),
    params(("id" = String, Path, description = "`tool_…`")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete(State(state): State<AppState>, Manager(auth): Manager, Path(id): Path<ToolId>) -> Result<StatusCode> {
    tools::delete(&state.db, auth.workspace_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
