//! The state every handler shares.

use std::sync::Arc;

use runq_shared::broker::Broker;
use runq_shared::crypto::MasterKey;
use sqlx::PgPool;

use crate::auth::AuthCache;

/// Cheap to clone: handles and an `Arc`.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub broker: Broker,
    pub master_key: MasterKey,
    pub auth: Arc<AuthCache>,
}
