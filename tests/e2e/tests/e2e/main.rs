//! End-to-end tests: the API and worker against real Postgres and Redis.
//! One test binary; each test starts its own API with its own database, in the test process
//! unless it kills, signals or restarts a process or reads what one process logs or exports (those
//! spawn the real binaries: `runq_e2e::service` says which tier a test uses and why).

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
