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
    /// Stopped by Ctrl-C (the shell's 128 + SIGINT).
    Interrupted,
}

impl Exit {
    pub fn code(self) -> ExitCode {
        match self {
            Self::Success => ExitCode::SUCCESS,
            Self::Failure => ExitCode::from(1),
            Self::Interrupted => ExitCode::from(130),
        }
    }
}
