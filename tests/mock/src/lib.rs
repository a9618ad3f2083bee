//! `runq-mock`: an offline LLM provider for tests and benchmarks.
//!
//! It speaks the real wire protocols of OpenAI chat completions
//! (`POST /v1/chat/completions`) and Anthropic messages (`POST /v1/messages`),
//! streaming and not, so runq's worker can be exercised end to end without
//! network access or API keys. Since the worker only sends ordinary requests,
//! tests steer the mock with `[[mock key=value ...]]` directives written in
//! the message text (latency, token count, tool calls, injected faults); see
//! [`directive`]. Server-wide defaults come from [`MockConfig`].
//!
//! API keys `bad-key` and `invalid*` are rejected with a 401. Counters for
//! assertions are served at `GET /_mock/stats` (zeroed by `POST /_mock/reset`)
//! and through [`MockServer::stats`].
//!
//! # Layout
//! - [`directive`]: parsing and stripping of `[[mock ...]]` directives.
//! - `reply`: protocol-neutral request digest and reply plan (echo text,
//!   `tok0 tok1 ...`, or a tool call; usage numbers; fault choice).
//! - `openai`, `anthropic`: request parsing, error shapes and rendering of
//!   replies as JSON or SSE frames for each protocol.
//! - `body`: frame timetable and the response body stream (delays, fault
//!   cut-offs, disconnect detection).
//! - [`stats`]: lock-free counters and the per-request in-flight guard.
//! - `server`: routes, the shared request pipeline and [`MockServer`].

mod anthropic;
mod body;
pub mod directive;
mod openai;
mod reply;
mod server;
pub mod stats;

pub use server::{MockConfig, MockServer, MockState, router};
pub use stats::{KeyStats, Stats};
