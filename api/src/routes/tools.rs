//! The built-in tool catalogue.

use axum::Json;
use runq_shared::domain::{ToolSpec, builtin_tools};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::Caller;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ToolList {
    data: Vec<ToolSpec>,
}

/// Lists the tools a version may name in `tools`.
#[utoipa::path(get, path = "/v1/tools", tag = "tools", security(("api_key" = [])),
    responses((status = 200, body = ToolList), (status = 401, body = crate::error::ErrorBody)))]
async fn list(_: Caller) -> Json<ToolList> {
    Json(ToolList { data: builtin_tools() })
}
