//! Webhooks: endpoints a workspace registers for run and operation events (secret shown once),
//! their delivery history, and the workspace's default secret that signs deliveries to a run's
//! own `webhook` URL.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::StatusCode;
use runq_shared::db::webhooks::{self, Delivery, Endpoint};
use runq_shared::id::WebhookId;
use runq_shared::webhooks::{EventType, SigningSecret};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{List, PageQuery};
use crate::error::{Error, ErrorBody, Result};
use crate::extract::{Json, Manager, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(delete))
        .routes(routes!(deliveries))
        .routes(routes!(rotate_secret))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateWebhook {
    /// Where events are posted (http or https; private addresses only when the operator allows).
    url: String,
    /// `run.completed`, `run.failed`, `run.cancelled`, `run.requires_action`, `operation.completed`.
    events: Vec<EventType>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// The signing secret (`whsec_…`). It is shown this once and cannot be recovered.
    secret: String,
}

/// Registers an endpoint for the workspace's events.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", security(("api_key" = [])),
    request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Json(body): Json<CreateWebhook>,
) -> Result<(StatusCode, JsonResponse<CreatedWebhook>)> {
    if body.events.is_empty() {
        return Err(Error::invalid("events", "must name at least one event"));
    }
    let url = crate::outbound::check_url(&state, "url", &body.url).await?;
    let secret = SigningSecret::generate();
    let sealed = state.master_key.seal(secret.expose().as_bytes());
    let endpoint = webhooks::create(&state.db, auth.workspace_id, &url, &body.events, &sealed).await?;
    Ok((StatusCode::CREATED, JsonResponse(CreatedWebhook { endpoint, secret: secret.expose().to_owned() })))
}

/// Lists the workspace's endpoints (never their secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("api_key" = [])), params(PageQuery),
    responses((status = 200, body = List<Endpoint>), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<Endpoint>>> {
    let page = query.page()?;
    Ok(List::new(page, webhooks::list(&state.db, auth.workspace_id, page).await?))
}

/// Removes an endpoint and its delivery history.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, description = "`whk_…`")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<WebhookId>,
) -> Result<StatusCode> {
    webhooks::delete(&state.db, auth.workspace_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An endpoint's deliveries, newest first, each with its attempts and the receiver's answers.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, description = "`whk_…`"), PageQuery),
    responses((status = 200, body = List<Delivery>), (status = 404, body = ErrorBody)))]
async fn deliveries(
    State(state): State<AppState>,
    Manager(auth): Manager,
    Path(id): Path<WebhookId>,
    Query(query): Query<PageQuery>,
) -> Result<JsonResponse<List<Delivery>>> {
    let page = query.page()?;
    Ok(List::new(page, webhooks::deliveries(&state.db, auth.workspace_id, id, page).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DefaultSecret {
    /// The new secret (`whsec_…`) signing deliveries to runs' own `webhook` URLs. It is shown
    /// this once; the previous one stops signing at once.
    secret: String,
}

/// Makes a new default secret for the workspace (the first one, or a rotation) and shows it
/// once. Deliveries to a run's own `webhook` URL are signed with it.
#[utoipa::path(post, path = "/v1/webhooks/secret", tag = "webhooks", security(("api_key" = [])),
    responses((status = 201, body = DefaultSecret), (status = 403, body = ErrorBody)))]
async fn rotate_secret(
    State(state): State<AppState>,
    Manager(auth): Manager,
) -> Result<(StatusCode, JsonResponse<DefaultSecret>)> {
    let secret = SigningSecret::generate();
    let sealed = state.master_key.seal(secret.expose().as_bytes());
    webhooks::set_default_secret(&state.db, auth.workspace_id, &sealed).await?;
    Ok((StatusCode::CREATED, JsonResponse(DefaultSecret { secret: secret.expose().to_owned() })))
}
