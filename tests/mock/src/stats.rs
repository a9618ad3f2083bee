//! Request counters exposed at `GET /_mock/stats` and [`crate::MockServer::stats`].
//!
//! Counters are atomics so the hot path never waits on a lock; the per-key
//! map is only write-locked the first time a key is seen (and on reset).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

/// Snapshot of the server's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Provider requests received (control endpoints excluded).
    pub requests: u64,
    /// Requests whose response was fully sent (error replies included).
    pub completed: u64,
    /// Requests whose client went away before the response finished.
    pub disconnected: u64,
    /// Requests currently being served, response bodies included.
    pub in_flight: u64,
    /// High-water mark of `in_flight` since start or the last reset.
    pub max_in_flight: u64,
    /// The same gauges split by API key (`""` when none was sent).
    pub per_key: BTreeMap<String, KeyStats>,
}

/// Per-API-key counters; lets tests check runq's per-key concurrency limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStats {
    pub in_flight: u64,
    pub max_in_flight: u64,
    pub requests: u64,
}

#[derive(Default)]
struct Gauge {
    requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

impl Gauge {
    fn enter(&self) {
        self.requests.fetch_add(1, Relaxed);
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Relaxed);
    }

    fn leave(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    fn reset(&self) {
        // `in_flight` is a live gauge: zeroing it would underflow when the
        // requests that are still running finish.
        self.requests.store(0, Relaxed);
        self.max_in_flight.store(self.in_flight.load(Relaxed), Relaxed);
    }

    fn snapshot(&self) -> KeyStats {
        KeyStats {
            in_flight: self.in_flight.load(Relaxed),
            max_in_flight: self.max_in_flight.load(Relaxed),
            requests: self.requests.load(Relaxed),
        }
    }
}

#[derive(Default)]
pub(crate) struct StatsRegistry {
    total: Gauge,
    completed: AtomicU64,
    disconnected: AtomicU64,
    per_key: RwLock<HashMap<String, Arc<Gauge>>>,
}

impl StatsRegistry {
    /// Counts a new request; the returned guard keeps it in flight.
    pub(crate) fn begin(self: &Arc<Self>, key: &str) -> RequestGuard {
        self.total.enter();
        // Entering happens under the map lock so `reset` can never drop an
        // entry between our lookup and our increment.
        let gauge = {
            let map = self.per_key.read().unwrap_or_else(PoisonError::into_inner);
            map.get(key).map(|gauge| {
                gauge.enter();
                Arc::clone(gauge)
            })
        };
        let gauge = gauge.unwrap_or_else(|| {
            let mut map = self.per_key.write().unwrap_or_else(PoisonError::into_inner);
            let gauge = map.entry(key.to_owned()).or_default();
            gauge.enter();
            Arc::clone(gauge)
        });
        RequestGuard { registry: Arc::clone(self), key: gauge, done: false }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let total = self.total.snapshot();
        let per_key = self
            .per_key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key, gauge)| (key.clone(), gauge.snapshot()))
            .collect();
        Stats {
            requests: total.requests,
            completed: self.completed.load(Relaxed),
            disconnected: self.disconnected.load(Relaxed),
            in_flight: total.in_flight,
            max_in_flight: total.max_in_flight,
            per_key,
        }
    }

    pub(crate) fn reset(&self) {
        self.total.reset();
        self.completed.store(0, Relaxed);
        self.disconnected.store(0, Relaxed);
        let mut map = self.per_key.write().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, gauge| {
            gauge.reset();
            gauge.in_flight.load(Relaxed) > 0
        });
    }
}

/// Keeps one request "in flight" until it is finished or dropped.
///
/// It travels inside the response body stream, so a client that hangs up
/// mid-stream drops it unfinished and is counted as `disconnected`.
pub(crate) struct RequestGuard {
    registry: Arc<StatsRegistry>,
    key: Arc<Gauge>,
    done: bool,
}

impl RequestGuard {
    /// Marks the response as fully produced. Called *before* the last bytes
    /// are handed to hyper, so a client that has read the whole response
    /// always sees it counted.
    pub(crate) fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.registry.completed.fetch_add(1, Relaxed);
            self.leave();
        }
    }

    fn leave(&self) {
        self.key.leave();
        self.registry.total.leave();
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if !self.done {
            self.registry.disconnected.fetch_add(1, Relaxed);
            self.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_completed_and_disconnected() {
        let registry = Arc::new(StatsRegistry::default());
        let mut a = registry.begin("k1");
        let b = registry.begin("k1");
        let c = registry.begin("k2");
        let s = registry.snapshot();
        assert_eq!((s.requests, s.in_flight, s.max_in_flight), (3, 3, 3));
        assert_eq!(s.per_key["k1"].in_flight, 2);
        a.finish();
        drop(a);
        drop(b);
        registry.reset();
        let s = registry.snapshot();
        assert_eq!((s.requests, s.completed, s.disconnected), (0, 0, 0));
        assert_eq!((s.in_flight, s.max_in_flight), (1, 1));
        assert!(!s.per_key.contains_key("k1"), "idle keys are forgotten");
        drop(c);
        let s = registry.snapshot();
        assert_eq!((s.in_flight, s.disconnected), (0, 1));
    }
}
