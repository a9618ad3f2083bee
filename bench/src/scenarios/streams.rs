//! Concurrent streams: N SSE streams of runs whose provider call stays open (the mock waits ten
//! minutes before the first token), opened a bounded number at a time with a bare HTTP/1.1
//! client that reads up to the first `id:` frame and then just holds the socket. Once the mock
//! serves N calls at once, the RSS growth of the API and of the worker over their idle RSS is
//! divided by N. The streams are then closed; the runs go on until the teardown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Plan;
use crate::procfs::{open_files_limit, rss_kib};
use crate::report::{Row, Target, thousands};
use crate::stack::{AGENT, Stack};
use runq_shared::sse::find;

const PROMPT: &str = "[[mock ttft=600000 tokens=1]] hold the line";
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
const IN_FLIGHT_TIMEOUT: Duration = Duration::from_secs(60);
/// Descriptors kept free for everything else the bench opens.
const SPARE_FDS: u64 = 512;

pub async fn run(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let api = stack.pid("api").context("api pid")?;
    let worker = stack.pid("worker").context("worker pid")?;
    let mock = stack.pid("mock").context("mock pid")?;
    let mut n = plan.streams;
    let mut notes = Vec::new();
    if let Some(limit) = open_files_limit()
        && (n as u64) + SPARE_FDS > limit
    {
        let lowered = limit.saturating_sub(SPARE_FDS) as usize;
        notes.push(format!("N lowered from {n}: open-files limit {limit}, run under `ulimit -n 65536`"));
        n = lowered;
    }
    let probe = stack.clone_mock_probe();
    let base_in_flight = probe.in_flight().await?;
    let idle = [rss_kib(api), rss_kib(worker), rss_kib(mock)];

    let start = Instant::now();
    let request = Arc::new(raw_request(stack));
    let permits = Arc::new(Semaphore::new(plan.stream_opens));
    let mut opening = JoinSet::new();
    for _ in 0..n {
        opening.spawn(open(stack.api_addr, request.clone(), permits.clone()));
    }
    let mut streams = Vec::with_capacity(n);
    let mut failed = 0;
    for outcome in opening.join_all().await {
        match outcome {
            Ok(stream) => streams.push(stream),
            Err(e) => {
                if failed == 0 {
                    notes.push(format!("first failure: {e:#}"));
                }
                failed += 1;
            }
        }
    }
    let opened_in = start.elapsed();

    let wanted = base_in_flight + streams.len() as u64;
    let wait_start = Instant::now();
    let mut in_flight = probe.in_flight().await?;
    while in_flight < wanted && wait_start.elapsed() < IN_FLIGHT_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(200)).await;
        in_flight = probe.in_flight().await?;
    }
    let in_flight = in_flight.saturating_sub(base_in_flight);
    if in_flight < streams.len() as u64 {
        notes.push(format!("only {in_flight} runs reached the provider within {} s", IN_FLIGHT_TIMEOUT.as_secs()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = [rss_kib(api), rss_kib(worker), rss_kib(mock)];
    let open_count = streams.len();
    drop(streams);

    let growth = |i: usize, count: u64| -> Option<(f64, String)> {
        let (before, after) = (idle[i]?, loaded[i]?);
        let per = after.saturating_sub(before) as f64 / count.max(1) as f64;
        Some((per, format!("RSS {:.0} → {:.0} MiB", before as f64 / 1024.0, after as f64 / 1024.0)))
    };
    let mock_baseline = growth(2, in_flight)
        .map(|(per, rss)| format!("mock provider: {per:.1} KiB per open call ({rss})"))
        .unwrap_or_default();
    let mut rows = vec![Row::new(
        "concurrent SSE streams opened",
        format!(
            "{} of {} in {:.1} s ({} /s, {failed} failed){}",
            thousands(open_count as f64),
            thousands(n as f64),
            opened_in.as_secs_f64(),
            thousands(open_count as f64 / opened_in.as_secs_f64()),
            if notes.is_empty() { String::new() } else { format!("; {}", notes.join("; ")) }
        ),
    )];
    rows.push(match growth(0, open_count as u64) {
        Some((per, rss)) if open_count > 0 => Row::new(
            "API memory per open SSE stream",
            format!("{per:.1} KiB ({} streams, {rss})", thousands(open_count as f64)),
        )
        .baseline(mock_baseline.clone())
        .judged(Target::MaxKib(20.0), per),
        _ => Row::na("API memory per open SSE stream", "no stream opened").unjudged(Target::MaxKib(20.0)),
    });
    rows.push(match growth(1, in_flight) {
        Some((per, rss)) if in_flight > 0 => Row::new(
            "worker memory per in-flight run",
            format!("{per:.1} KiB ({} runs, {rss})", thousands(in_flight as f64)),
        )
        .baseline(mock_baseline)
        .judged(Target::MaxKib(30.0), per),
        _ => Row::na("worker memory per in-flight run", "no run reached the provider").unjudged(Target::MaxKib(30.0)),
    });
    Ok(rows)
}

/// The bytes of one streamed `POST /v1/run`.
fn raw_request(stack: &Stack) -> Vec<u8> {
    let body =
        json!({"agent_id": AGENT, "prompt": PROMPT, "stream": true, "metadata": {"bench": "streams"}}).to_string();
    format!(
        "POST /v1/run HTTP/1.1\r\nhost: {}\r\nx-api-key: {}\r\ncontent-type: application/json\r\n\
         accept: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        stack.api_addr,
        stack.admin_key,
        body.len()
    )
    .into_bytes()
}

/// Opens one stream and returns its socket once the first event (`id:` frame) arrived.
async fn open(addr: SocketAddr, request: Arc<Vec<u8>>, permits: Arc<Semaphore>) -> anyhow::Result<TcpStream> {
    let _permit = permits.acquire_owned().await?;
    tokio::time::timeout(OPEN_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&request).await?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let read = stream.read(&mut chunk).await?;
            ensure!(read > 0, "connection closed before the first event");
            buf.extend_from_slice(&chunk[..read]);
            if let Some(head_end) = find(&buf, b"\r\n\r\n") {
                ensure!(
                    buf.starts_with(b"HTTP/1.1 200"),
                    "{}",
                    String::from_utf8_lossy(&buf).lines().next().unwrap_or("")
                );
                if find(&buf[head_end..], b"\nid:").is_some() {
                    return Ok(stream);
                }
            }
        }
    })
    .await
    .context("no first event within 60 s")?
}
