//! `runq`: the command-line client of runq, built on the public HTTP API only (the same `/v1`
//! routes and SSE streams any client uses), so it needs nothing but a URL and an API key.
//!
//! ```text
//! runq run support "How do I reset my password?" --var product=Acme
//! runq batch support queries.jsonl --out results.jsonl
//! runq runs ls --status running
//! runq runs tail run_… --after 12
//! runq agents deploy support ver_…
//! runq approvals approve apr_…
//! ```
//!
//! # Layout
//! - [`args`] — the command line (clap): every command, flag and environment variable.
//! - [`client`] — the HTTP client: the key header, and API errors as the server's message plus
//!   its request id.
//! - [`stream`] — reading a run's UI message stream (SSE), showing it, and resuming it after a
//!   dropped connection.
//! - [`commands`] — one module per command group (`run`, `batch`, `runs`, `agents`, `keys`,
//!   `approvals`, `login`).
//! - [`config`] — the URL and key `runq login` saves; flags and environment win over them.
//! - [`error`] — the CLI's one error type and its exit codes.

pub mod args;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod stream;
mod table;

use std::process::ExitCode;

use args::{Cli, Command};
use client::Client;
pub use error::{Error, Exit, Result};

/// Where runq-api listens when nothing says otherwise (`make run`'s address).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Runs one command line; errors are printed here, once, for people (no debug dumps).
pub async fn main(cli: Cli) -> ExitCode {
    // reqwest is built without a TLS provider of its own: use the ring one, as the services do
    let _ = rustls::crypto::ring::default_provider().install_default();
    match dispatch(cli).await {
        Ok(exit) => exit.code(),
        Err(error) => {
            eprintln!("error: {error}");
            if let Some(hint) = error.hint() {
                eprintln!("hint: {hint}");
            }
            Exit::Failure.code()
        }
    }
}

async fn dispatch(cli: Cli) -> Result<Exit> {
    let saved = config::load()?;
    let url = cli.url.or(saved.url).unwrap_or_else(|| DEFAULT_URL.to_owned());
    let key = cli.api_key.clone().or(saved.api_key);
    let client = || Client::new(&url, key.clone());
    match cli.command {
        // a new login asks for a key rather than re-saving the old one
        Command::Login => commands::login::login(&url, cli.api_key).await,
        Command::Logout => commands::login::logout(),
        Command::Run(args) => commands::run::run(&client()?, args).await,
        Command::Batch(args) => commands::batch::run(&client()?, args).await,
        Command::Runs(command) => commands::runs::run(&client()?, command).await,
        Command::Agents(command) => commands::agents::run(&client()?, command).await,
        Command::Keys(command) => commands::keys::run(&client()?, command).await,
        Command::Approvals(command) => commands::approvals::run(&client()?, command).await,
    }
}
