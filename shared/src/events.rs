//! The run event protocol: AI SDK "UI message stream" v1 parts, and the per-run event log.
//!
//! Every event a run emits gets a per-run, strictly increasing `seq` (the SSE `id:`). The worker
//! appends each event to the run's Redis stream (entry id `0-<seq>`, so replay is one `XRANGE`)
//! and publishes it on the run's channel for live delivery. A finished run's log is also
//! written to Postgres, so it replays after Redis forgot it.

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

    /// Pub/sub payload: `<seq> <at_ms> <json>`.
    pub fn to_message(&self) -> String {
        format!("{} {} {}", self.seq, self.at_ms, self.data)
    }

    pub fn from_message(message: &str) -> Option<Self> {
        let (seq, rest) = message.split_once(' ')?;
        let (at_ms, data) = rest.split_once(' ')?;
        Some(Self { seq: seq.parse().ok()?, at_ms: at_ms.parse().ok()?, data: data.to_owned() })
    }
}

/// A run's log as Postgres keeps it: `[{seq, at_ms, data}]`.
pub fn log_json(events: &[Event]) -> Value {
    serde_json::to_value(events).expect("events always serialize")
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

/// Appends events to the log and, when `publish`, announces them live; one round trip.
pub async fn append(
    conn: &mut impl ConnectionLike,
    keys: &RunKeys,
    events: &[Event],
    publish: bool,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for event in events {
        pipe.cmd("XADD")
            .arg(&keys.log)
            .arg(format!("0-{}", event.seq))
            .arg("t")
            .arg(event.at_ms)
            .arg("d")
            .arg(&event.data)
            .ignore();
        if publish {
            pipe.cmd("PUBLISH").arg(&keys.channel).arg(event.to_message()).ignore();
        }
    }
    if events.iter().any(Event::is_terminal) {
        pipe.cmd("EXPIRE").arg(&keys.log).arg(LOG_TTL_SECS).ignore();
    }
    pipe.query_async(conn).await
}

/// Announces already-appended events live (used for the terminal event, which is published
/// only after Postgres holds the final state).
pub async fn publish(conn: &mut impl ConnectionLike, keys: &RunKeys, events: &[Event]) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for event in events {
        pipe.cmd("PUBLISH").arg(&keys.channel).arg(event.to_message()).ignore();
    }
    pipe.query_async(conn).await
}

/// Events with `seq > after`, in order, from the run's Redis log.
pub async fn replay(conn: &mut impl ConnectionLike, keys: &RunKeys, after: u64) -> redis::RedisResult<Vec<Event>> {
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg(&keys.log).arg(format!("(0-{after}")).arg("+").query_async(conn).await?;
    Ok(entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let seq = id.strip_prefix("0-")?.parse().ok()?;
            let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
            let at_ms = field("t").and_then(|t| t.parse().ok()).unwrap_or(0);
            Some(Event { seq, at_ms, data: field("d")?.clone() })
        })
        .collect())
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
    fn messages_round_trip() {
        let event = Event::new(42, &Part::TextDelta { id: "t".into(), delta: "a b".into() });
        assert_eq!(Event::from_message(&event.to_message()), Some(event));
    }
}
