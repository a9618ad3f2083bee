//! Reading Server-Sent Events as a client: frames split from a byte stream as it arrives. The
//! end-to-end tests and the bench read runq's streams (and the provider's) with this one reader.

/// One SSE frame: its `id:`, `event:` name and joined `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: String,
}

/// Collects bytes and yields every frame they complete; comments (`: ping`) yield nothing.
#[derive(Debug, Default)]
pub struct FrameScanner {
    buf: Vec<u8>,
}

impl FrameScanner {
    /// Adds `chunk`; returns the frames it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Frame> {
        self.buf.extend_from_slice(chunk);
        let mut frames = Vec::new();
        let mut start = 0;
        while let Some(end) = find(&self.buf[start..], b"\n\n") {
            frames.extend(frame(&String::from_utf8_lossy(&self.buf[start..start + end])));
            start += end + 2;
        }
        self.buf.drain(..start);
        frames
    }

    /// What was received but completes no frame yet (e.g. a JSON error body).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

/// Splits a whole SSE body into frames.
pub fn parse(text: &str) -> Vec<Frame> {
    text.split("\n\n").filter_map(frame).collect()
}

/// The frame of one block of lines, if it carries data.
fn frame(block: &str) -> Option<Frame> {
    let (mut id, mut event) = (None, None);
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    (!data.is_empty()).then(|| Frame { id, event, data: data.join("\n") })
}

/// Position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks_keep_their_id_and_name() {
        let mut scanner = FrameScanner::default();
        let first = scanner.push(b"id: 1\ndata: {\"type\":\"start\"}\n\nid: 2\nevent: message.delta\nda");
        assert_eq!(first, vec![Frame { id: Some(1), event: None, data: r#"{"type":"start"}"#.into() }]);
        let rest = scanner.push(b"ta: a\ndata: b\n\n: ping\n\n");
        assert_eq!(rest, vec![Frame { id: Some(2), event: Some("message.delta".into()), data: "a\nb".into() }]);
        assert_eq!(parse("id: 1\ndata: x\n\n: ping\n\ndata: [DONE]\n\n").len(), 2);
    }
}
