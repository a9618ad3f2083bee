//! The HTTP surface: one module per resource, merged here with the middleware stack, the
//! OpenAPI document (`/openapi.json`), its offline viewer (`/docs`) and the web console (`/console`).

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use runq_shared::db::Paged;
use runq_shared::domain::Page;
use serde::{Deserialize, Serialize};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{Error, Result};
use crate::state::AppState;

pub mod agents;
pub mod approvals;
pub mod console;
pub mod gateway;
pub mod health;
pub mod invoke;
pub mod keys;
pub mod metrics;
pub mod operations;
pub mod platform;
pub mod providers;
pub mod queue;
pub mod runs;
pub mod sessions;
pub mod threads;
pub mod tools;
pub mod webhooks;
pub mod workspaces;

#[derive(OpenApi)]
#[openapi(
    info(title = "runq", description = "Durable job queue for LLM agents."),
    modifiers(&ApiKeyAuth),
    components(schemas(crate::error::ErrorBody))
)]
struct ApiDoc;

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))));
    }
}

/// Adds to every operation the error answers that come from the extractors and middleware rather
/// than from its handler, so a client (or a schema-driven fuzzer) finds each status documented:
/// 400 (bad path, query or body), 404 (an id in the path names nothing), 401/403/429/503 (key,
/// scope, rate limit, a dependency down) on authenticated routes, and 413/415 where a body is read.
/// The OpenAI-compatible routes answer in OpenAI's error shape, not the envelope.
fn document_common_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let envelope = |description: &str| {
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
        ResponseBuilder::new().description(description).content("application/json", content).build()
    };
    let openai =
        |description: &str| ResponseBuilder::new().description(format!("{description} (OpenAI's error shape)")).build();
    for (path, item) in openapi.paths.paths.iter_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            let authenticated = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            let gateway = operation.tags.as_ref().is_some_and(|tags| tags.iter().any(|t| t == "gateway"));
            let mut statuses = Vec::new();
            if operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) || operation.request_body.is_some() {
                statuses.push(("400", "Invalid input (`details.field` names it)"));
            }
            if path.contains('{') {
                statuses.push(("404", "Not found"));
            }
            if operation.request_body.is_some() {
                statuses.push(("413", "Request body too large"));
                statuses.push(("415", "The body is not `application/json`"));
            }
            if authenticated {
                statuses.extend([
                    ("401", "Missing or invalid API key"),
                    ("403", "Another workspace's object, or a scope the key lacks"),
                    ("429", "Rate limited (`Retry-After`)"),
                    ("503", "A dependency is unavailable (`Retry-After`)"),
                ]);
            }
            for (status, description) in statuses {
                let response = if gateway { openai(description) } else { envelope(description) };
                operation.responses.responses.entry(status.to_owned()).or_insert_with(|| response.into());
            }
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Builds the whole router: resources, docs, fallbacks and middleware.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(keys::router())
        .merge(providers::router())
        .merge(agents::router())
        .merge(tools::router())
        .merge(runs::router())
        .merge(operations::router())
        .merge(threads::router())
        .merge(invoke::router())
        .merge(workspaces::router())
        .merge(sessions::router())
        .merge(platform::router())
        .merge(gateway::router())
        .merge(metrics::router())
        .merge(webhooks::router())
        .merge(queue::router())
        .merge(approvals::router())
        .split_for_parts();
    let mut openapi = openapi;
    document_common_errors(&mut openapi);

    // reference `002_…` finds the same document at `/api-doc/openapi.json` and `/swagger-ui/`
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi.clone()))
        .merge(SwaggerUi::new("/swagger-ui").url("/api-doc/openapi.json", openapi))
        .merge(console::router())
        .fallback(|| async { Error::route_not_found() })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(max_body_bytes, refuse_announced_oversize))
        .layer(axum::middleware::from_fn(crate::ratelimit::headers))
        .layer(CatchPanicLayer::custom(|_| panicked()))
        // inside the request span (its log line carries the span) and outside the panic
        // catcher (a panic is a 500 like any other)
        .layer(axum::middleware::from_fn(crate::observe::requests))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// A body whose `Content-Length` is over the limit is refused at once, before any of it is read
/// (the limit above only stops reading once that many bytes have arrived).
async fn refuse_announced_oversize(State(max): State<usize>, request: Request, next: Next) -> Response {
    let announced = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if announced.is_some_and(|len| len > max as u64) {
        return Error::PayloadTooLarge.into_response();
    }
    next.run(request).await
}

fn panicked() -> Response {
    Error::Internal(anyhow::anyhow!("handler panicked")).into_response()
}

/// The span of a request; a caller's W3C `traceparent` makes it part of the caller's trace.
fn request_span(request: &Request) -> tracing::Span {
    let header = |name| request.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = header(REQUEST_ID).unwrap_or_default(),
        workspace_id = tracing::field::Empty,
    );
    if let Some(parent) = header(TRACEPARENT) {
        runq_shared::telemetry::set_remote_parent(&span, parent);
    }
    span
}

/// Request ids are UUIDv7, so they sort by time in logs.
#[derive(Clone, Copy)]
struct MakeRequestUuid;

impl MakeRequestId for MakeRequestUuid {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        Some(RequestId::new(id.parse().ok()?))
    }
}

/// One event of an SSE answer (`text/event-stream`), as a client reads it: `data` is a part of
/// the UI message stream as JSON (or `[DONE]`), `id` its `seq` (for `Last-Event-ID`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the wire format; never built
pub struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// `?page=&limit=` of every listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// 1-based page number (default 1).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

impl PageQuery {
    pub fn page(&self) -> Result<Page> {
        Ok(Page::new(self.page, self.limit)?)
    }
}

/// A page of a listing: `{data, pagination}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Pagination {
    pub page: u32,
    pub limit: u32,
    pub total: i64,
    pub pages: i64,
}

impl<T> List<T> {
    pub fn new(page: Page, paged: Paged<T>) -> axum::Json<Self> {
        let limit = i64::from(page.limit);
        axum::Json(Self {
            data: paged.items,
            pagination: Pagination {
                page: page.page,
                limit: page.limit,
                total: paged.total,
                pages: (paged.total + limit - 1) / limit,
            },
        })
    }
}

/// How long `/health` and `/ready` wait for each dependency.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
