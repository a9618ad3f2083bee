//! The settings `runq login` saves: a URL and a key, in `$XDG_CONFIG_HOME/runq/config.json`
//! (else `~/.config/runq/config.json`; `RUNQ_CONFIG` names another file), readable by its owner
//! only. Flags and environment variables win over it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Config {
    pub url: Option<String>,
    pub api_key: Option<String>,
}

/// Where the config file lives, when a home can be found.
pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RUNQ_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("runq").join("config.json"))
}

/// The saved settings; none when nothing was saved.
pub fn load() -> Result<Config> {
    let Some(path) = path() else { return Ok(Config::default()) };
    let name = path.display().to_string();
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Input(format!("{name}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(Error::io(name, e)),
    }
}

/// Saves the settings, readable by the owner only (the key is a secret).
pub fn save(config: &Config) -> Result<PathBuf> {
    let path = path().ok_or_else(|| Error::Input("no home directory: set RUNQ_CONFIG".into()))?;
    let name = path.display().to_string();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let json = serde_json::to_vec_pretty(config).map_err(|e| Error::Input(e.to_string()))?;
    std::io::Write::write_all(&mut options.open(&path).map_err(|e| Error::io(&name, e))?, &json)
        .map_err(|e| Error::io(&name, e))?;
    Ok(path)
}

/// Forgets the saved settings; whether there were any.
pub fn remove() -> Result<Option<PathBuf>> {
    let Some(path) = path() else { return Ok(None) };
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(Some(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path.display().to_string(), e)),
    }
}
