//! The runq domain, shared by `runq-api` and `runq-worker`.
//!
//! Everything that is not HTTP or job plumbing lives here: typed ids, validated inputs, the
//! Postgres queries, secret sealing, settings and telemetry. Neither binary depends on the other;
//! both depend on this crate.
//!
//! # Layout
//! - [`id`] — prefixed wire ids (`run_…`, `agt_…`) over UUIDv7.
//! - [`broker`] — the Redis connection and the names of runq's keys and channels.
//! - [`config`] — the typed settings tree shared by both binaries (clap, env).
//! - [`crypto`] — API key minting and hashing, AES-GCM sealing of provider secrets.
//! - [`db`] — connection set-up, migrations and the queries, one module per table family.
//! - [`domain`] — validated inputs (`Slug`, `Scope`, `Page`) and the built-in tool catalogue.
//! - [`error`] — [`Error`], the one error type of this crate.
//! - [`shutdown`] — SIGINT/SIGTERM as a cancellation token.
//! - [`telemetry`] — tracing subscriber set-up with optional OTLP export.

pub mod broker;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error;
pub mod id;
pub mod shutdown;
pub mod telemetry;

pub use error::{Error, Result};

/// The version reported by `/health` and in telemetry.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
