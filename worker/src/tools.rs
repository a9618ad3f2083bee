//! Built-in tools: run in-process, no network.

use runq_shared::domain::builtin_tools;
use serde_json::{Value, json};

use crate::provider::ToolSpec;

/// Provider-facing specs of the named built-in tools.
pub fn specs(names: &[String]) -> Vec<ToolSpec> {
    builtin_tools()
        .into_iter()
        .filter(|tool| names.iter().any(|n| n == tool.name))
        .map(|tool| ToolSpec {
            name: tool.name.to_owned(),
            description: tool.description.to_owned(),
            parameters: tool.parameters,
        })
        .collect()
}

/// Runs a tool call. A tool the version does not offer answers with an error object the model
/// can read, rather than failing the run.
pub fn run(name: &str, allowed: &[String]) -> Value {
    if !allowed.iter().any(|a| a == name) {
        return json!({"error": format!("tool {name:?} is not available to this agent")});
    }
    match name {
        "current_time" => {
            json!({"now": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)})
        }
        "noop" => json!({}),
        other => json!({"error": format!("unknown tool {other:?}")}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_time_returns_an_rfc3339_timestamp() {
        let out = run("current_time", &["current_time".into()]);
        assert!(chrono::DateTime::parse_from_rfc3339(out["now"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn a_tool_the_version_does_not_offer_is_refused() {
        assert!(run("current_time", &[]).get("error").is_some());
        assert_eq!(specs(&["noop".into()]).len(), 1);
    }
}
