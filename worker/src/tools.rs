//! The tools a run may call: the built-ins its version names (in-process, no network) and its
//! workspace's HTTP tools.
//!
//! An HTTP tool gets the model's arguments as its JSON body (as query parameters for `GET`) and
//! the headers `X-Run-ID`, `X-Thread-ID`, `X-Tool-Call-ID` and, when the run acts for someone,
//! `X-End-User-ID`. Its URL is checked against the outbound address rules at call time and the
//! request goes to exactly the checked addresses, redirects not followed. A JSON answer is the
//! result as is, any other answer its text (both capped); a timeout, a non-2xx answer or a refused
//! address is an error the model reads.

use std::time::Duration;

use runq_shared::crypto::MasterKey;
use runq_shared::db::tools::ToolDef;
use runq_shared::domain::builtin_tools;
use runq_shared::id::RunId;
use runq_shared::outbound;
use serde_json::{Value, json};

use crate::provider::{ToolCall, ToolSpec};

/// Largest tool answer kept; the rest is cut.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Who a tool call is made for.
pub struct CallContext<'a> {
    pub run: RunId,
    pub thread: &'a str,
    pub end_user: Option<&'a str>,
    pub master_key: &'a MasterKey,
    pub allow_private_targets: bool,
}

/// The tools of one run.
pub struct Toolbox {
    builtin: Vec<String>,
    http: Vec<ToolDef>,
}

impl Toolbox {
    /// The built-ins among `names`, and the workspace tools the version names.
    pub fn new(names: &[String], http: Vec<ToolDef>) -> Self {
        let builtin = names.iter().filter(|n| runq_shared::domain::is_builtin_tool(n)).cloned().collect();
        Self { builtin, http }
    }

    /// Provider-facing specs of every tool.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let builtin =
            builtin_tools().into_iter().filter(|tool| self.builtin.iter().any(|n| n == tool.name)).map(|tool| {
                ToolSpec {
                    name: tool.name.to_owned(),
                    description: tool.description.to_owned(),
                    parameters: tool.parameters,
                }
            });
        let http = self.http.iter().map(|tool| ToolSpec {
            name: tool.name.clone(),
            description: tool.description.clone(),
            parameters: tool.parameters.clone(),
        });
        builtin.chain(http).collect()
    }

    fn http_tool(&self, name: &str) -> Option<&ToolDef> {
        self.http.iter().find(|tool| tool.name == name)
    }

    /// Whether a call of `name` waits for a person's approval.
    pub fn requires_approval(&self, name: &str) -> bool {
        self.http_tool(name).is_some_and(|tool| tool.requires_approval)
    }

    /// Whether a call of `name` reaches outside the worker (and so must not be repeated).
    pub fn is_remote(&self, name: &str) -> bool {
        self.http_tool(name).is_some()
    }

    /// Runs a call: its result, or an error text for the model. A tool the run does not offer
    /// is an error, not a failed run.
    pub async fn call(&self, context: &CallContext<'_>, call: &ToolCall) -> Result<Value, String> {
        if let Some(tool) = self.http_tool(&call.name) {
            return call_http(tool, context, call).await;
        }
        if !self.builtin.contains(&call.name) {
            return Err(format!("tool {:?} is not available to this agent", call.name));
        }
        match call.name.as_str() {
            "current_time" => {
                Ok(json!({"now": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}))
            }
            "noop" => Ok(json!({})),
            other => Err(format!("unknown tool {other:?}")),
        }
    }
}

async fn call_http(tool: &ToolDef, context: &CallContext<'_>, call: &ToolCall) -> Result<Value, String> {
    let checked = outbound::check(&tool.url, context.allow_private_targets)
        .await
        .map_err(|e| format!("the tool's URL was refused: {e}"))?;
    let timeout = Duration::from_millis(u64::try_from(tool.timeout_ms).unwrap_or(10_000));
    let client =
        crate::outbound::client(&checked, timeout).map_err(|e| format!("the tool could not be called: {e}"))?;
    let method = reqwest::Method::from_bytes(tool.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut url = checked.url.clone();
    if method == reqwest::Method::GET {
        // a GET carries the arguments as query parameters
        for (name, value) in call.arguments.as_object().into_iter().flatten() {
            url.query_pairs_mut().append_pair(name, value.as_str().map_or(&value.to_string(), |s| s));
        }
    }
    let mut request = client
        .request(method.clone(), url)
        .header("x-run-id", context.run.to_string())
        .header("x-thread-id", context.thread)
        .header("x-tool-call-id", &call.id);
    if let Some(user) = context.end_user {
        request = request.header("x-end-user-id", user);
    }
    for (name, value) in &tool.headers {
        if let Some(value) = value.as_str() {
            request = request.header(name.as_str(), value);
        }
    }
    if let (Some(header), Some(sealed)) = (&tool.auth_header, &tool.auth_value_sealed) {
        let sealed = hex::decode(sealed).map_err(|_| "the tool's auth secret is corrupted".to_owned())?;
        let value = context
            .master_key
            .open(&sealed)
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| "the tool's auth secret cannot be opened with this RUNQ_MASTER_KEY".to_owned())?;
        request = request.header(header.as_str(), value);
    }
    if method != reqwest::Method::GET {
        request = request.json(&call.arguments);
    }
    let mut response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("the tool did not answer within {} ms", tool.timeout_ms)
        } else {
            format!("the tool could not be reached: {e}")
        }
    })?;
    let status = response.status();
    let is_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("the tool's answer broke off: {e}"))? {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ANSWER_BYTES {
            body.truncate(MAX_ANSWER_BYTES);
            break;
        }
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        return Err(format!(
            "the tool answered HTTP {}: {}",
            status.as_u16(),
            text.chars().take(500).collect::<String>()
        ));
    }
    Ok(if is_json { serde_json::from_str(&text).unwrap_or(Value::String(text)) } else { Value::String(text) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(key: &MasterKey) -> CallContext<'_> {
        CallContext { run: RunId::new(), thread: "t", end_user: None, master_key: key, allow_private_targets: false }
    }

    fn call(name: &str) -> ToolCall {
        ToolCall { id: "c1".into(), name: name.into(), arguments: json!({}) }
    }

    #[tokio::test]
    async fn current_time_returns_an_rfc3339_timestamp() {
        let key: MasterKey = "00".repeat(32).parse().unwrap();
        let out = Toolbox::new(&["current_time".into()], Vec::new()).call(&context(&key), &call("current_time")).await;
        assert!(chrono::DateTime::parse_from_rfc3339(out.unwrap()["now"].as_str().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn a_tool_the_version_does_not_offer_is_refused() {
        let key: MasterKey = "00".repeat(32).parse().unwrap();
        let tools = Toolbox::new(&["noop".into()], Vec::new());
        assert!(tools.call(&context(&key), &call("current_time")).await.is_err());
        assert_eq!(tools.specs().len(), 1);
    }
}
