//! The worker's `GET /metrics` (Prometheus text), on its own listen address
//! (`RUNQ_WORKER_METRICS_BIND`): a worker has no other HTTP surface.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use runq_shared::metrics as m;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::control::Registry;

/// A bound metrics listener.
pub struct Server {
    listener: TcpListener,
    handle: PrometheusHandle,
}

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    running: Arc<Registry>,
    concurrency: usize,
}

impl Server {
    /// Installs the recorder and binds `bind` (port 0 picks a free port).
    pub async fn bind(bind: &str) -> anyhow::Result<Self> {
        let handle = m::install();
        let listener = TcpListener::bind(bind).await.context("metrics listener")?;
        Ok(Self { listener, handle })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`; slot gauges are counted from the runs executing at each scrape.
    pub async fn run(self, running: Arc<Registry>, concurrency: usize, shutdown: CancellationToken) {
        let router = axum::Router::new().route("/metrics", axum::routing::get(scrape)).with_state(Scrape {
            handle: self.handle,
            running,
            concurrency,
        });
        let served = axum::serve(self.listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "metrics listener failed");
        }
    }
}

async fn scrape(State(scrape): State<Scrape>) -> Response {
    // the consumer holds a permit while it waits for work, so permits would overcount
    let used = scrape.running.ids().len().min(scrape.concurrency);
    #[allow(clippy::cast_precision_loss)]
    {
        metrics::gauge!(m::WORKER_SLOTS, "state" => "used").set(used as f64);
        metrics::gauge!(m::WORKER_SLOTS, "state" => "free").set((scrape.concurrency - used) as f64);
    }
    let mut response = scrape.handle.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
