//! The error type of the domain layer.
//!
//! Variants say what went wrong in the caller's terms; the API maps each to a status code and
//! error code, and the worker decides from them whether to retry.

/// Result alias for domain operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input failed validation; `field` names the offending input.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },

    /// The thing asked for does not exist in the caller's workspace.
    #[error("{message}")]
    NotFound { code: &'static str, message: &'static str },

    /// The thing exists but belongs to another workspace.
    #[error("{what} belongs to another workspace")]
    OtherWorkspace { what: &'static str },

    /// The request conflicts with the current state (unique names, immutable records).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },

    /// A secret could not be sealed or opened (wrong master key, corrupted column).
    #[error("secret could not be opened")]
    Crypto,

    #[error(transparent)]
    Database(#[from] sqlx::Error),

    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

impl Error {
    /// A validation failure for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), reason: reason.into() }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict { code, message: message.into() }
    }

    pub const fn agent_not_found() -> Self {
        Self::NotFound { code: "agent_not_found", message: "Agent not found" }
    }

    pub const fn provider_not_found() -> Self {
        Self::NotFound { code: "provider_not_found", message: "Provider not found" }
    }

    pub const fn version_not_found() -> Self {
        Self::NotFound { code: "version_not_found", message: "Version not found" }
    }

    pub const fn key_not_found() -> Self {
        Self::NotFound { code: "api_key_not_found", message: "API key not found" }
    }

    pub const fn workspace_not_found() -> Self {
        Self::NotFound { code: "workspace_not_found", message: "Workspace not found" }
    }
}

/// Maps database constraint violations to domain errors by constraint name, so queries state
/// declaratively what a violation means instead of matching error strings at the call site.
pub trait ResultExt<T> {
    fn on_constraint(self, name: &str, map: impl FnOnce() -> Error) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn on_constraint(self, name: &str, map: impl FnOnce() -> Error) -> Result<T> {
        self.map_err(|e| match e.into() {
            Error::Database(sqlx::Error::Database(db)) if db.constraint() == Some(name) => map(),
            other => other,
        })
    }
}
