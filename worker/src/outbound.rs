//! The HTTP client for a call runq makes on a user's behalf (tools, webhooks): it connects to
//! exactly the addresses [`runq_shared::outbound::check`] approved and follows no redirect, so
//! neither a second DNS answer nor a redirect can reach an address that was not checked.

use std::time::Duration;

use runq_shared::outbound::Checked;

pub fn client(checked: &Checked, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .resolve_to_addrs(&checked.host, &checked.addrs)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
}
