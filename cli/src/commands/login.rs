//! `runq login` / `runq logout`: save or forget the URL and key, so later commands need neither.

use std::io::{BufRead, IsTerminal, Write};

use crate::client::Client;
use crate::config::{self, Config};
use crate::error::{Error, Exit, Result};

/// Checks the key against the server (any valid key may list runs), then saves both.
pub async fn login(url: &str, key: Option<String>) -> Result<Exit> {
    let key = match key {
        Some(key) => key,
        None => prompt_key()?,
    };
    let client = Client::new(url, Some(key.clone()))?;
    client.get("/v1/runs?limit=1").await?;
    let path = config::save(&Config { url: Some(url.to_owned()), api_key: Some(key) })?;
    eprintln!("signed in to {url}; saved to {}", path.display());
    Ok(Exit::Success)
}

pub fn logout() -> Result<Exit> {
    match config::remove()? {
        Some(path) => eprintln!("removed {}", path.display()),
        None => eprintln!("nothing saved"),
    }
    Ok(Exit::Success)
}

/// Reads the key from stdin (one line), asking for it when stdin is a terminal; a key typed on
/// the command line would stay in the shell's history.
fn prompt_key() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("API key: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(|e| Error::io("stdin", e))?;
    let key = line.trim().to_owned();
    if key.is_empty() {
        return Err(Error::Input("no API key given (type it, pipe it in, or set RUNQ_API_KEY)".into()));
    }
    Ok(key)
}
