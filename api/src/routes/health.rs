//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::PROBE_TIMEOUT;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(ready))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` when every dependency answers, else `degraded`.
    status: &'static str,
    version: &'static str,
    postgres: &'static str,
    redis: &'static str,
}

async fn probe(state: &AppState) -> Health {
    let pg = tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("select 1").execute(&state.db));
    let redis = tokio::time::timeout(PROBE_TIMEOUT, state.broker.ping());
    let (pg, redis) = tokio::join!(pg, redis);
    let verdict = |ok: bool| if ok { "ok" } else { "unreachable" };
    let (pg_ok, redis_ok) = (matches!(pg, Ok(Ok(_))), matches!(redis, Ok(Ok(_))));
    Health {
        status: if pg_ok && redis_ok { "ok" } else { "degraded" },
        version: runq_shared::VERSION,
        postgres: verdict(pg_ok),
        redis: verdict(redis_ok),
    }
}

/// Liveness: the process answers; dependency reachability is reported, not required.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = Health)))]
async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(probe(&state).await)
}

/// Readiness: 200 only when Postgres and Redis both answer.
#[utoipa::path(get, path = "/ready", tag = "ops", responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let health = probe(&state).await;
    let status = if health.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health))
}
