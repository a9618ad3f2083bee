//! Interleaved direct/runq request pairs: `concurrency` clients each send one request straight to
//! the provider and the same request through runq, alternating which goes first, so both sides
//! see the same machine state. The per-pair difference is what runq adds.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures::StreamExt;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::report::Row;
use crate::stack::{AGENT, PROVIDER_KEY, Stack};
use crate::stats::{Summary, millis, ms};
use runq_shared::sse::FrameScanner;

/// Which side of a pair a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Direct,
    Runq,
}

/// Latencies of the measured pairs, in milliseconds.
#[derive(Debug, Default)]
pub struct Pairs {
    pub concurrency: usize,
    pub direct: Vec<f64>,
    pub runq: Vec<f64>,
    /// runq − direct, pair by pair.
    pub added: Vec<f64>,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// Runs `pairs` measured pairs (after `concurrency` warm-up pairs) from `concurrency` clients.
/// `measure` sends one request and returns the latency it is about.
pub async fn interleaved<F, Fut>(concurrency: usize, pairs: usize, measure: F) -> Pairs
where
    F: Fn(Side) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Duration>> + Send + 'static,
{
    let warmup = concurrency.max(10);
    let total = warmup + pairs;
    let next = Arc::new(AtomicUsize::new(0));
    let measure = Arc::new(measure);
    let mut clients = JoinSet::new();
    for _ in 0..concurrency {
        let (next, measure) = (next.clone(), measure.clone());
        clients.spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return results;
                }
                let order = if i % 2 == 0 { [Side::Direct, Side::Runq] } else { [Side::Runq, Side::Direct] };
                let mut pair = [Ok(Duration::ZERO), Ok(Duration::ZERO)];
                for side in order {
                    pair[side as usize] = measure(side).await;
                }
                if i >= warmup {
                    let [direct, runq] = pair;
                    results.push(direct.and_then(|d| Ok((d, runq?))));
                }
            }
        });
    }
    let mut out = Pairs { concurrency, ..Pairs::default() };
    for result in clients.join_all().await.into_iter().flatten() {
        match result {
            Ok((direct, runq)) => {
                out.direct.push(millis(direct));
                out.runq.push(millis(runq));
                out.added.push(millis(runq) - millis(direct));
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    out
}

impl Pairs {
    /// `<what> c=N (p50 / p90 / p99)` with runq beside direct, and requests/s at this
    /// concurrency from Little's law (clients ÷ mean latency) for each side.
    pub fn latency_row(&self, what: &str) -> Row {
        let metric = format!("{what} c={} (p50 / p90 / p99)", self.concurrency);
        let (Some(runq), Some(direct)) = (Summary::of_ms(&self.runq), Summary::of_ms(&self.direct)) else {
            return Row::na(metric, self.failure());
        };
        let rate = |s: &Summary| self.concurrency as f64 / s.mean * 1000.0;
        Row::new(metric, format!("{runq}, {:.0} req/s{}", rate(&runq), self.error_note()))
            .baseline(format!("{direct}, {:.0} req/s", rate(&direct)))
    }

    /// The added latency at percentile `p` (50 or 99), judged against `target`.
    pub fn added_row(&self, what: &str, p: u8, target: crate::report::Target) -> Row {
        let metric = format!("{what} c={} p{p}", self.concurrency);
        let Some(added) = Summary::of_ms(&self.added) else { return Row::na(metric, self.failure()).unjudged(target) };
        let (value, detail) = if p >= 99 {
            (added.p99, format!("over {} pairs", added.n))
        } else {
            (added.p50, format!("p90 {} ms", ms(added.p90)))
        };
        Row::new(metric, format!("{} ms ({detail})", ms(value))).judged(target, value)
    }

    fn failure(&self) -> String {
        match &self.first_error {
            Some(e) => format!("all {} pairs failed: {e}", self.errors),
            None => "no pairs measured".into(),
        }
    }

    fn error_note(&self) -> String {
        match &self.first_error {
            Some(e) => format!(" ({} failed pairs, first: {e})", self.errors),
            None => String::new(),
        }
    }
}

/// What a client of the pairs needs: the provider's endpoint and runq's, with their keys.
#[derive(Debug, Clone)]
pub struct Endpoints {
    http: reqwest::Client,
    completions: String,
    run: String,
    admin_key: String,
}

impl Endpoints {
    pub fn of(stack: &Stack) -> Self {
        Self {
            http: stack.http.clone(),
            completions: stack.completions_url(),
            run: format!("{}/v1/run", stack.api),
            admin_key: stack.admin_key.clone(),
        }
    }

    /// The same endpoints, runq's called with `key` (another workspace's).
    pub fn with_key(mut self, key: &str) -> Self {
        key.clone_into(&mut self.admin_key);
        self
    }

    /// `POST /v1/chat/completions` straight to the mock, with `prompt` as the user message.
    pub fn direct(&self, prompt: &str, stream: bool) -> RequestBuilder {
        let mut body = json!({"model": "mock-model", "messages": [{"role": "user", "content": prompt}]});
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        self.http.post(&self.completions).bearer_auth(PROVIDER_KEY).json(&body)
    }

    /// `POST /v1/run` of the bench agent; `fields` (`stream`, `async`, …) are merged in.
    pub fn runq(&self, prompt: &str, tag: &str, fields: Value) -> RequestBuilder {
        let mut body = json!({"agent_id": AGENT, "prompt": prompt, "metadata": {"bench": tag}});
        if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
            body.extend(fields);
        }
        // a JSON client: without `stream: true` the run answers JSON
        self.http.post(&self.run).header("x-api-key", &self.admin_key).header("accept", "application/json").json(&body)
    }
}

/// Sends `request` and returns how long it took until `first(frame data)` held for an SSE frame;
/// reads the rest of the stream too, so the run or call ends normally.
pub async fn time_to_first(request: RequestBuilder, first: fn(&str) -> bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let res = request.send().await?;
    let status = res.status();
    ensure!(status == StatusCode::OK, "{status}: {}", res.text().await.unwrap_or_default());
    let mut scanner = FrameScanner::default();
    let mut body = res.bytes_stream();
    let mut seen = None;
    while let Some(chunk) = body.next().await {
        let frames = scanner.push(&chunk?);
        if seen.is_none() && frames.iter().any(|frame| first(&frame.data)) {
            seen = Some(start.elapsed());
        }
    }
    seen.context("the stream carried no text")
}

/// Sends `request`, reads the whole body and returns the elapsed time and the body as JSON.
pub async fn time_whole(request: RequestBuilder, expect: StatusCode) -> anyhow::Result<(Duration, Value)> {
    let start = Instant::now();
    let res = request.send().await?;
    let status = res.status();
    let body = res.bytes().await?;
    let elapsed = start.elapsed();
    ensure!(status == expect, "{status}: {}", String::from_utf8_lossy(&body));
    Ok((elapsed, serde_json::from_slice(&body)?))
}
