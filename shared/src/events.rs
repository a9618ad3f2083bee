//! The run event protocol: AI SDK "UI message stream" v1 parts, and the per-run event log.
//!
//! Every event a run emits gets a per-run, strictly increasing `seq` (the SSE `id:`). The worker
//! writes events in batches: each batch is one entry of the run's Redis stream, whose id is
//! `0-<seq of its last event>` (so replay after `n` is one `XRANGE` from `0-<n + 1>`), and one
//! message on the run's channel for live delivery. A finished run's log is also written to
//! Postgres, as one batch of the same form, so it replays after Redis forgot it.

use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::RunId;

/// One part of the UI message stream. Payloads carry exactly the protocol's keys: strict
/// clients reject anything else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum Part {
    Start {
        message_id: String,
        message_metadata: Value,
    },
    StartStep,
    TextStart {
        id: String,
    },
    TextDelta {
        id: String,
        delta: String,
    },
    TextEnd {
        id: String,
    },
    ToolInputAvailable {
        tool_call_id: String,
        tool_name: String,
        input: Value,
    },
    ToolOutputAvailable {
        tool_call_id: String,
        output: Value,
    },
    /// The tool failed (timeout, non-2xx, refused address); the model is told the error.
    ToolOutputError {
        tool_call_id: String,
        error_text: String,
    },
    /// The call waits for a person: `POST /v1/approvals/{approvalId}/approve` or `/deny`.
    ToolApprovalRequest {
        approval_id: String,
        tool_call_id: String,
    },
    /// A person denied the call (or its approval expired); the model is told so.
    ToolOutputDenied {
        tool_call_id: String,
    },
    FinishStep,
    Finish {
        message_metadata: Value,
    },
    Error {
        error_text: String,
    },
    Abort,
    /// runq's own facts (status, attempt, retry), as a custom data part.
    #[serde(rename = "data-run")]
    DataRun {
        data: Value,
        #[serde(skip_serializing_if = "std::ops::Not::not", default)]
        transient: bool,
    },
}

impl Part {
    /// Whether this part ends the run's stream (`[DONE]` follows it).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Finish { .. } | Self::Error { .. } | Self::Abort)
    }
}

/// Whether an encoded part ends the stream, without parsing it: parts serialize with `type`
/// first.
pub fn is_terminal_json(json: &str) -> bool {
    ["{\"type\":\"finish\"", "{\"type\":\"error\"", "{\"type\":\"abort\""].iter().any(|prefix| json.starts_with(prefix))
}

/// An encoded event: its `seq`, when it was emitted, and the part as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Milliseconds since the Unix epoch (0 in logs written before events carried it).
    #[serde(default)]
    pub at_ms: i64,
    pub data: String,
}

impl Event {
    pub fn new(seq: u64, part: &Part) -> Self {
        let at_ms = chrono::Utc::now().timestamp_millis();
        Self { seq, at_ms, data: serde_json::to_string(part).expect("parts always serialize") }
    }

    pub fn is_terminal(&self) -> bool {
        is_terminal_json(&self.data)
    }

    /// Whether this ends a segment of a run that waits for a person (`finish` with status
    /// `requires_action`): the run's log goes on once the wait is over.
    pub fn is_pause(&self) -> bool {
        self.data.starts_with("{\"type\":\"finish\"") && self.data.contains("\"status\":\"requires_action\"")
    }

    /// One line of a batch: `<seq> <at_ms> <json>` (encoded JSON holds no raw newline).
    fn write_line(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "{} {} ", self.seq, self.at_ms);
        out.push_str(&self.data);
    }

    fn from_line(line: &str) -> Option<Self> {
        let (seq, rest) = line.split_once(' ')?;
        let (at_ms, data) = rest.split_once(' ')?;
        Some(Self { seq: seq.parse().ok()?, at_ms: at_ms.parse().ok()?, data: data.to_owned() })
    }
}

/// A batch of events as one payload, a line each: the run's channel carries one message per
/// batch and its log one entry per batch.
pub fn encode_batch(events: &[Event]) -> String {
    let mut out = String::with_capacity(events.iter().map(|e| e.data.len() + 24).sum());
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        event.write_line(&mut out);
    }
    out
}

/// The events of a batch payload, in order; a malformed line is skipped.
pub fn decode_batch(payload: &str) -> impl Iterator<Item = Event> + '_ {
    payload.split('\n').filter_map(Event::from_line)
}

/// How long a finished run's Redis log lingers for fast replay; Postgres keeps it after that.
pub const LOG_TTL_SECS: i64 = 3600;

/// Names of a run's Redis stream and channel, under the deployment prefix.
#[derive(Debug, Clone)]
pub struct RunKeys {
    pub log: String,
    pub channel: String,
}

impl RunKeys {
    pub fn new(prefix: &str, run: RunId) -> Self {
        Self { log: format!("{prefix}:run:{run}:log"), channel: format!("{prefix}:run:{run}:live") }
    }
}

/// The channel workers listen on for control messages (`cancel <run id>`).
pub fn control_channel(prefix: &str) -> String {
    format!("{prefix}:control")
}

/// Keeps the run's log past a pause's `finish` (which set its expiry): a run waiting for a person
/// continues the same log when it resumes.
pub async fn keep(conn: &mut impl ConnectionLike, keys: &RunKeys) -> redis::RedisResult<()> {
    redis::cmd("PERSIST").arg(&keys.log).query_async(conn).await
}

/// Appends `live` to the log and announces it, then appends `held` without announcing it (it is
/// announced later with [`publish`]); each non-empty slice is one log entry, and all of it one
/// round trip.
pub async fn append(
    conn: &mut impl ConnectionLike,
    keys: &RunKeys,
    live: &[Event],
    held: &[Event],
) -> redis::RedisResult<()> {
    if live.is_empty() && held.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    if let Some(batch) = add_entry(&mut pipe, keys, live) {
        pipe.cmd("PUBLISH").arg(&keys.channel).arg(batch).ignore();
    }
    add_entry(&mut pipe, keys, held);
    if live.iter().chain(held).any(Event::is_terminal) {
        pipe.cmd("EXPIRE").arg(&keys.log).arg(LOG_TTL_SECS).ignore();
    }
    pipe.query_async(conn).await
}

/// Adds the XADD of `events` as one entry to `pipe`; returns the batch (`None` when empty).
fn add_entry(pipe: &mut redis::Pipeline, keys: &RunKeys, events: &[Event]) -> Option<String> {
    let last = events.last()?;
    let batch = encode_batch(events);
    pipe.cmd("XADD").arg(&keys.log).arg(format!("0-{}", last.seq)).arg(BATCH_FIELD).arg(&batch).ignore();
    Some(batch)
}

/// Announces already-appended events live (used for the terminal event, which is published
/// only after Postgres holds the final state).
pub async fn publish(conn: &mut impl ConnectionLike, keys: &RunKeys, events: &[Event]) -> redis::RedisResult<()> {
    redis::cmd("PUBLISH").arg(&keys.channel).arg(encode_batch(events)).exec_async(conn).await
}

/// The field of a log entry holding its batch.
const BATCH_FIELD: &str = "b";

/// Events with `seq > after`, in order, from the run's Redis log: the entries whose last event
/// comes after `after`, less the events of the first one that the client already has.
pub async fn replay(conn: &mut impl ConnectionLike, keys: &RunKeys, after: u64) -> redis::RedisResult<Vec<Event>> {
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg(&keys.log).arg(format!("0-{}", after + 1)).arg("+").query_async(conn).await?;
    Ok(entries.iter().flat_map(|(id, fields)| entry_events(id, fields)).filter(|e| e.seq > after).collect())
}

/// The events of one log entry: a batch, or (in logs written before batches) one event whose
/// `seq` is the entry's id.
fn entry_events(id: &str, fields: &[(String, String)]) -> Vec<Event> {
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if let Some(batch) = field(BATCH_FIELD) {
        return decode_batch(batch).collect();
    }
    let seq = id.strip_prefix("0-").and_then(|s| s.parse().ok());
    let at_ms = field("t").and_then(|t| t.parse().ok()).unwrap_or(0);
    seq.zip(field("d")).map(|(seq, data)| Event { seq, at_ms, data: data.to_owned() }).into_iter().collect()
}

/// The last `seq` in the run's log (0 when empty): where a new attempt continues numbering.
pub async fn last_seq(conn: &mut impl ConnectionLike, keys: &RunKeys) -> redis::RedisResult<u64> {
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XREVRANGE").arg(&keys.log).arg("+").arg("-").arg("COUNT").arg(1).query_async(conn).await?;
    Ok(entries.first().and_then(|(id, _)| id.strip_prefix("0-")?.parse().ok()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parts_serialize_with_exactly_the_protocol_keys() {
        let part = Part::ToolInputAvailable { tool_call_id: "c1".into(), tool_name: "noop".into(), input: json!({}) };
        assert_eq!(
            serde_json::to_value(&part).unwrap(),
            json!({"type": "tool-input-available", "toolCallId": "c1", "toolName": "noop", "input": {}})
        );
        assert_eq!(serde_json::to_string(&Part::StartStep).unwrap(), r#"{"type":"start-step"}"#);
        let data = Part::DataRun { data: json!({"attempt": 2}), transient: true };
        assert_eq!(
            serde_json::to_value(&data).unwrap(),
            json!({"type": "data-run", "data": {"attempt": 2}, "transient": true})
        );
    }

    #[test]
    fn terminal_parts_are_recognised_without_parsing() {
        for part in [Part::Finish { message_metadata: json!({}) }, Part::Error { error_text: "x".into() }, Part::Abort]
        {
            assert!(Event::new(1, &part).is_terminal());
        }
        assert!(!Event::new(1, &Part::FinishStep).is_terminal());
    }

    #[test]
    fn batches_round_trip() {
        let events = [
            Event::new(41, &Part::TextDelta { id: "t".into(), delta: "a b\nc".into() }),
            Event::new(42, &Part::TextEnd { id: "t".into() }),
        ];
        assert_eq!(decode_batch(&encode_batch(&events)).collect::<Vec<_>>(), events);
    }

    #[test]
    fn log_entries_of_either_form_give_their_events() {
        let event = Event::new(7, &Part::FinishStep);
        let fields = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let batch = fields(&[(BATCH_FIELD, &encode_batch(std::slice::from_ref(&event)))]);
        assert_eq!(entry_events("0-7", &batch), std::slice::from_ref(&event));
        let single = fields(&[("t", &event.at_ms.to_string()), ("d", &event.data)]);
        assert_eq!(entry_events("0-7", &single), [event]);
    }
}
