//! Per-key request rate limits.
//!
//! Each key has a fixed window counter in Redis (`INCR` + `EXPIRE` in one script, so one round
//! trip), which every API replica increments: they all draw on one budget and none keeps a
//! counter of its own. A key's effective limit is resolved when it authenticates
//! ([`effective_limit`]) and cached with the verdict, so the check adds no Postgres query.
//!
//! Windows are aligned on the epoch (`[k·w, (k+1)·w)`), so replicas agree on them without
//! talking to each other; the price of a single counter is that a client may spend two windows'
//! budget around a boundary.
//!
//! When Redis cannot be asked the request is let through: the limit protects capacity, and
//! refusing every request while Redis is away would take the whole API down with it.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionLike;

use crate::broker::Broker;
use crate::domain::Plan;
use crate::id::KeyId;

/// Requests per window of the plans that have a limit; `enterprise` has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    pub free: u32,
    pub pro: u32,
}

impl PlanLimits {
    /// The plan's default limit; `None` is unlimited.
    pub const fn of(&self, plan: Plan) -> Option<u32> {
        match plan {
            Plan::Free => Some(self.free),
            Plan::Pro => Some(self.pro),
            Plan::Enterprise => None,
        }
    }
}

/// The limit a key is held to: its own override, else its workspace's custom limit, else its
/// plan's default. `None` is unlimited.
pub fn effective_limit(key: Option<i32>, workspace: Option<i32>, plan: Plan, plans: &PlanLimits) -> Option<u32> {
    key.or(workspace).map(|n| n.max(1).unsigned_abs()).or_else(|| plans.of(plan))
}

/// The fixed window holding an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Windows since the epoch: part of the counter's name.
    pub index: u64,
    /// When the window ends, in epoch seconds.
    pub reset: u64,
}

impl Window {
    /// The window of `secs` seconds holding `now` (epoch seconds).
    pub const fn at(now: u64, secs: u64) -> Self {
        let secs = if secs == 0 { 1 } else { secs };
        let index = now / secs;
        Self { index, reset: (index + 1) * secs }
    }
}

/// The verdict on one counted request, and what its response headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// `X-RateLimit-Limit`: requests allowed per window.
    pub limit: u32,
    /// Requests of the key counted in this window, this one included.
    pub count: u64,
    /// `X-RateLimit-Reset`: when the window ends, in epoch seconds.
    pub reset: u64,
    /// `Retry-After` of a refused request: whole seconds until the window ends, at least 1.
    pub retry_after: u64,
}

impl RateInfo {
    pub fn new(limit: u32, count: u64, now: u64, window: Window) -> Self {
        Self { limit, count, reset: window.reset, retry_after: window.reset.saturating_sub(now).max(1) }
    }

    /// Whether the request fits in the budget.
    pub fn allowed(&self) -> bool {
        self.count <= u64::from(self.limit)
    }

    /// `X-RateLimit-Remaining`: requests left in this window.
    pub fn remaining(&self) -> u64 {
        u64::from(self.limit).saturating_sub(self.count)
    }
}

// KEYS: the window's counter. ARGV: its time to live, in seconds (set by the first hit).
static HIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local n = redis.call('INCR', KEYS[1])
        if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
        return n
        ",
    )
});

/// Counts one request on the counter `key`, which expires `ttl_secs` after its first hit; returns
/// the count so far. One round trip.
pub async fn hit(conn: &mut impl ConnectionLike, key: &str, ttl_secs: u64) -> redis::RedisResult<u64> {
    HIT.key(key).arg(ttl_secs.max(1)).invoke_async(conn).await
}

/// Counts requests against per-key limits in fixed windows.
#[derive(Debug)]
pub struct Limiter {
    window_secs: u64,
    /// Whether the last check failed to reach Redis, so an outage is logged once, not per request.
    failing: AtomicBool,
}

impl Limiter {
    pub fn new(window_secs: u64) -> Self {
        Self { window_secs: window_secs.max(1), failing: AtomicBool::new(false) }
    }

    /// The length of a window, in seconds.
    pub fn window_secs(&self) -> u64 {
        self.window_secs
    }

    /// Counts one request of `key` against `limit`. `None` when Redis could not be asked: the
    /// request is then let through (fail open), and the outage is logged when it starts and ends.
    pub async fn check(&self, broker: &Broker, key: KeyId, limit: u32) -> Option<RateInfo> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let window = Window::at(now, self.window_secs);
        let counter = broker.key(&format!("rl:{key}:{}", window.index));
        match hit(&mut broker.conn.clone(), &counter, self.window_secs).await {
            Ok(count) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limits enforced again: Redis answers");
                }
                Some(RateInfo::new(limit, count, now, window))
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "rate limits not enforced: Redis is unreachable, requests are let through");
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLANS: PlanLimits = PlanLimits { free: 100, pro: 1000 };

    #[test]
    fn the_key_override_wins_then_the_workspace_limit_then_the_plan() {
        assert_eq!(effective_limit(Some(5), Some(50), Plan::Pro, &PLANS), Some(5));
        assert_eq!(effective_limit(None, Some(50), Plan::Pro, &PLANS), Some(50));
        assert_eq!(effective_limit(None, None, Plan::Free, &PLANS), Some(100));
        assert_eq!(effective_limit(None, None, Plan::Pro, &PLANS), Some(1000));
        assert_eq!(effective_limit(None, None, Plan::Enterprise, &PLANS), None);
        assert_eq!(effective_limit(Some(7), None, Plan::Enterprise, &PLANS), Some(7), "an override limits anyone");
    }

    #[test]
    fn windows_are_aligned_on_the_epoch() {
        assert_eq!(Window::at(7, 3), Window { index: 2, reset: 9 });
        assert_eq!(Window::at(9, 3), Window { index: 3, reset: 12 });
        assert_eq!(Window::at(3599, 3600), Window { index: 0, reset: 3600 });
        assert_eq!(Window::at(5, 0), Window { index: 5, reset: 6 }, "a zero window is one second");
    }

    #[test]
    fn remaining_counts_down_to_zero_and_the_next_request_is_refused() {
        let window = Window::at(100, 60);
        let remaining: Vec<u64> = (1..=5).map(|n| RateInfo::new(5, n, 100, window).remaining()).collect();
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        assert!((1..=5).all(|n| RateInfo::new(5, n, 100, window).allowed()));

        let refused = RateInfo::new(5, 6, 100, window);
        assert!(!refused.allowed());
        assert_eq!(refused.remaining(), 0);
        assert_eq!(refused.reset, 120);
        assert_eq!(refused.retry_after, 20);
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let window = Window::at(119, 60);
        assert_eq!(RateInfo::new(1, 2, 119, window).retry_after, 1);
        // a clock read after the window's end (a slow request) still says "retry in a second"
        assert_eq!(RateInfo::new(1, 2, 125, window).retry_after, 1);
    }
}
