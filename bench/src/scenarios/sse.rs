//! What the bench looks for in SSE frames; the frames themselves come from
//! [`runq_shared::sse::FrameScanner`], the same for the provider's stream and runq's, so both sides
//! of a comparison pay the same client cost.

/// An OpenAI chunk carrying generated text.
pub fn is_content_delta(data: &str) -> bool {
    data.contains("\"content\"")
        && serde_json::from_str::<serde_json::Value>(data)
            .is_ok_and(|v| v["choices"][0]["delta"]["content"].as_str().is_some_and(|s| !s.is_empty()))
}

/// A UI message stream part carrying generated text.
pub fn is_text_delta(data: &str) -> bool {
    data.contains("text-delta")
        && serde_json::from_str::<serde_json::Value>(data).is_ok_and(|v| v["type"] == "text-delta")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_content_deltas_are_recognised() {
        assert!(is_text_delta(r#"{"type":"text-delta","id":"t","delta":"a"}"#));
        assert!(!is_text_delta(r#"{"type":"text-start","id":"text-delta"}"#));
        let chunk = r#"{"choices":[{"index":0,"delta":{"content":"tok0"}}]}"#;
        assert!(is_content_delta(chunk));
        assert!(!is_content_delta(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#));
    }
}
