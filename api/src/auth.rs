//! API key authentication with a short-lived in-process cache.
//!
//! Every `/v1` request authenticates, so a Postgres round trip each time would put the database
//! on the hot path of streaming. Verdicts are cached for a few seconds: a key revoked on this
//! replica stops working at once (the cache entry is dropped), and on other replicas within the
//! TTL. The same holds for a changed rate limit or plan, which is cached with the verdict.

use std::time::Duration;

use runq_shared::crypto::ApiKey;
use runq_shared::db::keys::{self, KeyAuth};
use runq_shared::id::{KeyId, WorkspaceId};
use runq_shared::ratelimit::PlanLimits;
use sqlx::PgPool;

use crate::error::{Error, Result};
use runq_shared::cache::TtlCache;

pub struct AuthCache {
    /// The plans' default rate limits, resolved into each verdict.
    plans: PlanLimits,
    /// Verdicts by the hash of the presented key.
    verdicts: TtlCache<[u8; 32], KeyAuth>,
}

impl AuthCache {
    pub fn new(ttl: Duration, plans: PlanLimits) -> Self {
        Self { plans, verdicts: TtlCache::new(ttl) }
    }

    /// Resolves a presented key, from the cache when fresh, else from Postgres.
    pub async fn authenticate(&self, db: &PgPool, presented: &str) -> Result<KeyAuth> {
        let key = ApiKey::parse(presented).map_err(|_| Error::Unauthorized("Invalid API key"))?;
        let hash = key.hash();
        if let Some(auth) = self.verdicts.get(&hash) {
            return Ok(auth);
        }
        let auth = keys::authenticate(db, &hash, &self.plans).await?.ok_or(Error::Unauthorized("Invalid API key"))?;
        self.verdicts.insert(hash, auth.clone());
        Ok(auth)
    }

    /// Forgets a key at once (after it was revoked through this replica).
    pub fn evict(&self, hash: &[u8; 32]) {
        self.verdicts.forget(|key, _| key == hash);
    }

    /// Forgets a key by id (after its rate limit changed through this replica).
    pub fn evict_key(&self, id: KeyId) {
        self.verdicts.forget(|_, auth| auth.key_id == id);
    }

    /// Forgets every key of a workspace (after its plan or limits changed through this replica).
    pub fn evict_workspace(&self, id: WorkspaceId) {
        self.verdicts.forget(|_, auth| auth.workspace_id == id);
    }
}
