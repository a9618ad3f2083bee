//! Fault injection: killed and terminated processes, a flushed or dead Redis, failing and hanging
//! providers, cancels, deadlines and duplicate requests. Every wait is bounded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use runq_e2e::{
    Cluster, Env, Frame, PrivateRedis, SseReader, assert_envelope, eventually, final_attempt_text, mock_tokens,
    parts_of, text_of,
};
use serde_json::{Value, json};

const SECOND: Duration = Duration::from_secs(1);

/// A cluster with a deployed `bot` agent speaking `kind`.
async fn cluster_with_bot(apis: usize, workers: usize, env: Env, kind: &str) -> Cluster {
    let cluster = Cluster::start(apis, workers, env).await;
    cluster.agent("bot", kind, json!({})).await;
    cluster
}

/// Ids go up by exactly one from frame to frame.
fn assert_consecutive(ids: &[u64], what: &str) {
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{what}: ids are not consecutive: {ids:?}");
}

/// Whether a frame carries a `text-delta`.
fn is_delta(frame: &Frame) -> bool {
    frame.id.is_some() && frame.data.contains("\"text-delta\"")
}

/// The last `n` parts of a stream, and whether it ended with `[DONE]`.
fn tail(frames: &[Frame], n: usize) -> (Vec<Value>, bool) {
    let parts = parts_of(frames);
    let done = frames.last().is_some_and(|f| f.data == "[DONE]");
    (parts[parts.len().saturating_sub(n)..].to_vec(), done)
}

/// A small xorshift generator: the killer's victims (no `rand` in this crate).
struct Xorshift(u64);

impl Xorshift {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        Self(u64::from(nanos) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Every run of the workspace (at most 100), newest first.
async fn all_runs(cluster: &Cluster) -> Vec<Value> {
    let (status, list) = cluster.get("/v1/runs?limit=100").await.expect("an API answers");
    assert_eq!(status, StatusCode::OK, "{list}");
    list["data"].as_array().expect("data").clone()
}

/// Whether SIGKILLing worker `victim` now could make a run fail `worker_lost` (lose its last
/// allowed attempt): the victim holds a run on its last attempt, or a run about to start its last
/// attempt is between workers (queued, lease expired, or held by a dead worker) and the victim
/// could take it before the kill lands.
async fn kill_could_exhaust_a_run(cluster: &Cluster, victim: u32) -> bool {
    let live: Vec<String> = (0..cluster.workers.len()).map(|i| cluster.worker_pid(i).to_string()).collect();
    let (at_risk,): (i64,) = sqlx::query_as(
        "select count(*) from runs
         where status in ('queued', 'running') and attempt >= max_attempts - 1
           and (status = 'queued'
                or lease_expires_at <= now()
                or not split_part(lease_owner, '-', 2) = any($1)
                or (split_part(lease_owner, '-', 2) = $2 and attempt >= max_attempts))",
    )
    .bind(&live)
    .bind(victim.to_string())
    .fetch_one(&cluster.db)
    .await
    .expect("runs at risk");
    at_risk > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_streaming_runs_complete_while_workers_are_killed_at_random() {
    const RUNS: usize = 200;
    const TOKENS: usize = 30;
    /// The killer stops after this long even if runs are still going.
    const CHAOS: Duration = Duration::from_secs(15);
    let mut cluster = cluster_with_bot(2, 3, Env::new().await, "openai").await;
    let expected = mock_tokens(TOKENS);

    let mut streams = Vec::new();
    for i in 0..RUNS {
        let body = json!({
            "agent_id": "bot",
            "prompt": format!("run {i} [[mock tokens={TOKENS} delay=20]]"),
            "thread_id": format!("thr_chaos_{i}"),
            "stream": true,
        });
        let request = cluster.request(i % 2, Method::POST, "/v1/run").json(&body);
        streams.push(tokio::spawn(async move {
            let mut reader = SseReader::open(request).await;
            reader.read_to_done(Duration::from_secs(90)).await;
            reader
        }));
    }

    // The killer: every ~700 ms a random worker is SIGKILLed and restarted at once (the other two
    // stay up). A run may lose its worker on `max_attempts` attempts at most before it fails
    // `worker_lost` by design, so sustained killing would fail some runs however correct the
    // recovery is; the killer therefore spares a worker whose death could cost a run its last
    // attempt (and waits for the next tick when every worker is such).
    let started = Instant::now();
    let mut rng = Xorshift::seeded();
    let (mut kills, mut spared) = (0, 0);
    while started.elapsed() < CHAOS && !streams.iter().all(|s| s.is_finished()) {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let first = rng.below(cluster.workers.len());
        let mut victim = None;
        for k in 0..cluster.workers.len() {
            let candidate = (first + k) % cluster.workers.len();
            if !kill_could_exhaust_a_run(&cluster, cluster.worker_pid(candidate)).await {
                victim = Some(candidate);
                break;
            }
        }
        let Some(victim) = victim else {
            spared += 1;
            continue;
        };
        cluster.kill_worker(victim).await;
        kills += 1;
        cluster.restart_worker(victim).await;
    }
    let chaos = started.elapsed();

    let readers: Vec<SseReader> = join_all(streams).await.into_iter().map(|r| r.expect("stream task")).collect();
    let settled =
        eventually(Duration::from_secs(60), || async { (cluster.unfinished_runs().await == 0).then_some(()) }).await;

    let mut problems = Vec::new();
    let mut duplicates = 0;
    let mut retried = 0;
    let mut attempts = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for (i, reader) in readers.iter().enumerate() {
        if reader.status != StatusCode::OK {
            problems.push(format!("run {i}: stream answered {} {}", reader.status, reader.rest()));
            continue;
        }
        let id = reader.run_id();
        let run = cluster.get_run(&id).await;
        let attempt = run["attempt"].as_i64().unwrap_or_default();
        *attempts.entry(attempt).or_insert(0) += 1;
        *statuses.entry(run["status"].as_str().unwrap_or("?").to_owned()).or_insert(0) += 1;
        if attempt > 1 {
            retried += 1;
        }
        if run["status"] != "completed" {
            problems.push(format!("run {i} ({id}) ended {} after {attempt} attempts: {}", run["status"], run["error"]));
            continue;
        }
        if run["output"] != expected.as_str() {
            problems.push(format!("run {i}: stored output {}", run["output"]));
            if run["output"].as_str().is_some_and(|o| o.matches("tok0 ").count() > 1) {
                duplicates += 1;
            }
        }
        if run["messages"] != json!([{"role": "assistant", "content": expected}]) {
            problems.push(format!("run {i}: messages {}", run["messages"]));
        }
        let thread = cluster.thread_messages(&format!("thr_chaos_{i}")).await;
        let roles: Vec<&str> = thread.iter().map(|(role, _)| role.as_str()).collect();
        if roles != ["user", "assistant"] || thread[1].1 != expected {
            problems.push(format!("run {i}: thread holds {thread:?}"));
            if thread.len() > 2 {
                duplicates += 1;
            }
        }
        if !reader.saw_done() {
            problems.push(format!("run {i}: stream ended without [DONE] ({:?})", reader.error));
        }
        let ids = reader.ids();
        if ids.windows(2).any(|w| w[1] <= w[0]) {
            duplicates += 1;
            problems.push(format!("run {i}: stream ids repeat or go back: {ids:?}"));
        } else if ids.windows(2).any(|w| w[1] != w[0] + 1) {
            problems.push(format!("run {i}: stream ids skip: {ids:?}"));
        }
        let last_attempt = final_attempt_text(&reader.frames);
        if reader.saw_done() && last_attempt != expected {
            problems.push(format!("run {i}: the last attempt streamed {last_attempt:?}"));
        }
    }
    eprintln!(
        "chaos: {RUNS} runs, {kills} worker kills in {chaos:.1?} ({spared} ticks spared every worker), \
         {retried} runs retried (attempt > 1), {duplicates} duplicates found; attempts {attempts:?}; \
         statuses {statuses:?}"
    );
    assert!(
        settled.is_some(),
        "{} runs still queued or running 60 s after the streams",
        cluster.unfinished_runs().await
    );
    assert!(kills >= 3, "the killer hardly ran ({kills} kills)");
    assert!(retried > 0, "no kill ever interrupted a run: nothing was recovered");
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[tokio::test]
async fn a_client_resumes_on_the_other_api_after_its_api_is_killed() {
    let mut cluster = cluster_with_bot(2, 1, Env::new().await, "anthropic").await;
    let mut first =
        cluster.stream(0, json!({"agent_id": "bot", "prompt": "resume me [[mock tokens=60 delay=40]]"})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.rest());
    let run_id = first.run_id();
    let mut deltas = 0;
    assert!(
        first
            .read_until(10 * SECOND, |f| {
                deltas += usize::from(is_delta(f));
                deltas == 5
            })
            .await,
        "no text arrived: {:?}",
        first.frames
    );
    let before = first.frames.clone();
    let last = first.last_id().expect("frames have ids");
    assert_consecutive(&first.ids(), "before the kill");
    assert_eq!(first.ids()[0], 1);

    cluster.kill_api(0).await;
    drop(first);
    let mut resumed = SseReader::open(
        cluster.request(1, Method::GET, &format!("/v1/runs/{run_id}/events")).header("last-event-id", last.to_string()),
    )
    .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.rest());
    assert!(resumed.read_to_done(30 * SECOND).await, "the resumed stream did not reach [DONE]: {:?}", resumed.frames);

    let ids = resumed.ids();
    assert_eq!(ids.first(), Some(&(last + 1)), "resumes right after Last-Event-ID {last}: {ids:?}");
    assert_consecutive(&ids, "after the resume");
    assert!(text_of(&resumed.frames).split_whitespace().count() >= 10, "the run was still streaming at the kill");
    let (end, done) = tail(&resumed.frames, 1);
    assert!(done && end[0]["type"] == "finish", "{end:?}");

    let run = cluster.wait_run(&run_id, 10 * SECOND).await;
    assert_eq!(run["status"], "completed", "{run}");
    let text = format!("{}{}", text_of(&before), resumed.text());
    assert_eq!(text, mock_tokens(60));
    assert_eq!(run["output"], text.as_str(), "what the client pieced together is the stored output");
}

#[tokio::test]
async fn runs_queued_when_redis_is_flushed_and_restarted_still_complete() {
    let mut redis = PrivateRedis::start().await;
    let env = Env::new().await.with("REDIS_URL", &redis.url());
    let mut cluster = cluster_with_bot(1, 0, env, "openai").await;

    let mut operations = Vec::new();
    for i in 0..10 {
        let (status, op) =
            cluster.run(0, json!({"agent_id": "bot", "prompt": format!("kept {i}"), "async": true})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        operations.push(op["operation_id"].as_str().unwrap().to_owned());
    }
    let (status, batch) =
        cluster.run(0, json!({"agent_id": "bot", "batch": [{"query": "batched 0"}, {"query": "batched 1"}]})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    assert_eq!(cluster.unfinished_runs().await, 12);

    // every job is gone, and Redis itself goes away and comes back empty
    redis.flushall().await;
    redis.restart().await;
    let restarted = Instant::now();
    cluster.add_worker().await;
    cluster.add_worker().await;

    for (i, op) in operations.iter().enumerate() {
        let done = cluster.wait_operation(op, 20 * SECOND).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["result"]["output"], format!("Echo: kept {i}"));
    }
    let done = cluster.wait_operation(batch["operation_id"].as_str().unwrap(), 20 * SECOND).await;
    assert_eq!(done["progress"], json!({"total": 2, "completed": 2, "failed": 0}), "{done}");
    eprintln!("12 lost jobs recovered {:.1?} after Redis came back", restarted.elapsed());
}

#[tokio::test]
async fn the_first_run_after_redis_restarted_succeeds() {
    let mut redis = PrivateRedis::start().await;
    let env = Env::new().await.with("REDIS_URL", &redis.url()).with("RUNQ_SYNC_TIMEOUT_MS", "10000");
    let cluster = cluster_with_bot(1, 1, env, "openai").await;
    let (status, run) = cluster.run(0, json!({"agent_id": "bot", "prompt": "before"})).await;
    assert_eq!(status, StatusCode::OK, "{run}");

    // Redis restarts while nobody uses it; the processes' connections to the old one are dead
    redis.restart().await;
    tokio::time::sleep(2 * SECOND).await;
    let (status, run) = cluster.run(0, json!({"agent_id": "bot", "prompt": "after"})).await;
    assert_eq!(status, StatusCode::OK, "the first request 2 s after Redis came back: {run}");
    assert_eq!(run["output"], "Echo: after", "{run}");
}

#[tokio::test]
async fn cancel_stops_the_provider_stream_and_the_run_ends_cancelled() {
    let cluster = cluster_with_bot(1, 1, Env::new().await, "openai").await;
    // 400 tokens at 25 ms: 10 s unless cancelled
    let mut stream = cluster.stream(0, json!({"agent_id": "bot", "prompt": "long [[mock tokens=400 delay=25]]"})).await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.rest());
    let run_id = stream.run_id();
    assert!(stream.read_until(10 * SECOND, is_delta).await, "no text arrived");
    let disconnected = cluster.mock.stats().disconnected;

    let asked = Instant::now();
    let (status, body) = cluster.call(0, Method::POST, &format!("/v1/runs/{run_id}/cancel"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["run_id"], run_id.as_str());
    assert_eq!(body["status"], "cancelling");

    assert!(stream.read_to_done(5 * SECOND).await, "the stream did not end after the cancel: {:?}", stream.frames);
    let took = asked.elapsed();
    let (end, done) = tail(&stream.frames, 2);
    assert!(done, "ends with [DONE]");
    assert_eq!(end[0]["type"], "data-run", "{end:?}");
    assert_eq!(end[0]["data"], json!({"status": "cancelled"}), "{end:?}");
    assert_eq!(end[1]["type"], "abort", "{end:?}");
    assert!(took < 3 * SECOND, "the stream took {took:?} to end after the cancel");

    let aborted =
        eventually(3 * SECOND, || async { (cluster.mock.stats().disconnected > disconnected).then_some(()) }).await;
    assert!(aborted.is_some(), "the worker kept the provider request open: {:?}", cluster.mock.stats());
    let run = cluster.wait_run(&run_id, 5 * SECOND).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["error"]["code"], "cancelled", "{run}");
    assert!(text_of(&stream.frames).split_whitespace().count() < 400, "cut short");

    // a finished run cannot be cancelled: the cancelled one, and a completed one
    let (status, body) = cluster.call(0, Method::POST, &format!("/v1/runs/{run_id}/cancel"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_envelope(&body, "run_finished");
    let (_, done) = cluster.run(0, json!({"agent_id": "bot", "prompt": "quick"})).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (status, body) =
        cluster.call(0, Method::POST, &format!("/v1/runs/{}/cancel", done["id"].as_str().unwrap()), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_envelope(&body, "run_finished");
    let (status, body) =
        cluster.call(0, Method::POST, "/v1/runs/run_0192f0c1a2b37c4d8e9fa0b1c2d3e4f5/cancel", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn a_run_is_cancelled_by_the_idempotency_key_it_was_created_with() {
    let cluster = cluster_with_bot(1, 1, Env::new().await, "anthropic").await;
    let key = format!("cancel-me-{}", uuid::Uuid::now_v7().simple());
    let res = cluster
        .app(0)
        .with_key(Method::POST, "/v1/run", cluster.admin_key())
        .header("idempotency-key", &key)
        .json(&json!({"agent_id": "bot", "prompt": "by key [[mock tokens=400 delay=25]]", "async": true}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let started = eventually(10 * SECOND, || async { (cluster.mock.stats().in_flight > 0).then_some(()) }).await;
    assert!(started.is_some(), "the provider call never started");

    let cluster = &cluster;
    let cancel = |key: String| async move {
        let res = cluster
            .app(0)
            .with_key(Method::POST, "/v1/runs/cancel", cluster.admin_key())
            .header("idempotency-key", key)
            .send()
            .await
            .expect("request");
        (res.status(), res.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (status, body) = cancel(key.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "cancelling", "{body}");
    let run_id = body["run_id"].as_str().expect("run_id").to_owned();
    let run = cluster.wait_run(&run_id, 5 * SECOND).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["error"]["code"], "cancelled", "{run}");
    let idle = eventually(3 * SECOND, || async {
        let stats = cluster.mock.stats();
        (stats.in_flight == 0 && stats.disconnected >= 1).then_some(())
    })
    .await;
    assert!(idle.is_some(), "the provider request was not aborted: {:?}", cluster.mock.stats());

    let (status, body) = cancel(key).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_envelope(&body, "run_finished");
    let (status, body) = cancel("never-used".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_envelope(&body, "run_not_found");
}

#[tokio::test]
async fn cancelling_a_queued_run_ends_it_at_once() {
    let cluster = cluster_with_bot(1, 1, Env::new().await, "openai").await;
    let thread = "thr_busy";
    // the first run holds the thread; the second waits queued behind it
    let (_, first) = cluster
        .run(
            0,
            json!({"agent_id": "bot", "prompt": "hold [[mock tokens=200 delay=25]]", "thread_id": thread, "async": true}),
        )
        .await;
    let (status, _) =
        cluster.run(0, json!({"agent_id": "bot", "prompt": "wait", "thread_id": thread, "async": true})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let ids = eventually(10 * SECOND, || async {
        let (_, list) = cluster.get(&format!("/v1/runs?thread_id={thread}")).await?;
        let runs = list["data"].as_array()?.clone();
        let pick = |holder: bool| runs.iter().find(|r| (r["operation_id"] == first["operation_id"]) == holder).cloned();
        let (holder, waiter) = (pick(true)?, pick(false)?);
        (holder["status"] == "running")
            .then(|| (holder["id"].as_str().unwrap().to_owned(), waiter["id"].as_str().unwrap().to_owned(), waiter))
    })
    .await;
    let (holder, waiter, waiting) = ids.expect("the first run did not start");
    assert_eq!(waiting["status"], "queued", "{waiting}");

    let (status, body) = cluster.call(0, Method::POST, &format!("/v1/runs/{waiter}/cancel"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
    let run = cluster.get_run(&waiter).await;
    assert_eq!(run["status"], "cancelled", "ended at once: {run}");
    assert_eq!(run["error"]["code"], "cancelled", "{run}");
    let mut events = SseReader::open(cluster.request(0, Method::GET, &format!("/v1/runs/{waiter}/events"))).await;
    assert!(events.read_to_done(5 * SECOND).await, "its stream is closed: {:?}", events.frames);
    let (end, _) = tail(&events.frames, 2);
    assert_eq!(end[0]["data"], json!({"status": "cancelled"}), "{end:?}");
    assert_eq!(end[1]["type"], "abort", "{end:?}");

    // the thread goes on without it
    let held = cluster.wait_run(&holder, 20 * SECOND).await;
    assert_eq!(held["status"], "completed", "{held}");
    let roles: Vec<String> = cluster.thread_messages(thread).await.into_iter().map(|(role, _)| role).collect();
    assert_eq!(roles, ["user", "assistant"], "the cancelled run left nothing in the thread");
}

#[tokio::test]
async fn a_disconnecting_client_does_not_cancel_unless_asked() {
    let cluster = cluster_with_bot(1, 1, Env::new().await, "openai").await;

    let mut stream = cluster.stream(0, json!({"agent_id": "bot", "prompt": "stay [[mock tokens=40 delay=50]]"})).await;
    let run_id = stream.run_id();
    assert!(stream.read_until(10 * SECOND, is_delta).await, "no text arrived");
    drop(stream);
    let run = cluster.wait_run(&run_id, 15 * SECOND).await;
    assert_eq!(run["status"], "completed", "the run went on without its client: {run}");
    assert_eq!(run["output"], mock_tokens(40));
    assert_eq!(cluster.mock.stats().disconnected, 0, "{:?}", cluster.mock.stats());

    let mut stream = cluster
        .stream(
            0,
            json!({"agent_id": "bot", "prompt": "go [[mock tokens=400 delay=25]]", "cancel_on_disconnect": true}),
        )
        .await;
    let run_id = stream.run_id();
    assert!(stream.read_until(10 * SECOND, is_delta).await, "no text arrived");
    let left = Instant::now();
    drop(stream);
    let run = cluster.wait_run(&run_id, 8 * SECOND).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["error"]["code"], "cancelled", "{run}");
    assert!(left.elapsed() < 5 * SECOND, "cancelled {:?} after the client left", left.elapsed());
    let aborted = eventually(3 * SECOND, || async { (cluster.mock.stats().disconnected >= 1).then_some(()) }).await;
    assert!(aborted.is_some(), "the provider request was not aborted: {:?}", cluster.mock.stats());
}

#[tokio::test]
async fn rate_limited_and_failing_providers_are_retried_until_success() {
    let cluster = Cluster::start(1, 1, Env::new().await).await;
    for kind in ["openai", "anthropic"] {
        cluster.agent(kind, kind, json!({})).await;

        // 429 once, with Retry-After: 1 s (far above the 50 ms backoff base)
        let before = cluster.mock.stats().requests;
        let sent = Instant::now();
        let (status, run) = cluster
            .run(0, json!({"agent_id": kind, "prompt": "limited [[mock fault=429 times=1 retry_after=1]]"}))
            .await;
        let took = sent.elapsed();
        assert_eq!(status, StatusCode::OK, "{run}");
        assert_eq!(run["status"], "completed", "{kind}: {run}");
        assert_eq!(run["output"], "Echo: limited");
        assert_eq!(cluster.mock.stats().requests - before, 2, "{kind}: one 429, one success");
        assert!(took >= Duration::from_millis(950), "{kind}: Retry-After 1 s was not honoured ({took:?})");

        // 500 twice
        let before = cluster.mock.stats().requests;
        let (_, run) = cluster.run(0, json!({"agent_id": kind, "prompt": "flaky [[mock fault=500 times=2]]"})).await;
        assert_eq!(run["status"], "completed", "{kind}: {run}");
        assert_eq!(run["output"], "Echo: flaky");
        assert_eq!(cluster.mock.stats().requests - before, 3, "{kind}: two 500s, one success");

        // the connection drops after 4 tokens, once: the answer is the retried call's, whole
        let before = cluster.mock.stats().requests;
        let thread = format!("thr_drop_{kind}");
        let mut stream = cluster
            .stream(
                0,
                json!({"agent_id": kind, "prompt": "cut [[mock tokens=12 fault=drop times=1 drop_after=4]]",
                       "thread_id": thread}),
            )
            .await;
        assert!(stream.read_to_done(20 * SECOND).await, "{kind}: {:?}", stream.frames);
        let run = cluster.wait_run(&stream.run_id(), 5 * SECOND).await;
        assert_eq!(run["status"], "completed", "{kind}: {run}");
        assert_eq!(run["output"], mock_tokens(12), "{kind}: the dropped call's text is not kept");
        assert_eq!(run["messages"], json!([{"role": "assistant", "content": mock_tokens(12)}]));
        assert_eq!(cluster.mock.stats().requests - before, 2, "{kind}: one dropped call, one success");
        let (end, _) = tail(&stream.frames, 1);
        assert_eq!(end[0]["type"], "finish", "{kind}: {end:?}");
        let thread = cluster.thread_messages(&thread).await;
        assert_eq!(thread.len(), 2, "{kind}: one user and one assistant message: {thread:?}");
        assert_eq!(thread[1].1, mock_tokens(12));
        eprintln!("{kind}: the dropped call streamed {:?} in all", stream.text());
    }
}

#[tokio::test]
async fn a_hanging_provider_hits_the_deadline() {
    // the server's default deadline is 2.5 s; a request may set its own
    let cluster = cluster_with_bot(1, 1, Env::new().await.with("RUNQ_RUN_TIMEOUT_MS", "2500"), "openai").await;
    let started = Instant::now();
    let (own, default) = tokio::join!(
        async {
            let mut s = cluster
                .stream(0, json!({"agent_id": "bot", "prompt": "hang [[mock fault=hang]]", "timeout_ms": 1500}))
                .await;
            let done = s.read_to_done(10 * SECOND).await;
            (s, done, started.elapsed())
        },
        async {
            let (status, op) = cluster
                .run(0, json!({"agent_id": "bot", "prompt": "hang too [[mock fault=hang]]", "async": true}))
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{op}");
            let op = cluster.wait_operation(op["operation_id"].as_str().unwrap(), 10 * SECOND).await;
            (op, started.elapsed())
        }
    );

    let (stream, done, took) = own;
    assert!(done, "the stream did not end: {:?}", stream.frames);
    assert!(took >= Duration::from_millis(1400) && took < 5 * SECOND, "timeout_ms 1500 ended it after {took:?}");
    let (end, _) = tail(&stream.frames, 1);
    assert_eq!(end[0]["type"], "error", "{end:?}");
    assert!(end[0]["errorText"].as_str().is_some_and(|t| !t.is_empty()), "{end:?}");
    let run = cluster.wait_run(&stream.run_id(), 5 * SECOND).await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["error"]["code"], "timed_out", "{run}");

    let (op, took) = default;
    assert_eq!(op["result"]["status"], "timed_out", "{op}");
    assert_eq!(op["result"]["error"]["code"], "timed_out", "{op}");
    assert!(took >= Duration::from_millis(2400), "RUNQ_RUN_TIMEOUT_MS 2500 ended it after {took:?}");

    let released = eventually(3 * SECOND, || async {
        let stats = cluster.mock.stats();
        (stats.in_flight == 0 && stats.disconnected >= 2).then_some(())
    })
    .await;
    assert!(released.is_some(), "the hung provider requests were left open: {:?}", cluster.mock.stats());
}

#[tokio::test]
async fn a_bad_provider_key_fails_fast() {
    // a retry would cost a second or more: failing in < 2 s means no retry happened
    let cluster = Cluster::start(1, 1, Env::new().await.with("RUNQ_RETRY_BASE_MS", "1000")).await;
    for kind in ["openai", "anthropic"] {
        let slug = format!("bad-{kind}");
        cluster.agent_keyed(&slug, kind, "bad-key", json!({})).await;
        let before = cluster.mock.stats().requests;

        let sent = Instant::now();
        let mut stream = cluster.stream(0, json!({"agent_id": slug, "prompt": "hello"})).await;
        assert!(stream.read_to_done(10 * SECOND).await, "{kind}: {:?}", stream.frames);
        let took = sent.elapsed();
        assert!(took < 5 * SECOND, "{kind}: a 401 took {took:?} to fail");
        let (end, _) = tail(&stream.frames, 1);
        assert_eq!(end[0]["type"], "error", "{kind}: {end:?}");
        assert!(end[0]["errorText"].as_str().is_some_and(|t| !t.is_empty()), "{end:?}");
        let run = cluster.wait_run(&stream.run_id(), 5 * SECOND).await;
        assert_eq!(run["status"], "failed", "{kind}: {run}");
        assert_eq!(run["error"]["code"], "provider_auth_failed", "{kind}: {run}");
        assert!(run["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{run}");
        assert_eq!(cluster.mock.stats().requests - before, 1, "{kind}: a 401 is not retried");

        let (_, op) = cluster.run(0, json!({"agent_id": slug, "prompt": "hello", "async": true})).await;
        let op = cluster.wait_operation(op["operation_id"].as_str().unwrap(), 5 * SECOND).await;
        assert_eq!(op["status"], "failed", "{op}");
        assert_eq!(op["result"]["error"]["code"], "provider_auth_failed", "{op}");
    }
}

/// Sends `body` to `POST /v1/run` `n` times at once, alternating APIs, with one idempotency key.
async fn at_once(cluster: &Cluster, n: usize, key: &str, body: &Value) -> Vec<reqwest::Response> {
    join_all((0..n).map(|i| {
        cluster
            .request(i % cluster.apis.len(), Method::POST, "/v1/run")
            .header("accept", "application/json")
            .header("idempotency-key", key)
            .timeout(30 * SECOND)
            .json(body)
            .send()
    }))
    .await
    .into_iter()
    .map(|r| r.expect("request"))
    .collect()
}

#[tokio::test]
async fn concurrent_duplicate_idempotency_keys_create_one_run() {
    let cluster = cluster_with_bot(2, 1, Env::new().await, "openai").await;
    let key = |mode: &str| format!("{mode}-{}", uuid::Uuid::now_v7().simple());

    // sync: one run, every caller gets it
    let body = json!({"agent_id": "bot", "prompt": "once, sync"});
    let mut ids = Vec::new();
    let sent = Instant::now();
    let answers = at_once(&cluster, 10, &key("sync"), &body).await;
    let sync_took = sent.elapsed();
    for res in answers {
        assert_eq!(res.status(), StatusCode::OK);
        let run: Value = res.json().await.unwrap();
        assert_eq!(run["output"], "Echo: once, sync", "{run}");
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(cluster.count("runs").await, 1);

    // async and batch: one operation
    for (mode, body, runs) in [
        ("async", json!({"agent_id": "bot", "prompt": "once, async", "async": true}), 1),
        ("batch", json!({"agent_id": "bot", "batch": [{"query": "one"}, {"query": "two"}]}), 2),
    ] {
        let before = cluster.count("runs").await;
        let mut operations = Vec::new();
        for res in at_once(&cluster, 10, &key(mode), &body).await {
            assert_eq!(res.status(), StatusCode::ACCEPTED, "{mode}");
            let op: Value = res.json().await.unwrap();
            operations.push(op["operation_id"].as_str().unwrap().to_owned());
        }
        operations.dedup();
        assert_eq!(operations.len(), 1, "{mode}: {operations:?}");
        assert_eq!(cluster.count("runs").await - before, runs, "{mode}");
        let done = cluster.wait_operation(&operations[0], 20 * SECOND).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }

    // stream: one run, every caller streams it
    let before = cluster.count("runs").await;
    let body = json!({"agent_id": "bot", "prompt": "once, streamed", "stream": true});
    let key = key("stream");
    let streams = join_all((0..10).map(|i| {
        SseReader::open(
            cluster.request(i % 2, Method::POST, "/v1/run").header("idempotency-key", key.as_str()).json(&body),
        )
    }))
    .await;
    let mut ids = Vec::new();
    for mut stream in streams {
        assert_eq!(stream.status, StatusCode::OK, "{}", stream.rest());
        assert!(stream.read_to_done(20 * SECOND).await, "{:?}", stream.frames);
        assert_eq!(stream.text(), "Echo: once, streamed");
        ids.push(stream.run_id());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(cluster.count("runs").await - before, 1);
    // callers that arrived after the run finished were answered at once, too
    assert!(sync_took < 5 * SECOND, "10 sync callers of one short run waited {sync_took:?}");
}

#[tokio::test]
async fn an_idempotency_key_reused_with_another_body_is_409() {
    let cluster = cluster_with_bot(1, 1, Env::new().await, "openai").await;
    let cluster = &cluster;
    let send = |body: Value| async move {
        let res = cluster
            .app(0)
            .with_key(Method::POST, "/v1/run", cluster.admin_key())
            .header("accept", "application/json")
            .header("idempotency-key", "order-42")
            .json(&body)
            .send()
            .await
            .expect("request");
        (res.status(), res.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (status, first) = send(json!({"agent_id": "bot", "prompt": "charge the card"})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    for other in [
        json!({"agent_id": "bot", "prompt": "charge the card twice"}),
        json!({"agent_id": "bot", "prompt": "charge the card", "async": true}),
    ] {
        let (status, body) = send(other.clone()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{other} → {body}");
        assert_envelope(&body, "idempotency_key_reused");
    }
    assert_eq!(cluster.count("runs").await, 1, "refused requests recorded nothing");

    // the same body still replays the first run, at once
    let sent = Instant::now();
    let (status, again) = send(json!({"agent_id": "bot", "prompt": "charge the card"})).await;
    let took = sent.elapsed();
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], first["id"], "the same body replays the same run");
    assert_eq!(again["output"], "Echo: charge the card", "{again}");
    assert!(took < 5 * SECOND, "replaying a finished run took {took:?}");
}

#[tokio::test]
async fn sigterm_on_a_worker_hands_its_runs_to_another_without_waiting_for_the_lease() {
    // a 60 s lease: only a hand-back can explain a resume within seconds
    let env = Env::new().await.with("RUNQ_LEASE_MS", "60000").with("RUNQ_SHUTDOWN_GRACE_MS", "500");
    let mut cluster = cluster_with_bot(1, 1, env, "openai").await;
    let pid = cluster.worker_pid(0);
    // 60 tokens at 50 ms: 3 s each, far beyond the 500 ms grace
    let prompt = "handed over [[mock tokens=60 delay=50]]";
    let mut stream = cluster.stream(0, json!({"agent_id": "bot", "prompt": prompt, "thread_id": "thr_handoff"})).await;
    for i in 0..4 {
        let (status, op) =
            cluster.run(0, json!({"agent_id": "bot", "prompt": format!("{prompt} {i}"), "async": true})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
    }
    let owner = format!("worker-{pid}-%");
    let all_running = eventually(10 * SECOND, || async {
        let (n,): (i64,) = sqlx::query_as("select count(*) from runs where status = 'running' and lease_owner like $1")
            .bind(&owner)
            .fetch_one(&cluster.db)
            .await
            .ok()?;
        (n == 5).then_some(())
    })
    .await;
    assert!(all_running.is_some(), "the first worker did not take the 5 runs");
    assert!(stream.read_until(10 * SECOND, is_delta).await, "no text arrived");

    cluster.add_worker().await;
    let termed = Instant::now();
    cluster.term_worker(0);
    assert!(cluster.wait_worker_exit(0, 5 * SECOND).await.is_some(), "the worker did not exit after its grace");

    let runs = all_runs(&cluster).await;
    assert_eq!(runs.len(), 5);
    for run in &runs {
        let left = (10 * SECOND).saturating_sub(termed.elapsed());
        let run = cluster.wait_run(run["id"].as_str().unwrap(), left).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["attempt"], 2, "resumed by another worker: {run}");
        assert_eq!(run["output"], mock_tokens(60));
        assert_eq!(run["messages"], json!([{"role": "assistant", "content": mock_tokens(60)}]));
    }
    eprintln!("5 runs handed over and finished {:.1?} after SIGTERM", termed.elapsed());

    assert!(stream.read_to_done(10 * SECOND).await, "{:?}", stream.frames);
    let parts = stream.parts();
    let retry = parts.iter().find(|p| p["type"] == "data-run" && p["data"]["retry"] == true);
    assert_eq!(
        retry,
        Some(
            &json!({"type": "data-run", "data": {"status": "running", "attempt": 2, "retry": true}, "transient": true})
        ),
        "the stream tells of the new attempt"
    );
    assert_consecutive(&stream.ids(), "across the hand-over");
    assert_eq!(final_attempt_text(&stream.frames), mock_tokens(60));
    let thread = cluster.thread_messages("thr_handoff").await;
    assert_eq!(thread.len(), 2, "one user and one assistant message: {thread:?}");
    assert_eq!(thread[1], ("assistant".to_owned(), mock_tokens(60)));
}

#[tokio::test]
async fn sigterm_on_an_api_closes_its_streams() {
    let mut cluster = cluster_with_bot(2, 1, Env::new().await, "openai").await;
    // 200 tokens at 40 ms: 8 s
    let mut stream = cluster.stream(0, json!({"agent_id": "bot", "prompt": "long [[mock tokens=200 delay=40]]"})).await;
    let run_id = stream.run_id();
    assert!(stream.read_events(6, 10 * SECOND).await, "{:?}", stream.frames);

    cluster.term_api(0);
    assert!(stream.read_to_end(4 * SECOND).await, "the stream stayed open after SIGTERM: {:?}", stream.ids());
    assert!(!stream.saw_done(), "the run had not finished: its stream must not say [DONE]");
    let run = cluster.get_run(&run_id).await;
    assert_eq!(run["status"], "running", "the stream closed while the run went on: {run}");
    assert!(cluster.wait_api_exit(0, 10 * SECOND).await.is_some(), "the API did not exit");

    let last = stream.last_id().unwrap();
    let mut resumed = SseReader::open(
        cluster.request(1, Method::GET, &format!("/v1/runs/{run_id}/events")).header("last-event-id", last.to_string()),
    )
    .await;
    assert!(resumed.read_to_done(15 * SECOND).await, "{:?}", resumed.frames);
    let ids = resumed.ids();
    assert_eq!(ids.first(), Some(&(last + 1)), "{ids:?}");
    assert_consecutive(&ids, "after the reconnect");
    let run = cluster.wait_run(&run_id, 5 * SECOND).await;
    assert_eq!(format!("{}{}", stream.text(), resumed.text()), run["output"].as_str().unwrap());
}

#[tokio::test]
async fn the_api_answers_503_while_redis_is_down_and_recovers() {
    let mut redis = PrivateRedis::start().await;
    let cluster = cluster_with_bot(1, 1, Env::new().await.with("REDIS_URL", &redis.url()), "openai").await;
    let (status, run) = cluster.run(0, json!({"agent_id": "bot", "prompt": "before"})).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let (runs, operations) = (cluster.count("runs").await, cluster.count("operations").await);

    redis.kill().await;
    for body in [
        json!({"agent_id": "bot", "prompt": "sync"}),
        json!({"agent_id": "bot", "prompt": "async", "async": true}),
        json!({"agent_id": "bot", "prompt": "streamed", "stream": true}),
        json!({"agent_id": "bot", "batch": [{"query": "a"}, {"query": "b"}]}),
    ] {
        let sent = Instant::now();
        let res = cluster
            .request(0, Method::POST, "/v1/run")
            .json(&body)
            .timeout(10 * SECOND)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{body}: no answer within 10 s: {e}"));
        let took = sent.elapsed();
        let status = res.status();
        let retry_after = res.headers().get("retry-after").cloned();
        let answer: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body} → {answer}");
        assert_envelope(&answer, "service_unavailable");
        assert!(retry_after.is_some(), "{body}: 503 without Retry-After");
        assert!(took < 5 * SECOND, "{body}: the 503 took {took:?}");
    }
    assert_eq!(cluster.count("runs").await, runs, "refused runs left rows behind");
    assert_eq!(cluster.count("operations").await, operations, "refused runs left operations behind");

    redis.restart().await;
    let back = Instant::now();
    let accepted = eventually(20 * SECOND, || async {
        let (status, op) = cluster.run(0, json!({"agent_id": "bot", "prompt": "after", "async": true})).await;
        (status == StatusCode::ACCEPTED).then_some(op)
    })
    .await
    .expect("the API did not recover within 20 s of Redis coming back");
    let done = cluster.wait_operation(accepted["operation_id"].as_str().unwrap(), 20 * SECOND).await;
    assert_eq!(done["result"]["output"], "Echo: after", "{done}");
    eprintln!("runs work again {:.1?} after Redis came back", back.elapsed());
}
