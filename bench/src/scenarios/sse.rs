//! Incremental SSE parsing, the same for the provider's stream and runq's, so both sides of a
//! comparison pay the same client cost.

/// Collects bytes and yields the `data` of every complete frame.
#[derive(Debug, Default)]
pub struct FrameScanner {
    buf: Vec<u8>,
}

impl FrameScanner {
    /// Adds `chunk`; returns the joined `data:` lines of the frames it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(chunk);
        let mut frames = Vec::new();
        let mut start = 0;
        while let Some(end) = find(&self.buf[start..], b"\n\n") {
            let block = String::from_utf8_lossy(&self.buf[start..start + end]);
            let data: Vec<&str> = block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|v| v.strip_prefix(' ').unwrap_or(v))
                .collect();
            if !data.is_empty() {
                frames.push(data.join("\n"));
            }
            start += end + 2;
        }
        self.buf.drain(..start);
        frames
    }
}

/// Position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

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
    fn frames_split_across_chunks() {
        let mut scanner = FrameScanner::default();
        assert!(scanner.push(b"id: 1\ndata: {\"type\":\"start\"}\n\nid: 2\nda").len() == 1);
        let frames = scanner.push(b"ta: {\"type\":\"text-delta\",\"delta\":\"a\"}\n\n: ping\n\n");
        assert_eq!(frames.len(), 1);
        assert!(is_text_delta(&frames[0]));
        let chunk = r#"{"choices":[{"index":0,"delta":{"content":"tok0"}}]}"#;
        assert!(is_content_delta(chunk));
        assert!(!is_content_delta(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#));
    }
}
