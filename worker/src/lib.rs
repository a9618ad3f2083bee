//! runq worker (skeleton).
pub mod provider;
