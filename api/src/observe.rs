//! What operators see of the API: one log line and two metrics per request, and the Prometheus
//! exposition of `GET /metrics`.
//!
//! [`requests`] wraps every route. It logs `request finished` at info (method, route template,
//! status, duration, request id, workspace) inside the request span, so `RUNQ_LOG_FORMAT=json`
//! makes it a JSON line like any other; it counts the response in `runq_http_requests_total` and
//! `runq_http_request_duration_seconds` by route template (never the raw path, so ids do not
//! become label values); and it makes the request id current for the request's task, so the jobs
//! the request pushes carry it to the worker.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::PrometheusHandle;
use runq_shared::broker::Broker;
use runq_shared::id::WorkspaceId;
use runq_shared::metrics as m;
use runq_shared::queue::{self, Depth};
use tokio::sync::Mutex;

/// How long a queue measurement is reused: scrapes (from any number of Prometheus servers) cost
/// Redis at most one round trip per this interval.
const QUEUE_TTL: Duration = Duration::from_secs(5);
/// Route label of requests no route matched (404s of unknown paths).
const UNMATCHED: &str = "unmatched";

/// Where the caller's workspace is left for the log line, once the key is authenticated: the
/// request and its extensions are gone by the time the response comes back.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceSlot(Arc<OnceLock<WorkspaceId>>);

impl WorkspaceSlot {
    pub fn set(&self, workspace: WorkspaceId) {
        let _ = self.0.set(workspace);
    }
}

/// Logs and measures one request (see the module docs).
pub async fn requests(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let route = route.unwrap_or_else(|| UNMATCHED.to_owned());
    let request_id =
        request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned).unwrap_or_default();
    let workspace = WorkspaceSlot::default();
    request.extensions_mut().insert(workspace.clone());

    let response = runq_shared::telemetry::with_request_id(request_id.clone(), next.run(request)).await;

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    m::http_request(&route, status, elapsed);
    let workspace_id = workspace.0.get().map(ToString::to_string);
    tracing::info!(
        method = %method,
        route,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        request_id,
        workspace_id,
        "request finished"
    );
    response
}

/// The process's metrics, and the cached queue measurement `/metrics` adds to them.
pub struct Metrics {
    handle: PrometheusHandle,
    queue: Mutex<Option<(Instant, Depth)>>,
}

impl Metrics {
    pub fn install() -> Self {
        Self { handle: m::install(), queue: Mutex::new(None) }
    }

    /// The exposition, with the queue gauges refreshed when their measurement is older than
    /// [`QUEUE_TTL`]. A Redis failure leaves the last values (and is logged).
    pub async fn render(&self, broker: &Broker) -> String {
        let depth = {
            let mut cached = self.queue.lock().await;
            match *cached {
                Some((at, depth)) if at.elapsed() < QUEUE_TTL => Some(depth),
                _ => match queue::depth(&mut broker.conn.clone(), broker.queue()).await {
                    Ok(depth) => {
                        *cached = Some((Instant::now(), depth));
                        Some(depth)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "queue depth unavailable for /metrics");
                        None
                    }
                },
            }
        };
        if let Some(depth) = depth {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(m::QUEUE_DEPTH).set(depth.jobs as f64);
            let age_us = depth.oldest_pushed_at_us.map_or(0, |at| (queue::now_us() - at).max(0));
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(m::QUEUE_OLDEST_AGE).set(age_us as f64 / 1e6);
        }
        self.handle.render()
    }
}
