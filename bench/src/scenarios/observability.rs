//! What operators' signals cost a request. A second API process, on the same database, Redis and
//! worker, runs with its request log off (`runq_api::observe=warn`); the bench's own API logs
//! every request at info, as a default deployment does. Requests alternate between the two, pair
//! by pair: `GET /v1/tools` (authentication and nothing else, so the log line is most of the
//! difference) at c=1 and c=64, and sync runs at c=1. Both processes record metrics (they cannot
//! be turned off), so the metrics' own cost is measured in-process: the exact calls the API makes
//! per request, on the same recorder. Last, what one `GET /metrics` scrape costs.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use reqwest::StatusCode;
use serde_json::json;

use super::Plan;
use super::pairs::{self, Side};
use crate::report::Row;
use crate::stack::{AGENT, Stack};
use crate::stats::Summary;

/// The bench API's filter with the request log turned off.
const QUIET_FILTER: &str = "warn,runq_api=info,runq_api::routes=warn,runq_api::submit=warn,runq_api::observe=warn";
/// Per-request metric recordings timed in-process.
const RECORDINGS: u32 = 200_000;
/// Scrapes of `/metrics` timed.
const SCRAPES: usize = 200;

pub async fn run(stack: &mut Stack, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let quiet = stack.start_extra_api("api-quiet", QUIET_FILTER).await?;
    let outcome = measure(stack, plan, &quiet).await;
    stack.stop("api-quiet").await;
    outcome
}

async fn measure(stack: &Stack, plan: &Plan, quiet: &str) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let key = stack.admin_key.clone();
    for (concurrency, n) in plan.sync {
        let (http, key) = (stack.http.clone(), key.clone());
        let (logged, quiet) = (format!("{}/v1/tools", stack.api), format!("{quiet}/v1/tools"));
        let measured = pairs::interleaved(concurrency, n, move |side| {
            let url = if side == Side::Direct { &quiet } else { &logged };
            let request = http.get(url).header("x-api-key", &key);
            async move { Ok(pairs::time_whole(request, StatusCode::OK).await?.0) }
        })
        .await;
        rows.push(added_row(&format!("request log added to GET /v1/tools c={concurrency}"), &measured));
    }

    let (concurrency, n) = plan.sync[0];
    let (http, key) = (stack.http.clone(), key.clone());
    let (logged, quiet) = (format!("{}/v1/run", stack.api), format!("{quiet}/v1/run"));
    let body = json!({"agent_id": AGENT, "prompt": "[[mock tokens=5]] short", "metadata": {"bench": "observability"}});
    let measured = pairs::interleaved(concurrency, n, move |side| {
        let url = if side == Side::Direct { &quiet } else { &logged };
        // a JSON client: without `stream: true` the run answers JSON
        let request = http.post(url).header("x-api-key", &key).header("accept", "application/json").json(&body);
        async move {
            let (elapsed, run) = pairs::time_whole(request, StatusCode::OK).await?;
            ensure!(run["status"] == "completed", "run not completed: {run}");
            Ok(elapsed)
        }
    })
    .await;
    rows.push(added_row(&format!("request log added to a sync run c={concurrency}"), &measured));

    rows.push(recording_row());
    rows.push(scrape_row(stack).await?);
    Ok(rows)
}

fn added_row(metric: &str, measured: &pairs::Pairs) -> Row {
    let metric = format!("{metric} (p50 / p90 / p99)");
    match Summary::of_ms(&measured.added) {
        Some(added) => {
            let baseline =
                Summary::of_ms(&measured.direct).map(|s| format!("request log off: {s}")).unwrap_or_default();
            Row::new(metric, added.to_string()).baseline(baseline)
        }
        None => Row::na(metric, measured.first_error.clone().unwrap_or_else(|| "no measured pairs".into())),
    }
}

/// The API's per-request metrics (a counter and a histogram, by route and status), recorded
/// here on the recorder the API installs.
fn recording_row() -> Row {
    runq_shared::metrics::install();
    let routes = ["/v1/run", "/v1/runs/{id}", "/v1/tools", "/v1/operations/{id}"];
    let started = Instant::now();
    for i in 0..RECORDINGS {
        let route = routes[i as usize % routes.len()];
        runq_shared::metrics::http_request(route, 200, Duration::from_micros(u64::from(i % 5_000)));
    }
    let per_request = started.elapsed() / RECORDINGS;
    Row::new(
        "metrics recorded per request (in-process, the API's calls, mean)",
        format!("{:.2} µs ({RECORDINGS} recordings)", per_request.as_secs_f64() * 1e6),
    )
}

/// `GET /metrics` of the bench API after everything before it ran: time and size.
async fn scrape_row(stack: &Stack) -> anyhow::Result<Row> {
    let url = format!("{}/metrics", stack.api);
    let mut times = Vec::with_capacity(SCRAPES);
    let mut size = 0;
    for _ in 0..SCRAPES {
        let start = Instant::now();
        let res = stack.http.get(&url).send().await?;
        ensure!(res.status() == StatusCode::OK, "GET /metrics: {}", res.status());
        size = res.bytes().await?.len();
        times.push(crate::stats::millis(start.elapsed()));
    }
    let summary = Summary::of_ms(&times).context("no scrape measured")?;
    Ok(Row::new("GET /metrics scrape (p50 / p90 / p99)", format!("{summary}, {size} bytes")))
}
