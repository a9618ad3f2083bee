//! Validated inputs and small domain vocabularies.
//!
//! Inputs are parsed once at the edge into these types, so queries and handlers never re-check
//! them.

use serde::{Deserialize, Serialize};

use crate::id::{AgentId, ProviderId};
use crate::{Error, Result};

/// A URL-safe agent handle, unique per workspace: lowercase letters, digits and dashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(transparent)]
pub struct Slug(String);

impl Slug {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let ok = (1..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && !raw.starts_with(['-', '_']);
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Error::invalid(
                field,
                "must be 1-64 lowercase letters, digits, '-' or '_', not starting with '-' or '_'",
            ))
        }
    }

    /// Derives a slug from a display name ("Support Bot!" → "support-bot").
    pub fn from_name(name: &str) -> Result<Self> {
        let mut slug = String::with_capacity(name.len());
        for c in name.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_alphanumeric() {
                slug.push(c);
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        let slug = slug.trim_end_matches('-');
        Self::parse("slug", &slug[..slug.len().min(64)])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A required, trimmed, bounded display name.
pub fn name(field: &str, raw: &str) -> Result<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.len() > 200 {
        return Err(Error::invalid(field, "must be 1-200 characters"));
    }
    Ok(trimmed.to_owned())
}

/// A thread id: client-chosen (`thr_docs_example`) or generated (`thr_<uuid>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThreadId(String);

impl ThreadId {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let ok = (1..=128).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Error::invalid(field, "must be 1-128 letters, digits, '_', '-', '.' or ':'"))
        }
    }

    /// A fresh thread id.
    pub fn generate() -> Self {
        Self(format!("thr_{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a client names an agent: by id (`agt_…`) or by slug.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AgentRef {
    Id(AgentId),
    Slug(Slug),
}

impl AgentRef {
    pub fn parse(raw: &str) -> Result<Self> {
        if let Ok(id) = raw.parse() {
            return Ok(Self::Id(id));
        }
        Slug::parse("agent_id", raw).map(Self::Slug)
    }
}

/// How a client names a provider in a version: by id (`prv_…`) or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderRef {
    Id(ProviderId),
    Name(String),
}

impl ProviderRef {
    pub fn parse(raw: &str) -> Result<Self> {
        match raw.parse() {
            Ok(id) => Ok(Self::Id(id)),
            Err(_) => name("provider", raw).map(Self::Name),
        }
    }
}

/// Who speaks in a prompt message of an agent version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PromptRole {
    System,
    User,
    Assistant,
}

/// A templated message of an agent version; `{{name}}` placeholders are filled from a run's
/// `variables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PromptMessage {
    pub role: PromptRole,
    pub content: String,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Start runs and read runs, operations and threads: for downstream apps.
    Run,
    /// Manage keys, providers, agents and versions.
    Manage,
    /// Operate the service: change any workspace's plan and limits. Held by `RUNQ_ADMIN_KEY`;
    /// only an admin key can grant it.
    Admin,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Manage => "manage",
            Self::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "run" => Some(Self::Run),
            "manage" => Some(Self::Manage),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Reads a scope as reference `002_…` names them (`sessions:write`, `agents:read`) or as runq
    /// does: conversations need `run`; agents, providers, models and keys need `manage`.
    pub fn parse_resource(raw: &str) -> Option<Self> {
        let resource = match raw.split_once(':') {
            Some((resource, "read" | "write")) => resource,
            Some(_) => return None,
            None => return Self::parse(raw),
        };
        match resource {
            "sessions" | "messages" | "events" | "runs" => Some(Self::Run),
            "agents" | "capabilities" | "llm-providers" | "llm-models" | "providers" | "models" | "api-keys" => {
                Some(Self::Manage)
            }
            _ => None,
        }
    }
}

/// A workspace's plan: the request rate its keys get unless a custom limit is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Free,
    Pro,
    /// Not rate limited.
    Enterprise,
}

impl Plan {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "free" => Some(Self::Free),
            "pro" => Some(Self::Pro),
            "enterprise" => Some(Self::Enterprise),
            _ => None,
        }
    }
}

/// A limit set by an operator (requests per window, concurrent runs): 1 or more.
pub fn positive_limit(field: &str, value: i32) -> Result<i32> {
    if value < 1 {
        return Err(Error::invalid(field, "must be 1 or more (or null for no custom limit)"));
    }
    Ok(value)
}

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions, and every OpenAI-compatible server.
    Openai,
    /// Anthropic messages.
    Anthropic,
}

impl ProviderKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "openai" => Some(Self::Openai),
            "anthropic" => Some(Self::Anthropic),
            _ => None,
        }
    }

    /// The provider's public API, for a provider registered without a `base_url`.
    pub const fn default_base_url(self) -> &'static str {
        match self {
            Self::Openai => "https://api.openai.com/v1",
            Self::Anthropic => "https://api.anthropic.com/v1",
        }
    }
}

/// A provider base URL: absolute http(s), no trailing slash.
pub fn base_url(raw: &str) -> Result<String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| Error::invalid("base_url", "must be an absolute http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') || trimmed.len() > 2048 || trimmed.contains(char::is_whitespace) {
        return Err(Error::invalid("base_url", "must be an absolute http:// or https:// URL"));
    }
    Ok(trimmed.to_owned())
}

/// One page of a listing, as asked by `?page=&limit=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub limit: u32,
}

impl Page {
    pub const MAX_LIMIT: u32 = 100;
    pub const DEFAULT_LIMIT: u32 = 20;

    pub fn new(page: Option<u32>, limit: Option<u32>) -> Result<Self> {
        let page = page.unwrap_or(1);
        let limit = limit.unwrap_or(Self::DEFAULT_LIMIT);
        if page == 0 {
            return Err(Error::invalid("page", "must be 1 or more"));
        }
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 100"));
        }
        Ok(Self { page, limit })
    }

    pub fn offset(self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.limit)
    }

    pub fn limit(self) -> i64 {
        i64::from(self.limit)
    }
}

/// A built-in tool the worker can run without any network call.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema of the tool's input.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
}

/// The built-in tools (seed capabilities).
pub fn builtin_tools() -> Vec<ToolSpec> {
    let no_input = serde_json::json!({"type": "object", "properties": {}, "additionalProperties": false});
    vec![
        ToolSpec {
            name: "current_time",
            description: "Returns the current UTC time in RFC 3339 format.",
            parameters: no_input.clone(),
        },
        ToolSpec { name: "noop", description: "Does nothing and returns an empty object.", parameters: no_input },
    ]
}

/// Whether `name` is a built-in tool.
pub fn is_builtin_tool(name: &str) -> bool {
    matches!(name, "current_time" | "noop")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_derive_from_names() {
        assert_eq!(Slug::from_name("Support Bot!").unwrap().as_str(), "support-bot");
        assert!(Slug::from_name("!!!").is_err());
        assert!(Slug::parse("slug", "Has Space").is_err());
    }

    #[test]
    fn agent_refs_tell_ids_from_slugs() {
        let id = AgentId::new();
        assert_eq!(AgentRef::parse(&id.to_string()).unwrap(), AgentRef::Id(id));
        assert!(matches!(AgentRef::parse("support-bot").unwrap(), AgentRef::Slug(_)));
    }

    #[test]
    fn pages_are_bounded() {
        assert!(Page::new(Some(0), None).is_err());
        assert!(Page::new(None, Some(101)).is_err());
        assert_eq!(Page::new(Some(3), Some(10)).unwrap().offset(), 20);
    }

    #[test]
    fn base_urls_must_be_absolute() {
        assert_eq!(base_url("http://127.0.0.1:8089/v1/").unwrap(), "http://127.0.0.1:8089/v1");
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("https://").is_err());
    }
}
