//! A run's event stream: the AI SDK UI message stream over SSE (`id: <seq>` + `data: <part>`,
//! ending with `data: [DONE]`). [`Frames`] reads it, [`Viewer`] shows it, and [`watch`] follows a
//! run to its end, resuming with `Last-Event-ID` when the connection drops (the server replays
//! exactly the events after that seq).

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::{Method, Response};
use serde_json::Value;

use crate::client::{Client, connect_error};
use crate::error::{Error, Result};

/// How often a dropped stream is resumed before giving up.
const MAX_RESUMES: u32 = 5;

/// One SSE event: its `id:` (the run's event seq) and its `data:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<u64>,
    pub data: String,
}

/// The frames of an SSE response, as they arrive.
pub struct Frames {
    url: String,
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
}

impl Frames {
    pub fn new(response: Response) -> Self {
        Self { url: response.url().to_string(), body: response.bytes_stream().boxed(), buffer: Vec::new() }
    }

    /// The next frame with data (comments and keep-alives are skipped); `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(frame) = take_frame(&mut self.buffer) {
                return Ok(Some(frame));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(connect_error(&self.url, &e)),
                None => return Ok(None),
            }
        }
    }
}

/// Removes the first complete frame holding data from `buffer`.
fn take_frame(buffer: &mut Vec<u8>) -> Option<Frame> {
    loop {
        let end = buffer.windows(2).position(|w| w == b"\n\n")?;
        let raw: Vec<u8> = buffer.drain(..end + 2).collect();
        let raw = String::from_utf8_lossy(&raw);
        let mut frame = Frame { id: None, data: String::new() };
        let mut has_data = false;
        for line in raw.lines().map(|l| l.trim_end_matches('\r')) {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => frame.id = value.parse().ok(),
                "data" => {
                    if has_data {
                        frame.data.push('\n');
                    }
                    frame.data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
        if has_data {
            return Some(frame);
        }
    }
}

/// Shows a run's parts as they come: text on stdout (the answer, and nothing else), tools and
/// runq's notes on stderr.
#[derive(Debug)]
pub struct Viewer {
    show_text: bool,
    /// The last event seq seen: where a resumed stream starts.
    pub last_seq: u64,
    /// `[DONE]` was read.
    pub done: bool,
    /// The run's `error` part, if it ended with one.
    pub error: Option<String>,
    /// The stream ended at a pause: the run waits for a person (`finish` with status
    /// `requires_action`).
    pub paused: bool,
    /// The approvals asked for (`apr_…`), in stream order.
    pub approvals: Vec<String>,
    /// Tool calls seen: call id → `name {arguments}`, to say what an approval is for.
    calls: HashMap<String, String>,
    /// The text shown so far ends mid-line.
    open_line: bool,
}

impl Viewer {
    /// `show_text: false` reads the stream without printing the answer (for `--json`).
    pub fn new(show_text: bool, after: u64) -> Self {
        Self {
            show_text,
            last_seq: after,
            done: false,
            error: None,
            paused: false,
            approvals: Vec::new(),
            calls: HashMap::new(),
            open_line: false,
        }
    }

    pub fn frame(&mut self, frame: &Frame) {
        if let Some(id) = frame.id {
            if id <= self.last_seq {
                return; // already shown before a resume
            }
            self.last_seq = id;
        }
        if frame.data == "[DONE]" {
            self.done = true;
            return;
        }
        let Ok(part) = serde_json::from_str::<Value>(&frame.data) else { return };
        let text = |key: &str| part[key].as_str().unwrap_or_default().to_owned();
        match part["type"].as_str().unwrap_or_default() {
            "text-delta" if self.show_text => {
                let delta = text("delta");
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(delta.as_bytes()).and_then(|()| out.flush());
                if !delta.is_empty() {
                    self.open_line = !delta.ends_with('\n');
                }
            }
            "tool-input-available" => {
                let call = format!("{} {}", text("toolName"), brief(&part["input"]));
                self.note(&format!("tool {call}"));
                self.calls.insert(text("toolCallId"), call);
            }
            "tool-output-available" => self.note(&format!("tool output {}", brief(&part["output"]))),
            "tool-output-denied" => self.note(&format!("tool call {} was denied", text("toolCallId"))),
            "tool-approval-request" => {
                let id = text("approvalId");
                let call = self.calls.get(&text("toolCallId")).map_or_else(|| text("toolCallId"), Clone::clone);
                // shown even with --json: it is what the person has to do next
                self.end_text();
                eprintln!("· approval {id} needed: tool {call}");
                eprintln!("·   approve: runq approvals approve {id}");
                eprintln!("·   deny:    runq approvals deny {id} --reason \"…\"");
                self.approvals.push(id);
            }
            "finish" if part["messageMetadata"]["status"] == "requires_action" => self.paused = true,
            "error" => self.error = Some(text("errorText")),
            "abort" => self.error = Some("the run was aborted".into()),
            "data-run" if part["data"]["attempt"].as_u64().is_some_and(|a| a > 1) => {
                self.note(&format!("attempt {}", part["data"]["attempt"]));
            }
            _ => {}
        }
    }

    fn note(&self, line: &str) {
        if self.show_text {
            eprintln!("· {line}");
        }
    }

    /// Ends the answer's line, so what follows starts on its own.
    pub fn end_text(&mut self) {
        if self.open_line {
            println!();
            self.open_line = false;
        }
    }
}

/// A JSON value on one line, cut to a readable length.
fn brief(value: &Value) -> String {
    cut(value, 160)
}

/// A JSON value on one line, cut to `max` characters.
pub(crate) fn cut(value: &Value, max: usize) -> String {
    let text = value.to_string();
    if text.chars().count() > max { format!("{}…", text.chars().take(max).collect::<String>()) } else { text }
}

/// Opens `GET /v1/runs/{run}/events` after `seq`.
pub async fn open(client: &Client, run: &str, after: u64) -> Result<Response> {
    let request = client
        .request(Method::GET, &format!("/v1/runs/{run}/events"))
        .header("accept", "text/event-stream")
        .header("last-event-id", after.to_string());
    client.send(request).await
}

/// Follows a run's stream to `[DONE]`. `first` is a stream already open (the run's own POST);
/// without it, or when the connection drops, the events route is read after the last seq seen.
/// A stream that ends at a pause (`viewer.paused`) stops there while the run still waits for a
/// person; once the run went on (a replay, or a quick decision), its continuation is followed too.
pub async fn watch(client: &Client, run: &str, mut first: Option<Response>, viewer: &mut Viewer) -> Result<()> {
    let mut resumes = 0;
    loop {
        let attempt = async {
            let response = match first.take() {
                Some(response) => response,
                None => open(client, run, viewer.last_seq).await?,
            };
            let mut frames = Frames::new(response);
            while let Some(frame) = frames.next().await? {
                viewer.frame(&frame);
                if viewer.done {
                    return Ok(());
                }
            }
            Err(Error::Connect {
                url: client.url(&format!("/v1/runs/{run}/events")),
                reason: "the stream ended early".into(),
            })
        };
        match attempt.await {
            Ok(()) if viewer.paused && !waits(client, run).await? => {
                // the events after the pause follow with the next seqs
                (viewer.done, viewer.paused, resumes) = (false, false, 0);
            }
            Ok(()) => return Ok(()),
            // the server's refusals (404, 401, …) will not change on a retry
            Err(error @ Error::Api { .. }) => return Err(error),
            Err(error) if resumes >= MAX_RESUMES => return Err(error),
            Err(_) => {
                resumes += 1;
                tokio::time::sleep(Duration::from_millis(250 * u64::from(resumes))).await;
            }
        }
    }
}

/// Whether the run still waits for a person after its stream paused. The pause's last event can
/// be read an instant before the run's record says `requires_action`: a `running` run is read
/// again for a while (one that went on quickly after a decision counts as going on).
async fn waits(client: &Client, run: &str) -> Result<bool> {
    let path = format!("/v1/runs/{run}");
    for _ in 0..20 {
        match client.get(&path).await?["status"].as_str() {
            Some("requires_action") => return Ok(true),
            Some("running") => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => return Ok(false),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_across_chunk_boundaries_and_comments_skipped() {
        let mut buffer = b"id: 1\ndata: {\"type\":\"start\"}\n\n: ping\n\nid: 2\nda".to_vec();
        assert_eq!(take_frame(&mut buffer), Some(Frame { id: Some(1), data: "{\"type\":\"start\"}".into() }));
        assert_eq!(take_frame(&mut buffer), None);
        buffer.extend_from_slice(b"ta: x\n\ndata: [DONE]\n\n");
        assert_eq!(take_frame(&mut buffer), Some(Frame { id: Some(2), data: "x".into() }));
        assert_eq!(take_frame(&mut buffer), Some(Frame { id: None, data: "[DONE]".into() }));
        assert!(buffer.is_empty());
    }

    #[test]
    fn a_resumed_stream_shows_each_event_once() {
        let mut viewer = Viewer::new(false, 0);
        viewer.frame(&Frame { id: Some(1), data: r#"{"type":"start"}"#.into() });
        viewer.frame(&Frame { id: Some(2), data: r#"{"type":"error","errorText":"boom"}"#.into() });
        viewer.frame(&Frame { id: Some(1), data: r#"{"type":"abort"}"#.into() });
        assert_eq!((viewer.last_seq, viewer.error.as_deref()), (2, Some("boom")));
        viewer.frame(&Frame { id: None, data: "[DONE]".into() });
        assert!(viewer.done);
    }

    #[test]
    fn a_pause_records_the_approvals_asked_for() {
        let mut viewer = Viewer::new(false, 0);
        let parts = [
            r#"{"type":"tool-input-available","toolCallId":"c1","toolName":"lookup","input":{"city":"Paris"}}"#,
            r#"{"type":"tool-approval-request","approvalId":"apr_1","toolCallId":"c1"}"#,
            r#"{"type":"finish-step"}"#,
            r#"{"type":"finish","messageMetadata":{"status":"requires_action"}}"#,
        ];
        for (seq, data) in (1..).zip(parts) {
            viewer.frame(&Frame { id: Some(seq), data: data.into() });
        }
        assert_eq!((viewer.paused, viewer.approvals.as_slice(), viewer.last_seq), (true, &["apr_1".to_owned()][..], 4));

        let mut finished = Viewer::new(false, 0);
        finished.frame(&Frame {
            id: Some(1),
            data: r#"{"type":"finish","messageMetadata":{"status":"completed"}}"#.into(),
        });
        assert!(!finished.paused);
    }
}
