//! Per-key rate limits at the HTTP edge.
//!
//! [`headers`], a middleware around every route, leaves an empty [`RateSlot`] in the request.
//! The [`Caller`](crate::extract::Caller) extractor counts the request right after
//! authenticating ([`admit`]): it fills the slot, and refuses with 429 when the key's window is
//! spent, before the handler runs. The middleware then copies the verdict into the
//! `X-RateLimit-*` headers of whatever response came back (success, error or 429 alike), which
//! an extractor's rejection could not do by itself. Keys without a limit skip Redis and carry no
//! such headers.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use runq_shared::db::keys::KeyAuth;
use runq_shared::ratelimit::RateInfo;

use crate::error::{Error, Result};
use crate::state::AppState;

const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Where the request's verdict is left for the response headers: shared, because the request
/// (and its extensions) is gone by the time the response passes back through the middleware.
#[derive(Debug, Clone, Default)]
pub struct RateSlot(Arc<OnceLock<RateInfo>>);

/// Adds `X-RateLimit-Limit`, `-Remaining` and `-Reset` to responses of rate-limited keys.
pub async fn headers(mut request: Request, next: Next) -> Response {
    let slot = RateSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    if let Some(info) = slot.0.get() {
        let headers = response.headers_mut();
        headers.insert(LIMIT, HeaderValue::from(info.limit));
        headers.insert(REMAINING, HeaderValue::from(info.remaining()));
        headers.insert(RESET, HeaderValue::from(info.reset));
    }
    response
}

/// Counts the request against the key's limit; a spent window is a 429 and the request is not
/// executed. Unlimited keys are not counted. When Redis cannot be asked the request goes
/// through (see [`runq_shared::ratelimit`]).
pub async fn admit(state: &AppState, parts: &Parts, auth: &KeyAuth) -> Result<()> {
    let Some(limit) = auth.rate_limit else {
        return Ok(());
    };
    let Some(info) = state.rate_limiter.check(&state.broker, auth.key_id, limit).await else {
        return Ok(());
    };
    if let Some(slot) = parts.extensions.get::<RateSlot>() {
        // a request is counted once: `Caller` reuses its first verdict if extracted again
        let _ = slot.0.set(info);
    }
    if info.allowed() {
        Ok(())
    } else {
        tracing::debug!(key_id = %auth.key_id, limit, "rate limited");
        Err(Error::RateLimited { limit, reset: info.reset, retry_after: info.retry_after })
    }
}

/// The request's counted verdict, for handlers that report usage. Extract it after
/// [`Caller`](crate::extract::Caller); `None` when the key is unlimited (or Redis could not be
/// asked).
#[derive(Debug, Clone, Copy)]
pub struct Counted(pub Option<RateInfo>);

impl<S: Send + Sync> FromRequestParts<S> for Counted {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(parts.extensions.get::<RateSlot>().and_then(|slot| slot.0.get().copied())))
    }
}
