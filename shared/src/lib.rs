//! The runq domain, shared by `runq-api` and `runq-worker`.
//!
//! Everything that is not HTTP or job plumbing lives here: typed ids, validated inputs, the
//! Postgres queries, secret sealing, settings and telemetry. Neither binary depends on the other;
//! both depend on this crate.
//!
//! # Layout
//! - [`id`] — prefixed wire ids (`run_…`, `agt_…`) over UUIDv7.
//! - [`metrics`] — Prometheus metric names, buckets and the recorder `/metrics` renders.
//! - [`outbound`] — address safety for requests made on a user's behalf (webhooks, tools).
//! - [`webhooks`] — Standard Webhooks event types, secrets, signatures and the retry schedule.
//! - [`admission`] — from a run request to recorded runs: resolve, render, record.
//! - [`cache`] — a small expiring in-process cache (the API's keys and agents, the worker's versions).
//! - [`broker`] — the Redis connection and the names of runq's keys and channels.
//! - [`cancel`] — stopping a run (queued ones at once, running ones through their worker) and closing
//!   the stream of a run ended outside a worker.
//! - [`chat`] — the provider-neutral conversation (messages, tool calls, usage).
//! - [`config`] — the typed settings tree shared by both binaries (clap, env).
//! - [`crypto`] — API key minting and hashing, AES-GCM sealing of provider secrets.
//! - [`db`] — connection set-up, migrations and the queries, one module per table family.
//! - [`domain`] — validated inputs (`Slug`, `Scope`, `Plan`, `Page`) and the built-in tool catalogue.
//! - [`events`] — the UI message stream parts and the per-run event log (Redis stream + pub/sub).
//! - [`group`] — group commit: callers arriving together written in one statement (admissions,
//!   claims, finishes).
//! - [`queue`] — jobs, pushed to a Redis list and popped with a blocking pop.
//! - [`ratelimit`] — per-key request limits: plan defaults, fixed windows counted in Redis.
//! - [`render`] — `{{variable}}` templates.
//! - [`error`] — [`Error`], the one error type of this crate.
//! - [`shutdown`] — SIGINT/SIGTERM as a cancellation token.
//! - [`sse`] — reading Server-Sent Events as a client (the tests and the bench).
//! - [`telemetry`] — tracing subscriber set-up with optional OTLP export.

pub mod admission;
pub mod broker;
pub mod cache;
pub mod cancel;
pub mod chat;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod group;
pub mod id;
pub mod metrics;
pub mod outbound;
pub mod queue;
pub mod ratelimit;
pub mod render;
pub mod shutdown;
pub mod sse;
pub mod telemetry;
pub mod webhooks;

pub use error::{Error, Result};

/// The version reported by `/health` and in telemetry.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
