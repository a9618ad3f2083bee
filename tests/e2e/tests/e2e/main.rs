//! End-to-end tests: the real `runq-api` binary against real Postgres and Redis.
//! One test binary; each test starts its own API process with its own database.

mod auth;
mod cli;
mod console;
mod errors;
mod fairness;
mod faults;
mod fuzz;
mod gateway;
mod input;
mod isolation;
mod management;
mod metrics;
mod ops;
mod postgres;
mod ratelimit;
mod reference;
mod runs;
mod tools;
mod tracing;
mod webhooks;
