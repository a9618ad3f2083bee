//! The API's one error type and the envelope every error response carries.
//!
//! ```json
//! {"status": "error", "message": "…", "error": {"code": "…", "message": "…", "details": {}}}
//! ```
//! Internal failures become an opaque 500; their detail is logged once, inside the request span
//! (which carries the request id), and never sent to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Result alias for handlers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Seconds a client should wait before retrying when a dependency is down.
const RETRY_AFTER_UNAVAILABLE: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A required input is absent: `"agent_id is required"` (reference `000_…` wording).
    #[error("{field} is required")]
    Missing { field: String },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("Request body is too large")]
    PayloadTooLarge,
    #[error("Expected a request body with content-type: application/json")]
    UnsupportedMediaType,
    /// The key spent its requests for this window; `reset` is the window's end (epoch seconds).
    #[error("Rate limit exceeded: {limit} requests per window; retry in {retry_after} s")]
    RateLimited { limit: u32, reset: u64, retry_after: u64 },
    #[error("A dependency is unavailable: {0}")]
    Unavailable(&'static str),
    #[error("Internal server error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), reason: reason.into() }
    }

    pub fn missing(field: impl Into<String>) -> Self {
        Self::Missing { field: field.into() }
    }

    pub fn route_not_found() -> Self {
        Self::NotFound { code: "not_found", message: "No route matches this path".into() }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } | Self::Missing { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } | Self::Missing { .. } => "invalid_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound { code, .. } | Self::Conflict { code, .. } => code,
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    fn details(&self) -> Value {
        match self {
            Self::Invalid { field, reason } => json!({ "field": field, "reason": reason }),
            Self::Missing { field } => json!({ "field": field, "reason": "missing" }),
            Self::RateLimited { limit, reset, retry_after } => {
                json!({ "limit": limit, "reset": reset, "retry_after": retry_after })
            }
            // the Retry-After header, also in the body for clients that only read the envelope
            Self::Unavailable(_) => json!({ "retry_after": RETRY_AFTER_UNAVAILABLE }),
            _ => json!({}),
        }
    }
}

/// The body of every error response (documented in the OpenAPI spec).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Always `"error"`.
    pub status: &'static str,
    pub message: String,
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: Value,
}

impl Error {
    fn message(&self) -> String {
        if let Self::Internal(e) = self {
            tracing::error!(error = ?e, "request failed");
        }
        match self {
            Self::Invalid { field, reason } => format!("Invalid {field}: {reason}"),
            other => other.to_string(),
        }
    }

    /// The error as OpenAI's API words it, for the OpenAI-compatible routes:
    /// `{"error": {"message", "type", "param", "code"}}`.
    pub fn into_openai_response(self) -> Response {
        let (kind, code) = match self.status() {
            StatusCode::UNAUTHORIZED => ("authentication_error", "invalid_api_key"),
            StatusCode::FORBIDDEN => ("permission_error", self.code()),
            StatusCode::NOT_FOUND => ("invalid_request_error", "model_not_found"),
            StatusCode::TOO_MANY_REQUESTS => ("rate_limit_error", "rate_limit_exceeded"),
            status if status.is_server_error() => ("server_error", self.code()),
            _ => ("invalid_request_error", self.code()),
        };
        let body = serde_json::json!({"error": {
            "message": self.message(),
            "type": kind,
            "param": self.details().get("field"),
            "code": code,
        }});
        let response = (self.status(), Json(body)).into_response();
        self.with_retry_after(response)
    }

    fn with_retry_after(self, mut response: Response) -> Response {
        let retry_after = match self {
            Self::Unavailable(_) => Some(RETRY_AFTER_UNAVAILABLE),
            Self::RateLimited { retry_after, .. } => Some(retry_after),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let message = self.message();
        let body = ErrorBody {
            status: "error",
            message: message.clone(),
            error: ErrorDetail { code: self.code(), message, details: self.details() },
        };
        let response = (self.status(), Json(body)).into_response();
        self.with_retry_after(response)
    }
}

impl From<runq_shared::Error> for Error {
    fn from(e: runq_shared::Error) -> Self {
        use runq_shared::Error as E;
        match e {
            E::Invalid { field, reason } => Self::Invalid { field, reason },
            E::NotFound { code, message } => Self::NotFound { code, message: message.to_owned() },
            E::OtherWorkspace { what } => Self::Forbidden(format!("Access denied to this {}", what.to_lowercase())),
            E::Conflict { code, message } => Self::Conflict { code, message },
            E::Database(e) => e.into(),
            E::Redis(e) => e.into(),
            e @ E::Crypto => Self::Internal(e.into()),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if runq_shared::db::is_unavailable(&e) {
            tracing::warn!(error = %e, "postgres unavailable");
            Self::Unavailable("postgres")
        } else {
            Self::Internal(e.into())
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() {
            tracing::warn!(error = %e, "redis unavailable");
            Self::Unavailable("redis")
        } else {
            Self::Internal(e.into())
        }
    }
}
