//! One module per command group; each takes the client and its parsed arguments and returns how
//! the process exits.

pub mod agents;
pub mod approvals;
pub mod batch;
pub mod keys;
pub mod login;
pub mod run;
pub mod runs;

use serde_json::Value;

/// Prints a value as indented JSON on stdout.
pub(crate) fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// `?page=&limit=` of a listing.
pub(crate) fn page_query(page: crate::args::PageArgs) -> String {
    format!("page={}&limit={}", page.page, page.limit)
}

/// Run statuses a run never leaves.
pub(crate) const TERMINAL: &[&str] = &["completed", "failed", "cancelled", "timed_out"];
