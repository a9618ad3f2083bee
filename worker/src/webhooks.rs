//! Sending webhook deliveries: a loop beside the reconciler takes due deliveries (recorded with
//! the run's status change, see [`runq_shared::db::webhooks`]), signs and posts them, and records
//! each attempt. It never holds up a run: runs only wake it.
//!
//! Each target is checked against the outbound address rules at send time and the request goes
//! to exactly the checked addresses, with redirects not followed. A 2xx delivers; 410 Gone
//! disables the endpoint; anything else (or no answer within 15 s) is retried on the schedule
//! of [`Schedule`], or after the receiver's `Retry-After` when that is longer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runq_shared::db::webhooks::{self, AttemptResult, Due, Next};
use runq_shared::metrics as m;
use runq_shared::outbound::{self, Refused};
use runq_shared::webhooks::{Schedule, SigningSecret, parse_retry_after};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::execute::Ctx;

/// Most deliveries taken (and sent concurrently) at once.
const BATCH: i64 = 32;
/// A receiver's whole answer must come within this.
const TIMEOUT: Duration = Duration::from_secs(15);
/// While a delivery is being sent, others leave it alone this long (the timeout, with margin).
const LEASE: Duration = Duration::from_secs(60);
/// Most bytes of a response body kept with the attempt.
const EXCERPT: usize = 1024;

/// How deliveries are sent.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub schedule: Schedule,
    pub allow_private_targets: bool,
    /// How often due deliveries are looked for when nothing wakes the loop.
    pub poll: Duration,
}

/// Sends due deliveries until `shutdown`: whenever a run ends here, and every `poll` otherwise
/// (retries, and runs ended by other processes).
pub async fn deliver(ctx: Arc<Ctx>, settings: Settings, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.webhooks_due.notified() => {}
            _ = tokio::time::sleep(settings.poll) => {}
        }
        loop {
            let due = match webhooks::claim_due(&ctx.db, BATCH, LEASE).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "taking due webhook deliveries failed");
                    break;
                }
            };
            let full = i64::try_from(due.len()).unwrap_or(i64::MAX) >= BATCH;
            futures::future::join_all(due.into_iter().map(|due| send(&ctx, &settings, due))).await;
            if !full {
                break;
            }
        }
    }
}

/// One attempt at one delivery; failures to record it leave the delivery to be taken again once
/// its lease passes (at least once, never lost).
async fn send(ctx: &Ctx, settings: &Settings, due: Due) {
    let span = tracing::info_span!("webhook", delivery_id = %due.id, event_id = %due.event_id,
        event_type = %due.event_type, attempt = due.attempts);
    async move {
        let (result, next, refused) = match attempt(ctx, settings, &due).await {
            Ok(attempted) => attempted,
            Err(e) => {
                tracing::warn!(error = ?e, "webhook delivery could not be attempted; it is retried after its lease");
                return;
            }
        };
        let outcome = match next {
            Next::Delivered => "delivered",
            Next::Retry(_) => "retrying",
            Next::Failed if refused => "refused",
            Next::Failed => "failed",
            Next::Disabled => "disabled",
        };
        metrics::counter!(m::WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome).increment(1);
        let elapsed_ms = u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(outcome, status_code = result.status_code, elapsed_ms, "webhook attempt");
        if let Err(e) = webhooks::record(&ctx.db, &due, &result, next).await {
            tracing::warn!(error = %e, "recording a webhook attempt failed; it is retried after its lease");
        }
    }
    .instrument(span)
    .await;
}

/// Signs and posts `due`; returns what came back, what follows, and whether the target was
/// refused by the address rules.
async fn attempt(ctx: &Ctx, settings: &Settings, due: &Due) -> anyhow::Result<(AttemptResult, Next, bool)> {
    let secret = secret(ctx, due).await?;
    let body = serde_json::to_vec(&due.payload.0)?;
    let started = Instant::now();
    let attempt = u32::try_from(due.attempts).unwrap_or(u32::MAX);
    let checked = match outbound::check(&due.url, settings.allow_private_targets).await {
        Ok(checked) => checked,
        Err(refused) => {
            let result = AttemptResult {
                status_code: None,
                response: Some(format!("refused: {refused}")),
                duration: started.elapsed(),
            };
            // a name that does not resolve may come back; a private address will not stop being one
            return Ok(match refused {
                Refused::Unresolved => (result, retry(settings, attempt, None), false),
                _ => (result, Next::Failed, true),
            });
        }
    };
    let client = crate::outbound::client(&checked, TIMEOUT)?;
    let id = due.event_id.to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let response = client
        .post(checked.url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("runq-webhooks/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", secret.sign(&id, timestamp, &body))
        .body(body)
        .send()
        .await;
    let mut response = match response {
        Ok(response) => response,
        Err(e) => {
            let result =
                AttemptResult { status_code: None, response: Some(error_chain(&e)), duration: started.elapsed() };
            return Ok((result, retry(settings, attempt, None), false));
        }
    };
    let status = response.status();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    let mut excerpt = Vec::new();
    while excerpt.len() < EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk[..chunk.len().min(EXCERPT - excerpt.len())]),
            _ => break,
        }
    }
    let result = AttemptResult {
        status_code: Some(status.as_u16()),
        response: Some(String::from_utf8_lossy(&excerpt).into_owned()),
        duration: started.elapsed(),
    };
    let next = if status.is_success() {
        Next::Delivered
    } else if status == reqwest::StatusCode::GONE {
        if due.endpoint_id.is_some() { Next::Disabled } else { Next::Failed }
    } else {
        retry(settings, attempt, retry_after)
    };
    Ok((result, next, false))
}

fn retry(settings: &Settings, attempt: u32, retry_after: Option<Duration>) -> Next {
    settings.schedule.next(attempt, retry_after).map_or(Next::Failed, Next::Retry)
}

/// The endpoint's secret, or for a run's own URL the workspace's default one (made now if the
/// workspace never had one: whoever wants to verify rotates it to see it).
async fn secret(ctx: &Ctx, due: &Due) -> anyhow::Result<SigningSecret> {
    let sealed = match &due.endpoint_secret {
        Some(sealed) => sealed.clone(),
        None => {
            webhooks::default_secret(&ctx.db, due.workspace_id, || {
                ctx.master_key.seal(SigningSecret::generate().expose().as_bytes())
            })
            .await?
        }
    };
    Ok(SigningSecret::from_stored(ctx.master_key.open(&sealed)?)?)
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
