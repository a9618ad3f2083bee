//! The CLI's one error type: what went wrong, said for a person, and how the process exits.

use std::process::ExitCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the request: its own message, code and request id.
    #[error("{message} ({code}, HTTP {status}, request id {})", .request_id.as_deref().unwrap_or("none"))]
    Api { status: u16, code: String, message: String, request_id: Option<String> },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The server answered something this client does not understand.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
    /// Bad input on the command line or in an input file.
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl Error {
    /// A next step for the person, where there is an obvious one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Api { status: 401, .. } => Some("pass a valid key with --api-key or RUNQ_API_KEY"),
            Self::Api { code, .. } if code == "approval_decided" => {
                Some("someone decided first: `runq approvals ls` shows the decision")
            }
            Self::Api { code, .. } if code == "payload_hash_mismatch" => {
                Some("the call's arguments are not the ones you checked: look again with `runq approvals ls --json`")
            }
            Self::Connect { .. } => Some("is runq-api running there? set the address with --url or RUNQ_URL"),
            _ => None,
        }
    }

    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// How a command that did not error ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// The command ran, and what it reports failed (a failed run, failed batch items).
    Failure,
    /// The run waits for a person to approve or deny a tool call (`requires_action`).
    Waiting,
    /// Stopped by Ctrl-C (the shell's 128 + SIGINT).
    Interrupted,
}

impl Exit {
    /// How a command that followed a run ends, by the run's status.
    pub fn of_run(run: &serde_json::Value) -> Self {
        match run["status"].as_str() {
            Some("completed") => Self::Success,
            Some("requires_action") => Self::Waiting,
            _ => Self::Failure,
        }
    }

    pub fn code(self) -> ExitCode {
        match self {
            Self::Success => ExitCode::SUCCESS,
            Self::Failure => ExitCode::from(1),
            Self::Waiting => ExitCode::from(3),
            Self::Interrupted => ExitCode::from(130),
        }
    }
}
