//! Signed completion webhooks, after the Standard Webhooks spec (<https://www.standardwebhooks.com>):
//! event types, `whsec_` secrets, the `v1` signature and the retry schedule.
//!
//! A delivery is recorded in Postgres by a trigger on the run's status change (see the migration
//! `20261130100001_webhooks.sql` and [`crate::db::webhooks`]), so it is as durable as the run's
//! outcome; workers send what is due ([`crate::db::webhooks::claim_due`]).
//!
//! Headers of every delivery: `webhook-id` (the event id, the same for every retry, for the
//! receiver's deduplication), `webhook-timestamp` (Unix seconds of this attempt) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the
//! base64-decoded part of the secret after `whsec_`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{Error, Result};

/// What a webhook endpoint can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    /// A run completed.
    #[serde(rename = "run.completed")]
    RunCompleted,
    /// A run failed or ran out of time.
    #[serde(rename = "run.failed")]
    RunFailed,
    /// A run was cancelled.
    #[serde(rename = "run.cancelled")]
    RunCancelled,
    /// A run waits for a tool call's approval.
    #[serde(rename = "run.requires_action")]
    RunRequiresAction,
    /// Every run of an async request or a batch has ended.
    #[serde(rename = "operation.completed")]
    OperationCompleted,
}

impl EventType {
    pub const ALL: [Self; 5] =
        [Self::RunCompleted, Self::RunFailed, Self::RunCancelled, Self::RunRequiresAction, Self::OperationCompleted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunCompleted => "run.completed",
            Self::RunFailed => "run.failed",
            Self::RunCancelled => "run.cancelled",
            Self::RunRequiresAction => "run.requires_action",
            Self::OperationCompleted => "operation.completed",
        }
    }
}

const SECRET_PREFIX: &str = "whsec_";
/// Bytes of randomness in a secret (Standard Webhooks asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A signing secret, `whsec_<base64>`, as shown to the user once.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

impl SigningSecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{SECRET_PREFIX}{}", BASE64.encode(bytes)))
    }

    /// A secret as stored (after unsealing).
    pub fn from_stored(raw: Vec<u8>) -> Result<Self> {
        let raw = String::from_utf8(raw).map_err(|_| Error::Crypto)?;
        if !raw.starts_with(SECRET_PREFIX) {
            return Err(Error::Crypto);
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = BASE64.decode(&self.0[SECRET_PREFIX.len()..]).expect("secrets are generated as base64");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// Delays before each retry as multiples of the base step (5 s by default): 5 s, 5 min, 30 min,
/// 2 h, 5 h, 10 h, 10 h — the last attempt comes about a day and a quarter after the first.
const STEPS: [u32; 7] = [1, 60, 360, 1440, 3600, 7200, 7200];
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// When to try a delivery again.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The first retry's delay; later ones are fixed multiples of it (5 s in production; tests
    /// shorten it).
    pub base: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self { base: Duration::from_secs(5) }
    }
}

impl Schedule {
    /// Most attempts of one delivery (the first, immediate one included).
    pub const MAX_ATTEMPTS: u32 = STEPS.len() as u32 + 1;

    /// The delay after failed attempt `attempt` (1-based), ±10 % jitter so that receivers
    /// coming back up are not hit by every retry at once; `retry_after` (the receiver's own
    /// `Retry-After`) wins when longer. `None`: no attempts left.
    pub fn next(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let step = *STEPS.get(usize::try_from(attempt).ok()?.checked_sub(1)?)?;
        let delay = self.base.saturating_mul(step).mul_f64(rand::random_range(0.9..1.1));
        Some(retry_after.map_or(delay, |after| after.min(MAX_RETRY_AFTER).max(delay)))
    }
}

/// A `Retry-After` header in seconds (the HTTP-date form is ignored).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_test_vector() {
        // the spec's reference vector (svix libraries' tests)
        let secret = SigningSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        let body = br#"{"test": 2432232314}"#;
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secrets_carry_the_prefix_and_never_print() {
        let secret = SigningSecret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        assert!(!format!("{secret:?}").contains(&secret.expose()[6..]));
        assert_ne!(secret, SigningSecret::generate());
    }

    #[test]
    fn retries_follow_the_schedule_then_stop() {
        let schedule = Schedule::default();
        let first = schedule.next(1, None).unwrap();
        assert!(first >= Duration::from_millis(4500) && first <= Duration::from_millis(5500), "{first:?}");
        let second = schedule.next(2, None).unwrap();
        assert!(second >= Duration::from_secs(270) && second <= Duration::from_secs(330), "{second:?}");
        assert!(schedule.next(Schedule::MAX_ATTEMPTS - 1, None).is_some());
        assert!(schedule.next(Schedule::MAX_ATTEMPTS, None).is_none());
        let later = schedule.next(1, Some(Duration::from_secs(120))).unwrap();
        assert_eq!(later, Duration::from_secs(120), "a longer Retry-After wins");
    }

    #[test]
    fn event_types_use_their_wire_names() {
        for event in EventType::ALL {
            assert_eq!(serde_json::to_value(event).unwrap(), event.as_str());
        }
        assert!(serde_json::from_str::<EventType>("\"run.exploded\"").is_err());
    }
}
