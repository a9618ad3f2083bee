//! Harness for runq's end-to-end tests: real `runq-api` and `runq-worker` processes on port 0, a
//! fresh Postgres database per test, a private Redis prefix per test, and the mock provider
//! in-process.
//!
//! # Layout
//! - [`env`] — [`Env`], what a test's processes share ([`fresh_database`], [`bin`], the binaries
//!   they run and their logs), and waiting helpers ([`eventually`]).
//! - [`app`] — [`TestApp`], one API process with request helpers, and [`Stack`], API + worker +
//!   mock provider.
//! - [`cluster`] — [`Cluster`] of many API and worker processes for fault injection, and
//!   [`PrivateRedis`].
//! - [`postgres`] — [`PrivatePostgres`], a Postgres cluster of one test, which it can stop and
//!   start again.
//! - [`sse`] — reading SSE responses, whole ([`Sse`]) or as they arrive ([`SseReader`]).

pub mod app;
pub mod cluster;
pub mod env;
pub mod postgres;
pub mod sse;

pub use app::*;
pub use cluster::*;
pub use env::*;
pub use postgres::PrivatePostgres;
pub use runq_mock::{MockConfig, MockServer};
pub use sse::*;
