//! API key authentication with a short-lived in-process cache.
//!
//! Every `/v1` request authenticates, so a Postgres round trip each time would put the database
//! on the hot path of streaming. Verdicts are cached for a few seconds: a key revoked on this
//! replica stops working at once (the cache entry is dropped), and on other replicas within the
//! TTL. The same holds for a changed rate limit or plan, which is cached with the verdict.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use runq_shared::crypto::ApiKey;
use runq_shared::db::keys::{self, KeyAuth};
use runq_shared::id::{KeyId, WorkspaceId};
use runq_shared::ratelimit::PlanLimits;
use sqlx::PgPool;

use crate::error::{Error, Result};

/// Entries beyond this are dropped wholesale rather than tracked with an LRU: the working set of
/// live keys is small, and a refill costs one query per key.
const MAX_ENTRIES: usize = 10_000;

pub struct AuthCache {
    ttl: Duration,
    /// The plans' default rate limits, resolved into each verdict.
    plans: PlanLimits,
    entries: RwLock<HashMap<[u8; 32], (KeyAuth, Instant)>>,
}

impl AuthCache {
    pub fn new(ttl: Duration, plans: PlanLimits) -> Self {
        Self { ttl, plans, entries: RwLock::default() }
    }

    /// Resolves a presented key, from the cache when fresh, else from Postgres.
    pub async fn authenticate(&self, db: &PgPool, presented: &str) -> Result<KeyAuth> {
        let key = ApiKey::parse(presented).map_err(|_| Error::Unauthorized("Invalid API key"))?;
        let hash = key.hash();
        if let Some(auth) = self.cached(&hash) {
            return Ok(auth);
        }
        let auth = keys::authenticate(db, &hash, &self.plans).await?.ok_or(Error::Unauthorized("Invalid API key"))?;
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, (auth.clone(), Instant::now()));
        Ok(auth)
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<KeyAuth> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(hash).filter(|(_, at)| at.elapsed() < self.ttl).map(|(auth, _)| auth.clone())
    }

    /// Forgets a key at once (after it was revoked through this replica).
    pub fn evict(&self, hash: &[u8; 32]) {
        self.entries.write().unwrap_or_else(|e| e.into_inner()).remove(hash);
    }

    /// Forgets a key by id (after its rate limit changed through this replica).
    pub fn evict_key(&self, id: KeyId) {
        self.entries.write().unwrap_or_else(|e| e.into_inner()).retain(|_, (auth, _)| auth.key_id != id);
    }

    /// Forgets every key of a workspace (after its plan or limits changed through this replica).
    pub fn evict_workspace(&self, id: WorkspaceId) {
        self.entries.write().unwrap_or_else(|e| e.into_inner()).retain(|_, (auth, _)| auth.workspace_id != id);
    }
}
