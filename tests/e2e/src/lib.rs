//! Harness for runq's end-to-end tests: the API and worker on port 0, a fresh Postgres database
//! per test, a private Redis prefix per test, and the mock provider in-process.
//!
//! The API and worker run in the test process (their own `build` and `run_until_stopped`) unless
//! a test kills, signals or restarts them, or reads what one process logs or exports: those tests
//! spawn the real binaries. [`service`] says how and why.
//!
//! # Layout
//! - [`env`] — [`Env`], what a test's services share ([`fresh_database`], [`bin`], the binaries
//!   spawned and their logs), and waiting helpers ([`eventually`]).
//! - [`service`] — [`Service`], an API or worker in the test process ([`Env::start_api`],
//!   [`Env::start_worker`]) or spawned, and the two tiers.
//! - [`app`] — [`TestApp`], one API with request helpers, and [`Stack`], API + worker + mock
//!   provider.
//! - [`cluster`] — [`Cluster`] of many API and worker processes for fault injection, and
//!   [`PrivateRedis`].
//! - [`postgres`] — [`PrivatePostgres`], a Postgres cluster of one test, which it can stop and
//!   start again.
//! - [`sse`] — reading SSE responses, whole ([`Sse`]) or as they arrive ([`SseReader`]).

pub mod app;
pub mod cluster;
pub mod env;
pub mod postgres;
pub mod service;
pub mod sse;

pub use app::*;
pub use cluster::*;
pub use env::*;
pub use postgres::PrivatePostgres;
pub use runq_mock::{MockConfig, MockServer};
pub use service::*;
pub use sse::*;
