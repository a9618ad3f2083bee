//! Prometheus metrics: the names both binaries record, the histogram buckets, and the process-wide
//! recorder whose exposition `GET /metrics` serves.
//!
//! Metrics are recorded through the `metrics` facade wherever the event happens (a run finishing,
//! a provider call, an HTTP response); until [`install`] runs they cost nothing and go nowhere.
//! Label values are always from small fixed sets (statuses, route templates, outcomes), never
//! ids, so no label set grows without bound.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Terminal runs, by `status` (`completed`, `failed`, `cancelled`, `timed_out`).
pub const RUNS_TOTAL: &str = "runq_runs_total";
/// Attempts started by workers (a run handed back and resumed counts again).
pub const RUNS_STARTED_TOTAL: &str = "runq_runs_started_total";
/// Jobs waiting in the queue (all workspaces).
pub const QUEUE_DEPTH: &str = "runq_queue_depth";
/// Age of the oldest waiting job, in seconds (0 when none waits).
pub const QUEUE_OLDEST_AGE: &str = "runq_queue_oldest_age_seconds";
/// From a job's push to a worker taking it.
pub const QUEUE_WAIT: &str = "runq_queue_wait_seconds";
/// From a job's push to the run's first streamed token.
pub const TIME_TO_FIRST_TOKEN: &str = "runq_time_to_first_token_seconds";
/// From a worker taking a run to its recorded end.
pub const RUN_DURATION: &str = "runq_run_duration_seconds";
/// Runs this worker executes now.
pub const RUNS_IN_FLIGHT: &str = "runq_runs_in_flight";
/// This worker's run slots, by `state` (`used`, `free`).
pub const WORKER_SLOTS: &str = "runq_worker_slots";
/// Provider calls, by `provider_kind` and `outcome` (`ok` or the error's code).
pub const PROVIDER_REQUESTS_TOTAL: &str = "runq_provider_requests_total";
/// Provider calls retried after a retryable failure.
pub const PROVIDER_RETRIES_TOTAL: &str = "runq_provider_retries_total";
/// First provider requests sent while the run's claim was in flight, by `outcome` (`used`;
/// `unclaimed`: the claim failed; `changed`: the run's request turned out different).
pub const PROVIDER_OPENINGS_TOTAL: &str = "runq_provider_openings_total";
/// Tool calls, by `outcome` (`ok`, `error`).
pub const TOOL_CALLS_TOTAL: &str = "runq_tool_calls_total";
/// Event streams (SSE) this API process serves now.
pub const SSE_STREAMS_OPEN: &str = "runq_sse_streams_open";
/// HTTP responses, by `route` (the template, e.g. `/v1/runs/{id}`) and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "runq_http_requests_total";
/// Time to the response's head, by `route` (an SSE stream's life is not included).
pub const HTTP_REQUEST_DURATION: &str = "runq_http_request_duration_seconds";
/// Runs the reconciler put back in the queue (expired leases and lost jobs).
pub const RECONCILER_REQUEUED_TOTAL: &str = "runq_reconciler_requeued_total";
/// Webhook delivery attempts, by `outcome` (`delivered`, `retrying`, `failed`, `disabled`, `refused`).
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "runq_webhook_deliveries_total";

/// Histogram buckets, in seconds: fine below a second (HTTP, queue wait, first token), then on to
/// ten minutes (whole runs, a queue that backs up).
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
];

/// How often histograms are compacted in the background.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle) and starts its
/// upkeep task. Call from within the Tokio runtime.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("the bucket list is not empty")
                .install_recorder()
                .unwrap_or_else(|e| {
                    // another recorder is installed (an embedding process): keep a private one
                    tracing::warn!(error = %e, "metrics recorder already installed; /metrics shows runq's own");
                    PrometheusBuilder::new().build_recorder().handle()
                });
            describe();
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(UPKEEP_EVERY);
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(RUNS_TOTAL, "Runs that reached a terminal status, by status");
    describe_counter!(RUNS_STARTED_TOTAL, "Run attempts started by workers");
    describe_gauge!(QUEUE_DEPTH, "Jobs waiting in the queue");
    describe_gauge!(QUEUE_OLDEST_AGE, Unit::Seconds, "Age of the oldest waiting job");
    describe_histogram!(QUEUE_WAIT, Unit::Seconds, "From a job's push to a worker taking it");
    describe_histogram!(TIME_TO_FIRST_TOKEN, Unit::Seconds, "From a job's push to the run's first token");
    describe_histogram!(RUN_DURATION, Unit::Seconds, "From a worker taking a run to its recorded end");
    describe_gauge!(RUNS_IN_FLIGHT, "Runs this worker executes now");
    describe_gauge!(WORKER_SLOTS, "This worker's run slots, by state");
    describe_counter!(PROVIDER_REQUESTS_TOTAL, "Provider calls, by provider kind and outcome");
    describe_counter!(PROVIDER_RETRIES_TOTAL, "Provider calls retried");
    describe_counter!(
        PROVIDER_OPENINGS_TOTAL,
        "First provider requests sent while the claim was in flight, by outcome"
    );
    describe_counter!(TOOL_CALLS_TOTAL, "Tool calls, by outcome");
    describe_gauge!(SSE_STREAMS_OPEN, "Event streams this API process serves now");
    describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP responses, by route template and status");
    describe_histogram!(HTTP_REQUEST_DURATION, Unit::Seconds, "Time to the response head, by route template");
    describe_counter!(RECONCILER_REQUEUED_TOTAL, "Runs the reconciler put back in the queue");
    describe_counter!(WEBHOOK_DELIVERIES_TOTAL, "Webhook delivery attempts, by outcome");
}

/// Counts an HTTP response of `route` (a template) and its time to the response head.
pub fn http_request(route: &str, status: u16, elapsed: Duration) {
    metrics::counter!(HTTP_REQUESTS_TOTAL, "route" => route.to_owned(), "status" => status.to_string()).increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, "route" => route.to_owned()).record(elapsed.as_secs_f64());
}

/// Counts a run that reached `status`.
pub fn run_finished(status: crate::db::runs::RunStatus) {
    metrics::counter!(RUNS_TOTAL, "status" => status.as_str()).increment(1);
}

/// Keeps a gauge one higher while alive (an open stream, a run in flight).
#[derive(Debug)]
pub struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    pub fn new(name: &'static str) -> Self {
        let gauge = metrics::gauge!(name);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
