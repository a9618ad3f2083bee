//! API keys: minted (shown once), listed, revoked; an operator sets a key's own rate limit.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::StatusCode;
use runq_shared::db::keys::{self, ApiKeyRecord};
use runq_shared::domain::{self, Scope};
use runq_shared::id::{KeyId, WorkspaceId};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{List, PageQuery};
use crate::error::{Error, ErrorBody, Result};
use crate::extract::{Admin, Json, Manager, Path, Query, nullable};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(revoke, update))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateKey {
    name: String,
    /// `run` (start runs, read results), `manage`, and `admin` (only an admin key may grant it);
    /// defaults to `["run"]`.
    #[serde(default)]
    scopes: Option<Vec<Scope>>,
    /// Requests per rate-limit window for this key, instead of its workspace's limit. Only an
    /// admin key may set it.
    rate_limit_per_hour: Option<i32>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct UpdateKey {
    /// Requests per rate-limit window for this key; `null` returns it to its workspace's limit.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>)]
    rate_limit_per_hour: Option<Option<i32>>,
}

fn rate_limit(raw: Option<i32>) -> Result<Option<i32>> {
    Ok(raw.map(|n| domain::positive_limit("rate_limit_per_hour", n)).transpose()?)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    record: ApiKeyRecord,
    /// The key itself. It is shown this once and cannot be recovered.
    key: String,
}

/// Mints a key in the caller's workspace; `rate_limit_per_hour` and the `admin` scope need an
/// admin key.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", security(("api_key" = [])), request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Json(body): Json<CreateKey>,
) -> Result<(StatusCode, JsonResponse<CreatedKey>)> {
    let name = domain::name("name", &body.name)?;
    let scopes = body.scopes.unwrap_or_else(|| vec![Scope::Run]);
    if scopes.is_empty() {
        return Err(Error::invalid("scopes", "must name at least one scope"));
    }
    if (body.rate_limit_per_hour.is_some() || scopes.contains(&Scope::Admin)) && !auth.has(Scope::Admin) {
        return Err(Error::Forbidden(
            "Only an admin key may set rate_limit_per_hour or grant the 'admin' scope".into(),
        ));
    }
    let limit = rate_limit(body.rate_limit_per_hour)?;
    let (record, key) = keys::create(&state.db, auth.workspace_id, &name, &scopes, limit).await?;
    let key = key.expose().to_owned();
    Ok((StatusCode::CREATED, JsonResponse(CreatedKey { record, key })))
}

/// Lists the workspace's keys (prefixes only, never secrets).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", security(("api_key" = [])), params(PageQuery),
    responses((status = 200, body = List<ApiKeyRecord>), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<ApiKeyRecord>>> {
    let page = query.page()?;
    Ok(List::new(page, keys::list(&state.db, auth.workspace_id, page).await?))
}

/// Revokes a key; it stops authenticating at once on this replica, within seconds on others.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys", security(("api_key" = [])),
    params(("id" = String, Path, description = "Key id (`key_…`)")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke(State(state): State<AppState>, Manager(auth): Manager, Path(id): Path<KeyId>) -> Result<StatusCode> {
    revoke_key(&state, auth.workspace_id, id).await
}

/// Revokes a key of `workspace` and forgets it on this replica at once.
pub(super) async fn revoke_key(state: &AppState, workspace: WorkspaceId, id: KeyId) -> Result<StatusCode> {
    let hash = keys::revoke(&state.db, workspace, id)
        .await?
        .ok_or_else(|| Error::from(runq_shared::Error::key_not_found()))?;
    state.auth.evict(&hash);
    Ok(StatusCode::NO_CONTENT)
}

/// Sets or removes a key's own rate limit, whatever its workspace (admin keys only). Other
/// replicas apply it once their cached verdict expires (`RUNQ_AUTH_CACHE_TTL_MS`).
#[utoipa::path(patch, path = "/v1/api-keys/{id}", tag = "api-keys", security(("api_key" = [])), request_body = UpdateKey,
    params(("id" = String, Path, description = "Key id (`key_…`)")),
    responses((status = 200, body = ApiKeyRecord), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<KeyId>,
    Json(body): Json<UpdateKey>,
) -> Result<JsonResponse<ApiKeyRecord>> {
    let limit = body.rate_limit_per_hour.ok_or_else(|| {
        Error::invalid("rate_limit_per_hour", "required: a number, or null to remove the key's limit")
    })?;
    let record = keys::set_rate_limit(&state.db, id, rate_limit(limit)?)
        .await?
        .ok_or_else(|| Error::from(runq_shared::Error::key_not_found()))?;
    state.auth.evict_key(id);
    Ok(JsonResponse(record))
}
