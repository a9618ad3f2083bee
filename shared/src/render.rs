//! `{{variable}}` templates in agent versions, filled from a run's `variables`.

use serde_json::{Map, Value};

use crate::{Error, Result};

/// Replaces every `{{ name }}` in `template`. Strings are inserted as they are, other JSON values
/// as JSON. A placeholder without a variable is an error naming it (`variables.name`).
pub fn render(template: &str, variables: &Map<String, Value>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + 2 + len].trim();
        out.push_str(&rest[..start]);
        match variables.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&other.to_string()),
            None => {
                return Err(Error::invalid(
                    format!("variables.{name}"),
                    "the agent's prompt uses this variable but the request did not provide it",
                ));
            }
        }
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn placeholders_are_filled() {
        let out = render("Hi {{name}}, you have {{ count }} items", &vars(json!({"name": "Ada", "count": 3}))).unwrap();
        assert_eq!(out, "Hi Ada, you have 3 items");
    }

    #[test]
    fn a_missing_variable_is_named() {
        match render("for {{company}}", &Map::new()) {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "variables.company"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        assert_eq!(render("a {b} }} {{ c", &Map::new()).unwrap(), "a {b} }} {{ c");
    }
}
