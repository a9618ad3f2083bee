//! Agents ready to take runs, cached for a few seconds like key verdicts ([`crate::auth`]).
//!
//! Every run request resolves its agent and the deployed version ([`admission::resolve`]): one
//! Postgres round trip per run, which in the sustained bench cost Postgres more CPU than the
//! grouped writes of the run's whole life. Only agents that can take runs are kept (a refusal is
//! asked again). A change made through this replica (an agent updated or archived, a version
//! created or deployed, a workspace's concurrency limit) drops the workspace's entries at once;
//! other replicas see it once their entry expires (`RUNQ_AGENT_CACHE_TTL_MS`).

use std::time::Duration;

use runq_shared::admission::{self, Target};
use runq_shared::domain::AgentRef;
use runq_shared::id::WorkspaceId;
use sqlx::PgPool;

use runq_shared::cache::TtlCache;

pub struct TargetCache {
    targets: TtlCache<(WorkspaceId, AgentRef), Target>,
}

impl TargetCache {
    pub fn new(ttl: Duration) -> Self {
        Self { targets: TtlCache::new(ttl) }
    }

    /// The agent `agent` of `workspace` with its deployed version, from the cache when fresh.
    pub async fn resolve(&self, db: &PgPool, workspace: WorkspaceId, agent: &AgentRef) -> runq_shared::Result<Target> {
        let key = (workspace, agent.clone());
        if let Some(target) = self.targets.get(&key) {
            return Ok(target);
        }
        let target = admission::resolve(db, workspace, agent).await?;
        self.targets.insert(key, target.clone());
        Ok(target)
    }

    /// Forgets a workspace's agents (after one of them, or the workspace, changed here).
    pub fn evict_workspace(&self, workspace: WorkspaceId) {
        self.targets.forget(|(owner, _), _| *owner == workspace);
    }
}
