//! Reading SSE responses: whole ([`Sse`]) or frame by frame as they arrive ([`SseReader`]).

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;

/// A read SSE response.
#[derive(Debug)]
pub struct Sse {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub frames: Vec<Frame>,
    pub text: String,
}

impl Sse {
    /// The JSON payloads of the frames that carry an id.
    pub fn parts(&self) -> Vec<Value> {
        self.frames
            .iter()
            .filter(|f| f.id.is_some())
            .map(|f| serde_json::from_str(&f.data).expect("frame data is JSON"))
            .collect()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.frames.iter().filter_map(|f| f.id).collect()
    }

    /// The concatenated `text-delta`s.
    pub fn text(&self) -> String {
        self.parts()
            .iter()
            .filter(|p| p["type"] == "text-delta")
            .map(|p| p["delta"].as_str().unwrap().to_owned())
            .collect()
    }
}

pub use runq_shared::sse::Frame;

/// Splits an SSE body into frames; comments (`: ping`) are skipped.
pub fn parse_sse(text: &str) -> Vec<Frame> {
    runq_shared::sse::parse(text)
}

/// An SSE response read frame by frame as it arrives, so a test can stop mid-stream (drop it, or
/// kill the server) and resume elsewhere with `Last-Event-ID`.
pub struct SseReader {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    scanner: runq_shared::sse::FrameScanner,
    /// Frames the scanner completed and `next_frame` has not handed out yet.
    ready: std::collections::VecDeque<Frame>,
    /// Every frame read so far (comments excluded).
    pub frames: Vec<Frame>,
    /// The body ended (cleanly or not).
    pub ended: bool,
    /// Why the body ended, when it broke.
    pub error: Option<String>,
}

impl SseReader {
    /// Sends the request; the body is read lazily.
    pub async fn open(request: RequestBuilder) -> Self {
        use futures::StreamExt as _;
        let res = request.send().await.expect("request");
        Self {
            status: res.status(),
            headers: res.headers().clone(),
            body: res.bytes_stream().map(|chunk| chunk.map(|b| b.to_vec())).boxed(),
            scanner: Default::default(),
            ready: Default::default(),
            frames: Vec::new(),
            ended: false,
            error: None,
        }
    }

    /// The next frame; `None` once the body ended. Cancel-safe (usable under a timeout).
    pub async fn next_frame(&mut self) -> Option<Frame> {
        use futures::StreamExt as _;
        loop {
            if let Some(frame) = self.ready.pop_front() {
                self.frames.push(frame.clone());
                return Some(frame);
            }
            if self.ended {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.ready.extend(self.scanner.push(&chunk)),
                Some(Err(e)) => {
                    self.error = Some(e.to_string());
                    self.ended = true;
                }
                None => self.ended = true,
            }
        }
    }

    /// Reads until a frame satisfies `until` (that frame included); false when the body ended
    /// or `timeout` passed first.
    pub async fn read_until(&mut self, timeout: Duration, mut until: impl FnMut(&Frame) -> bool) -> bool {
        tokio::time::timeout(timeout, async {
            while let Some(frame) = self.next_frame().await {
                if until(&frame) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false)
    }

    /// Reads `n` more frames carrying an id; false when the body ended or `timeout` passed first.
    pub async fn read_events(&mut self, n: usize, timeout: Duration) -> bool {
        let mut left = n;
        if left == 0 {
            return true;
        }
        self.read_until(timeout, |f| {
            if f.id.is_some() {
                left -= 1;
            }
            left == 0
        })
        .await
    }

    /// Reads until `[DONE]`; false when the body ended without it or `timeout` passed.
    pub async fn read_to_done(&mut self, timeout: Duration) -> bool {
        self.read_until(timeout, |f| f.data == "[DONE]").await
    }

    /// Reads until the body ends; false when `timeout` passed first.
    pub async fn read_to_end(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async { while self.next_frame().await.is_some() {} }).await.is_ok()
    }

    /// The `X-Run-ID` header.
    pub fn run_id(&self) -> String {
        self.headers
            .get("x-run-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no X-Run-ID (status {})", self.status))
            .to_owned()
    }

    /// The id of the last frame read that had one (what `Last-Event-ID` resumes from).
    pub fn last_id(&self) -> Option<u64> {
        self.frames.iter().rev().find_map(|f| f.id)
    }

    pub fn saw_done(&self) -> bool {
        self.frames.iter().any(|f| f.data == "[DONE]")
    }

    pub fn ids(&self) -> Vec<u64> {
        self.frames.iter().filter_map(|f| f.id).collect()
    }

    pub fn parts(&self) -> Vec<Value> {
        parts_of(&self.frames)
    }

    pub fn text(&self) -> String {
        text_of(&self.frames)
    }

    /// Whatever was received but is not a complete frame (e.g. a JSON error body).
    pub fn rest(&self) -> String {
        String::from_utf8_lossy(self.scanner.pending()).into_owned()
    }
}

/// The JSON payloads of the frames that carry an id.
pub fn parts_of(frames: &[Frame]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f.id.is_some())
        .map(|f| serde_json::from_str(&f.data).unwrap_or_else(|_| panic!("frame data is not JSON: {}", f.data)))
        .collect()
}

/// The concatenated `text-delta`s of the frames.
pub fn text_of(frames: &[Frame]) -> String {
    parts_of(frames)
        .iter()
        .filter(|p| p["type"] == "text-delta")
        .filter_map(|p| p["delta"].as_str().map(str::to_owned))
        .collect()
}

/// Whether a part marks a retry: a new attempt (`data-run` `{status: "running", retry: true}`)
/// or a retried provider call (`data-run` carrying a retry count).
pub fn is_retry_marker(part: &Value) -> bool {
    part["type"] == "data-run" && !matches!(part["data"]["retry"], Value::Null | Value::Bool(false))
}

/// The text-deltas after the last retry marker: what the call that finished the run streamed.
pub fn final_attempt_text(frames: &[Frame]) -> String {
    let parts = parts_of(frames);
    let start = parts.iter().rposition(is_retry_marker).map_or(0, |i| i + 1);
    parts[start..]
        .iter()
        .filter(|p| p["type"] == "text-delta")
        .filter_map(|p| p["delta"].as_str().map(str::to_owned))
        .collect()
}
