//! The command line. Every command has `--help`; the URL and key come from flags or the
//! environment (`RUNQ_URL`, `RUNQ_API_KEY`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "runq", version, about = "Run runq agents, batches and keys from the terminal.")]
pub struct Cli {
    /// Base URL of runq-api [default: the one `runq login` saved, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "RUNQ_URL")]
    pub url: Option<String>,
    /// API key (`rq_…`): `run` scope for runs and batches, `manage` for agents and keys
    /// [default: the one `runq login` saved].
    #[arg(long, global = true, env = "RUNQ_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an agent and stream its answer; Ctrl-C cancels the run.
    Run(RunArgs),
    /// Submit a file of queries as one batch, follow its progress, write the results.
    Batch(BatchArgs),
    /// List, show, follow and cancel runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// List, create and deploy agents.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List tool calls that wait for a person; approve or deny them.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Check a key and save it with the URL, so later commands need neither (the key is read
    /// from stdin unless --api-key or RUNQ_API_KEY gives it).
    Login,
    /// Forget what `runq login` saved.
    Logout,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Agent id (`agt_…`) or slug.
    pub agent: String,
    /// The prompt.
    pub prompt: String,
    /// Fill a `{{name}}` placeholder of the agent's prompts (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Continue this thread (created under this id when new).
    #[arg(long)]
    pub thread: Option<String>,
    /// Print the finished run as JSON instead of streaming its text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Each line of FILE is a JSON string (the query) or an object such as \
    {\"query\": \"…\", \"variables\": {…}}.\nResume an interrupted batch with `runq batch --operation op_…`.")]
pub struct BatchArgs {
    /// Agent id (`agt_…`) or slug.
    #[arg(required_unless_present = "operation")]
    pub agent: Option<String>,
    /// JSON Lines file of queries.
    #[arg(required_unless_present = "operation")]
    pub file: Option<PathBuf>,
    /// Follow an operation submitted before instead of submitting a file.
    #[arg(long, value_name = "OP_ID", conflicts_with_all = ["agent", "file"])]
    pub operation: Option<String>,
    /// Write results here (one JSON line per query, in file order) instead of stdout.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Plain progress lines instead of a progress bar (the default when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    Ls(RunsLs),
    /// Show a run as JSON.
    Get {
        /// `run_…`
        run: String,
    },
    /// Stream a run's events, live or finished, from any point.
    Tail {
        /// `run_…`
        run: String,
        /// Start after this event seq (the SSE `id:`).
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Cancel a queued or running run.
    Cancel {
        /// `run_…`
        run: String,
    },
}

#[derive(Debug, Args)]
pub struct RunsLs {
    /// Only runs in this status (queued, running, requires_action, completed, failed, cancelled,
    /// timed_out).
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs of this agent (id or slug).
    #[arg(long)]
    pub agent: Option<String>,
    /// Only runs of this thread.
    #[arg(long)]
    pub thread: Option<String>,
    #[command(flatten)]
    pub page: PageArgs,
    /// Print the page as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct PageArgs {
    /// Page number, from 1.
    #[arg(long, default_value_t = 1)]
    pub page: u32,
    /// Items per page (1-100).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List agents.
    Ls {
        #[command(flatten)]
        page: PageArgs,
        /// Print the page as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an agent; with --provider and --model, also its first version.
    Create(AgentCreate),
    /// List an agent's versions, newest first.
    Versions {
        /// Agent id or slug.
        agent: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Deploy a version of an agent (rolling back is deploying an older one).
    Deploy {
        /// Agent id or slug.
        agent: String,
        /// `ver_…`
        version: String,
    },
}

#[derive(Debug, Args)]
pub struct AgentCreate {
    /// Display name.
    pub name: String,
    /// Slug (default: derived from the name).
    #[arg(long)]
    pub slug: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// Provider id (`prv_…`) or name of the first version.
    #[arg(long, requires = "model")]
    pub provider: Option<String>,
    /// Model of the first version.
    #[arg(long, requires = "provider")]
    pub model: Option<String>,
    /// System prompt of the first version (`{{name}}` placeholders allowed).
    #[arg(long, requires = "provider")]
    pub system_prompt: Option<String>,
    /// Built-in tool of the first version (repeatable).
    #[arg(long = "tool", requires = "provider")]
    pub tools: Vec<String>,
    /// Deploy the first version at once.
    #[arg(long, requires = "provider")]
    pub deploy: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Mint a key; the key itself is printed this once.
    Create {
        /// A name to recognise the key by.
        name: String,
        /// Scope (repeatable): run, manage, admin. Default: run.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// List keys (prefixes only).
    Ls {
        #[command(flatten)]
        page: PageArgs,
        /// Print the page as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; it stops working at once.
    Revoke {
        /// `key_…`
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals, newest first.
    Ls {
        /// Only approvals in this status.
        #[arg(long, value_parser = ["pending", "approved", "denied", "expired"])]
        status: Option<String>,
        #[command(flatten)]
        page: PageArgs,
        /// Print the page as JSON (with each call's `payload_hash`).
        #[arg(long)]
        json: bool,
    },
    /// Approve a tool call: the tool runs and the run goes on.
    Approve {
        /// `apr_…`
        approval: String,
        /// Why (kept with the decision).
        #[arg(long)]
        reason: Option<String>,
        /// The `payload_hash` of the arguments you checked (`runq approvals ls --json`); refused
        /// if the call's arguments differ.
        #[arg(long, value_name = "SHA256")]
        payload_hash: Option<String>,
    },
    /// Deny a tool call: the model is told so, with the reason, and the run goes on.
    Deny {
        /// `apr_…`
        approval: String,
        /// Why; this is what the model reads.
        #[arg(long)]
        reason: Option<String>,
    },
}

fn parse_var(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got `{raw}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn vars_split_at_the_first_equals_sign() {
        assert_eq!(parse_var("q=a=b"), Ok(("q".into(), "a=b".into())));
        assert!(parse_var("novalue").is_err());
        assert!(parse_var("=x").is_err());
    }
}
