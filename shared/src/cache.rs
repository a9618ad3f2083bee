//! A small in-process cache whose entries expire after a fixed time: what a process keeps of
//! Postgres rows it would otherwise read on every request (the API's key verdicts and agents ready
//! for runs, a worker's versions).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Entries beyond this are dropped wholesale rather than tracked with an LRU: the working set is
/// small (live keys, agents in use), and a refill costs one query per entry.
const MAX_ENTRIES: usize = 10_000;

pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: RwLock<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: RwLock::default() }
    }

    /// The entry for `key`, unless it is older than the TTL.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(key).filter(|(_, at)| at.elapsed() < self.ttl).map(|(value, _)| value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (value, Instant::now()));
    }

    /// Forgets the entries `forget` picks.
    pub fn forget(&self, forget: impl Fn(&K, &V) -> bool) {
        self.entries.write().unwrap_or_else(|e| e.into_inner()).retain(|key, (value, _)| !forget(key, value));
    }
}
