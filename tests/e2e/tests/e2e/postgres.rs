//! Postgres going away under load, on a cluster of the test's own ([`PrivatePostgres`]): requests
//! are refused with 503 while it is down, nothing half-written stays behind, runs that were
//! running finish once it is back, and the service recovers by itself. Every wait is bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use runq_e2e::{
    Cluster, Env, PrivatePostgres, SseReader, TERMINAL, assert_envelope, eventually, final_attempt_text, mock_tokens,
    parts_of,
};
use serde_json::{Value, json};

const SECOND: Duration = Duration::from_secs(1);
/// How long Postgres stays away: longer than the cluster's 2 s leases, so running runs lose them.
const OUTAGE: Duration = Duration::from_secs(4);
/// Tokens of each run of the load, one every 50 ms: the runs are mid-stream when Postgres stops.
const TOKENS: usize = 60;

/// A request to API 0 with the admin key (or `key`), answered within 10 s.
async fn send(cluster: &Cluster, key: Option<&str>, method: Method, path: &str, body: Option<&Value>) -> Answer {
    let mut request =
        cluster.request(0, method.clone(), path).header("accept", "application/json").timeout(10 * SECOND);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let res = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: no answer within 10 s: {e}"));
    let status = res.status();
    let retry_after = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = res.json().await.unwrap_or(Value::Null);
    Answer { status, retry_after, body }
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

/// A 503 in the error envelope whose `Retry-After` header and `details.retry_after` agree.
fn assert_unavailable(answer: &Answer, what: &str) {
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{what} → {}", answer.body);
    assert_envelope(&answer.body, "service_unavailable");
    let header = answer.retry_after.as_deref().unwrap_or_else(|| panic!("{what}: 503 without Retry-After"));
    assert_eq!(answer.body["error"]["details"]["retry_after"].to_string(), header, "{what}: {}", answer.body);
}

/// The runs' final parts (`finish` or `error`) in a stream.
fn terminal_parts(stream: &SseReader) -> usize {
    parts_of(&stream.frames).iter().filter(|p| p["type"] == "finish" || p["type"] == "error").count()
}

/// How Postgres goes away.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// `pg_ctl stop -m fast`: sessions are terminated (`57P01`), then the server exits.
    Stop,
    /// `-m immediate`: the server and its sessions die at once; the restart recovers from the WAL.
    Crash,
}

#[tokio::test]
async fn postgres_stopped_under_load_answers_503_and_every_run_finishes_once_it_is_back() {
    postgres_goes_away_under_load(Outage::Stop).await;
}

#[tokio::test]
async fn postgres_crashing_under_load_answers_503_and_every_run_finishes_once_it_is_back() {
    postgres_goes_away_under_load(Outage::Crash).await;
}

/// A process started while Postgres is down waits for it rather than exiting (both apply the
/// migrations at start-up), and serves once Postgres is back: the API first, then a worker.
#[tokio::test]
async fn api_and_worker_started_while_postgres_is_down_come_up_once_it_is_back() {
    let mut pg = PrivatePostgres::start().await;
    let env = Env::on_database(&pg.database_url());
    pg.stop().await;
    let (mut cluster, ()) = tokio::join!(Cluster::start(1, 0, env), async {
        tokio::time::sleep(2 * SECOND).await;
        pg.restart().await;
    });
    cluster.agent("bot", "openai", json!({})).await;

    pg.stop().await;
    let (worker, ()) = tokio::join!(cluster.add_worker(), async {
        tokio::time::sleep(2 * SECOND).await;
        pg.restart().await;
    });
    assert_eq!(worker, 0);
    let (status, run) = cluster.run(0, json!({"agent_id": "bot", "prompt": "after the outage"})).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "completed", "{run}");
}

async fn postgres_goes_away_under_load(outage: Outage) {
    let mut pg = PrivatePostgres::start().await;
    let cluster = Cluster::start(1, 2, Env::on_database(&pg.database_url())).await;
    cluster.agent("bot", "openai", json!({})).await;
    let (status, before) = cluster.run(0, json!({"agent_id": "bot", "prompt": "before"})).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let before = before["id"].as_str().expect("run id").to_owned();
    // a key no request used yet: its first use needs Postgres, not the API's key cache
    let fresh_key = cluster.app(0).create_key(&["run"]).await;

    // the load: streams, async runs and a batch, all running when Postgres goes away
    let prompt = |name: String| format!("[[mock tokens={TOKENS} delay=50]] {name}");
    let mut streams = join_all(
        (0..10).map(|i| cluster.stream(0, json!({"agent_id": "bot", "prompt": prompt(format!("stream {i}"))}))),
    )
    .await;
    let mut operations = Vec::new();
    for i in 0..4 {
        let (status, op) =
            cluster.run(0, json!({"agent_id": "bot", "prompt": prompt(format!("async {i}")), "async": true})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        operations.push(op["operation_id"].as_str().expect("operation id").to_owned());
    }
    let batch: Vec<Value> = (0..4).map(|i| json!({"query": prompt(format!("batch {i}"))})).collect();
    let (status, op) = cluster.run(0, json!({"agent_id": "bot", "batch": batch})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{op}");
    operations.push(op["operation_id"].as_str().expect("operation id").to_owned());
    for stream in &mut streams {
        assert_eq!(stream.status, StatusCode::OK, "{}", stream.rest());
        assert!(
            stream.read_until(20 * SECOND, |f| f.data.contains("\"text-delta\"")).await,
            "a stream of the load did not start"
        );
    }

    // a request in the middle of a query when Postgres goes away: it waits on a row the test holds
    let mut lock = cluster.db.begin().await.expect("begin");
    sqlx::query("select 1 from agents where slug = 'bot' for update").execute(&mut *lock).await.expect("lock");
    let patch = json!({"description": "patched while Postgres went away"});
    let blocked = send(&cluster, None, Method::PATCH, "/v1/agents/bot", Some(&patch));

    // requests keep coming, across the outage and the recovery
    let probing = AtomicBool::new(true);
    let prober = probe(&cluster, &before, &probing);
    let outage_and_back = async {
        tokio::time::sleep(SECOND / 2).await;
        match outage {
            Outage::Stop => pg.stop().await,
            Outage::Crash => pg.crash().await,
        }
        let down = Instant::now();
        refusals_while_down(&cluster, &before, &operations[0], &fresh_key).await;
        let ready = send(&cluster, None, Method::GET, "/ready", None).await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "/ready while Postgres is down: {}", ready.body);
        assert!(!pg.is_up().await, "Postgres came back by itself");
        tokio::time::sleep(OUTAGE.saturating_sub(down.elapsed())).await;

        pg.restart().await;
        let back = Instant::now();
        let first_200 = eventually(5 * SECOND, || async {
            let answer = send(&cluster, None, Method::GET, &format!("/v1/runs/{before}"), None).await;
            (answer.status == StatusCode::OK).then_some(())
        });
        // a wait of 5 s at most, including a request still on its way when it runs out
        let recovered = tokio::time::timeout(5 * SECOND, first_200).await.ok().flatten();
        assert!(recovered.is_some(), "no 200 within 5 s of Postgres coming back");
        eprintln!("the API answered 200 again {:.1?} after Postgres came back", back.elapsed());
        let ready = send(&cluster, None, Method::GET, "/ready", None).await;
        assert_eq!(ready.status, StatusCode::OK, "/ready once Postgres is back: {}", ready.body);
        tokio::time::sleep(SECOND).await;
        probing.store(false, Ordering::Relaxed);
    };
    let (probed, blocked, ()) = tokio::join!(prober, blocked, outage_and_back);
    drop(lock);
    assert_unavailable(&blocked, "PATCH /v1/agents/bot, cut off mid-query by the outage");
    assert!(probed.refused > 0 && !probed.accepted.is_empty(), "the probe missed the outage: {probed:?}");
    operations.extend(probed.accepted);

    let (status, after) = cluster.run(0, json!({"agent_id": "bot", "prompt": "after"})).await;
    assert_eq!(status, StatusCode::OK, "a run after Postgres came back: {after}");
    assert_eq!(after["output"], "Echo: after", "{after}");

    // every run of the load ends, with one final answer
    for stream in &mut streams {
        let run = stream.run_id();
        assert!(stream.read_to_done(60 * SECOND).await, "stream of {run} did not end: {:?}", stream.error);
        assert_eq!(terminal_parts(stream), 1, "{run}: not one final part: {:?}", stream.parts());
        let record = cluster.wait_run(&run, 30 * SECOND).await;
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["output"], mock_tokens(TOKENS), "{record}");
        assert_eq!(final_attempt_text(&stream.frames), mock_tokens(TOKENS), "{run}: the streamed answer");
    }
    for op in &operations {
        let done = cluster.wait_operation(op, 60 * SECOND).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    assert_nothing_half_written(&cluster).await;
}

/// While Postgres is down, the run path, reads and management answer 503 with `Retry-After` in
/// the error envelope (all at once: each waits for a connection that does not come).
async fn refusals_while_down(cluster: &Cluster, run: &str, operation: &str, fresh_key: &str) {
    let agent_body = json!({"name": "while-down"});
    let sync_body = json!({"agent_id": "bot", "prompt": "while down"});
    let stream_body = json!({"agent_id": "bot", "prompt": "while down", "stream": true});
    let batch_body = json!({"agent_id": "bot", "batch": [{"query": "while down"}]});
    let refused = [
        (Some(fresh_key), Method::GET, format!("/v1/runs/{run}"), None),
        (None, Method::POST, "/v1/run".to_owned(), Some(&sync_body)),
        (None, Method::POST, "/v1/run".to_owned(), Some(&stream_body)),
        (None, Method::POST, "/v1/run".to_owned(), Some(&batch_body)),
        (None, Method::GET, format!("/v1/runs/{run}"), None),
        (None, Method::GET, format!("/v1/operations/{operation}"), None),
        (None, Method::GET, "/v1/runs?limit=5".to_owned(), None),
        (None, Method::GET, "/v1/agents".to_owned(), None),
        (None, Method::POST, "/v1/agents".to_owned(), Some(&agent_body)),
    ];
    let answers = join_all(refused.iter().map(|(key, method, path, body)| async move {
        (method, path, send(cluster, *key, method.clone(), path, *body).await)
    }))
    .await;
    for (method, path, answer) in answers {
        assert_unavailable(&answer, &format!("{method} {path}"));
    }
}

/// What the probe saw.
#[derive(Debug, Default)]
struct Probed {
    /// Operations of the async runs it got accepted.
    accepted: Vec<String>,
    /// Requests answered 503.
    refused: usize,
}

/// Starts async runs and reads a run, back to back, while `probing`: every answer is a success
/// or a 503 with `Retry-After`, whatever moment Postgres goes away or returns.
async fn probe(cluster: &Cluster, run: &str, probing: &AtomicBool) -> Probed {
    let mut probed = Probed::default();
    let body = json!({"agent_id": "bot", "prompt": "probe", "async": true});
    let mut i = 0_u32;
    while probing.load(Ordering::Relaxed) {
        i += 1;
        let (method, path, body) = if i.is_multiple_of(2) {
            (Method::POST, "/v1/run".to_owned(), Some(&body))
        } else {
            (Method::GET, format!("/v1/runs/{run}"), None)
        };
        let answer = send(cluster, None, method.clone(), &path, body).await;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::ACCEPTED => {
                probed.accepted.push(answer.body["operation_id"].as_str().expect("operation id").to_owned());
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_unavailable(&answer, &format!("{method} {path}"));
                probed.refused += 1;
            }
            status => panic!("{method} {path} → {status} {}", answer.body),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    probed
}

/// Every run is terminal and a completed one has its output, its event log and one assistant
/// message; every operation has as many runs as it counts (its progress is counted from them),
/// all of them terminal; no idempotency key lacks what it was created for.
async fn assert_nothing_half_written(cluster: &Cluster) {
    let runs: Vec<(String, String, Option<String>, bool, i64)> = sqlx::query_as(
        "select r.id::text, r.status, r.output, r.event_log is not null,
                (select count(*) from messages m where m.run_id = r.id and m.role = 'assistant')
         from runs r",
    )
    .fetch_all(&cluster.db)
    .await
    .expect("read runs");
    for (id, status, output, has_events, answers) in &runs {
        assert!(TERMINAL.contains(&status.as_str()), "run {id} is {status}");
        if status == "completed" {
            assert!(output.is_some() && *has_events, "run {id} completed without output or event log");
            assert_eq!(*answers, 1, "run {id} has {answers} assistant messages");
        }
    }
    let operations: Vec<(String, i32, i64, i64)> = sqlx::query_as(
        "select o.id::text, o.total,
                (select count(*) from runs r where r.operation_id = o.id),
                (select count(*) from runs r where r.operation_id = o.id and r.status in ('queued', 'running'))
         from operations o",
    )
    .fetch_all(&cluster.db)
    .await
    .expect("read operations");
    for (id, total, runs, unfinished) in operations {
        assert_eq!(i64::from(total), runs, "operation {id} counts {total} runs but has {runs}");
        assert_eq!(unfinished, 0, "operation {id} has unfinished runs");
    }
    let (dangling,): (i64,) =
        sqlx::query_as("select count(*) from idempotency_keys where run_id is null and operation_id is null")
            .fetch_one(&cluster.db)
            .await
            .expect("read idempotency keys");
    assert_eq!(dangling, 0, "idempotency keys without their run");
}
