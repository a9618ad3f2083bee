//! URLs from clients (webhooks, tools), checked against the outbound address rules before
//! anything is recorded (the worker checks again when it calls: DNS may have changed since).

use runq_shared::outbound;

use crate::error::{Error, Result};
use crate::state::AppState;

/// Most characters of a URL.
const MAX_URL_LEN: usize = 2048;

/// Checks the URL given in `field`; returns it normalised.
pub async fn check_url(state: &AppState, field: &str, raw: &str) -> Result<String> {
    if raw.len() > MAX_URL_LEN {
        return Err(Error::invalid(field, format!("must be at most {MAX_URL_LEN} characters")));
    }
    let checked = outbound::check(raw, state.outbound.allow_private_targets)
        .await
        .map_err(|refused| Error::invalid(field, refused.to_string()))?;
    Ok(checked.url.to_string())
}
