//! Fault injection: many processes on one database, a private Redis that can be killed and
//! flushed, and the short timings that make takeovers quick.

use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio::process::{Child, Command};

use crate::*;

/// Short timings every [`Cluster`] process gets unless the test's [`Env`] sets them: leases of
/// 2 s renewed every ~667 ms, a reconciler pass every 300 ms, lost jobs re-pushed after 2 s,
/// provider retries from 50 ms.
pub const FAULT_TIMINGS: &[(&str, &str)] = &[
    ("RUNQ_LEASE_MS", "2000"),
    ("RUNQ_RECONCILE_INTERVAL_MS", "300"),
    ("RUNQ_REQUEUE_AFTER_MS", "2000"),
    ("RUNQ_RETRY_BASE_MS", "50"),
];

/// Run statuses a run never leaves.
pub const TERMINAL: &[&str] = &["completed", "failed", "cancelled", "timed_out"];

/// A `redis-server` of one test alone, on its own port, without persistence; it can be killed
/// and restarted on the same port. Killed when dropped.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub async fn start() -> Self {
        let mut redis = Self { port: free_port(), child: None };
        redis.restart().await;
        redis
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, for `REDIS_URL`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) if it runs, starts a new one on the same port (empty: nothing
    /// is saved) and waits (10 s at most) until it answers `PING`.
    pub async fn restart(&mut self) {
        self.kill().await;
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("redis-server on port {} exited at start: {status}", self.port);
            }
            if self.ping().await {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
    }

    /// Kills the server (SIGKILL) and waits for it to exit; its data is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Whether the server answers `PING` within a second.
    pub async fn ping(&self) -> bool {
        let url = self.url();
        let pong = tokio::time::timeout(Duration::from_secs(1), async move {
            let client = redis::Client::open(url).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
        })
        .await;
        matches!(pong, Ok(Some(_)))
    }

    /// `FLUSHALL`: every queue, replay log and key is gone.
    pub async fn flushall(&self) {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect to the private redis");
        redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.expect("FLUSHALL");
    }
}

/// N `runq-api` and M `runq-worker` processes on one database and Redis prefix, and the mock
/// provider in-process: spawned binaries, so that a test can kill, signal and restart them.
/// Every process gets [`FAULT_TIMINGS`] unless the [`Env`] says otherwise.
/// Processes are addressed by index; a killed one keeps its slot until restarted.
pub struct Cluster {
    pub env: Env,
    pub mock: MockServer,
    pub apis: Vec<TestApp>,
    /// Whether each API is believed alive (false after `kill_api` / a SIGTERM exit).
    pub api_alive: Vec<bool>,
    pub workers: Vec<Child>,
    /// A client without a total timeout, for streams (tests bound their own waits).
    pub client: reqwest::Client,
    /// A pool on the test's database.
    pub db: PgPool,
}

impl Cluster {
    pub async fn start(apis: usize, workers: usize, env: Env) -> Self {
        assert!(apis >= 1, "a cluster needs an API");
        let env = FAULT_TIMINGS.iter().fold(env, |env, (key, value)| env.with_default(key, value));
        let mock = MockServer::start(MockConfig::default()).await.expect("mock provider");
        // the first API applies the migrations before anything else starts
        let mut started = vec![TestApp::spawn_binary(env.clone()).await];
        for _ in 1..apis {
            started.push(TestApp::spawn_binary(env.clone()).await);
        }
        let db = started[0].db.clone();
        let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().expect("client");
        let mut cluster =
            Self { env, mock, api_alive: vec![true; started.len()], apis: started, workers: Vec::new(), client, db };
        for _ in 0..workers {
            cluster.add_worker().await;
        }
        cluster
    }

    /// Base URL of API `i`.
    pub fn api(&self, i: usize) -> &str {
        &self.apis[i].base
    }

    pub fn app(&self, i: usize) -> &TestApp {
        &self.apis[i]
    }

    pub fn admin_key(&self) -> &str {
        &self.env.admin_key
    }

    /// A deployed agent on the mock provider (provider API key `sk-test`).
    pub async fn agent(&self, slug: &str, kind: &str, version: Value) -> Value {
        self.agent_keyed(slug, kind, "sk-test", version).await
    }

    /// A deployed agent on the mock provider whose provider API key is `provider_key`.
    pub async fn agent_keyed(&self, slug: &str, kind: &str, provider_key: &str, version: Value) -> Value {
        let app = self.live_app();
        app.deployed_agent_keyed(app.admin_key(), slug, kind, &self.mock.base_url(), provider_key, version).await
    }

    /// The first API believed alive.
    pub fn live_app(&self) -> &TestApp {
        let i = self.api_alive.iter().position(|alive| *alive).expect("no API is alive");
        &self.apis[i]
    }

    /// SIGKILLs API `i` and waits for it to be gone.
    pub async fn kill_api(&mut self, i: usize) {
        let _ = self.apis[i].api.child_mut().kill().await;
        self.api_alive[i] = false;
    }

    /// Sends SIGTERM to API `i` (it drains and exits by itself).
    pub fn term_api(&self, i: usize) {
        signal(self.apis[i].api.child(), "TERM");
    }

    /// Waits (bounded) for API `i` to exit.
    pub async fn wait_api_exit(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let status = wait_exit(self.apis[i].api.child_mut(), timeout).await;
        if status.is_some() {
            self.api_alive[i] = false;
        }
        status
    }

    /// Starts a new API in slot `i` (killing the old one if it still runs).
    pub async fn restart_api(&mut self, i: usize) {
        self.kill_api(i).await;
        self.apis[i] = TestApp::spawn_binary(self.env.clone()).await;
        self.api_alive[i] = true;
    }

    /// Starts one more worker and waits for its `worker started` line; returns its index.
    pub async fn add_worker(&mut self) -> usize {
        let (child, _) = self.env.spawn_until("runq-worker", Some("worker started")).await;
        self.workers.push(child);
        self.workers.len() - 1
    }

    /// Process id of worker `i` (its lease owner name is `worker-<pid>-…`).
    pub fn worker_pid(&self, i: usize) -> u32 {
        self.workers[i].id().expect("worker still running")
    }

    /// SIGKILLs worker `i` and waits for it to be gone.
    pub async fn kill_worker(&mut self, i: usize) {
        let _ = self.workers[i].kill().await;
    }

    /// Sends SIGTERM to worker `i`.
    pub fn term_worker(&self, i: usize) {
        signal(&self.workers[i], "TERM");
    }

    /// Waits (bounded) for worker `i` to exit.
    pub async fn wait_worker_exit(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.workers[i], timeout).await
    }

    /// Starts a new worker in slot `i` (SIGKILLing the old one if it still runs).
    pub async fn restart_worker(&mut self, i: usize) {
        self.kill_worker(i).await;
        let (child, _) = self.env.spawn_until("runq-worker", Some("worker started")).await;
        self.workers[i] = child;
    }

    /// A request to API `i` with the admin key, on the client without a total timeout.
    pub fn request(&self, i: usize, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.api(i))).header("x-api-key", self.admin_key())
    }

    /// A JSON request to API `i` with the admin key (30 s timeout; panics when unreachable).
    pub async fn call(&self, i: usize, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.apis[i].call(method, path, body).await
    }

    /// `POST /v1/run` on API `i`.
    pub async fn run(&self, i: usize, body: Value) -> (StatusCode, Value) {
        self.call(i, Method::POST, "/v1/run", Some(body)).await
    }

    /// `POST /v1/run` on API `i` with `stream: true`, read incrementally.
    pub async fn stream(&self, i: usize, mut body: Value) -> SseReader {
        body["stream"] = Value::Bool(true);
        SseReader::open(self.request(i, Method::POST, "/v1/run").json(&body)).await
    }

    /// A GET answered by the first live API that answers at all (`None` when none does).
    pub async fn get(&self, path: &str) -> Option<(StatusCode, Value)> {
        for (app, _) in self.apis.iter().zip(&self.api_alive).filter(|(_, alive)| **alive) {
            let res = app.with_key(Method::GET, path, app.admin_key()).timeout(Duration::from_secs(10)).send().await;
            if let Ok(res) = res {
                let status = res.status();
                return Some((status, res.json().await.unwrap_or(Value::Null)));
            }
        }
        None
    }

    /// `GET /v1/runs/{id}` (panics when no API answers 200).
    pub async fn get_run(&self, id: &str) -> Value {
        let (status, run) = self.get(&format!("/v1/runs/{id}")).await.expect("no API answered");
        assert_eq!(status, StatusCode::OK, "{run}");
        run
    }

    /// Polls a run until it reaches a terminal status; panics with its last state after `timeout`.
    pub async fn wait_run(&self, id: &str, timeout: Duration) -> Value {
        self.wait_for("run", &format!("/v1/runs/{id}"), TERMINAL, timeout).await
    }

    /// `(role, content)` of a thread's messages, in order.
    pub async fn thread_messages(&self, thread: &str) -> Vec<(String, String)> {
        let (status, body) =
            self.get(&format!("/v1/threads/{thread}/messages?limit=100")).await.expect("no API answered");
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]
            .as_array()
            .unwrap_or_else(|| panic!("no data: {body}"))
            .iter()
            .map(|m| {
                let content = match &m["content"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (m["role"].as_str().unwrap_or_default().to_owned(), content)
            })
            .collect()
    }

    /// Polls an operation until it is done (`succeeded`, `failed` or `cancelled`); panics with its
    /// last state after `timeout`.
    pub async fn wait_operation(&self, id: &str, timeout: Duration) -> Value {
        self.wait_for("operation", &format!("/v1/operations/{id}"), &["succeeded", "failed", "cancelled"], timeout)
            .await
    }

    /// Polls `path` until it answers 200 with a `status` among `done`; panics with the last
    /// answer after `timeout`.
    async fn wait_for(&self, what: &str, path: &str, done: &[&str], timeout: Duration) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let finished = eventually(timeout, || {
            let last = &last;
            async move {
                let (status, body) = self.get(path).await?;
                let finished = status == StatusCode::OK && done.iter().any(|s| body["status"] == *s);
                *last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = body.clone();
                finished.then_some(body)
            }
        })
        .await;
        let last = last.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        finished.unwrap_or_else(|| panic!("{what} {path} did not finish within {timeout:?}; last seen: {last}"))
    }

    /// Rows of a table of the test's database (`runs`, `operations`, `messages`, …).
    pub async fn count(&self, table: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
            .fetch_one(&self.db)
            .await
            .expect("count rows");
        n
    }

    /// Runs not yet in a terminal status, from the database.
    pub async fn unfinished_runs(&self) -> i64 {
        let (n,): (i64,) = sqlx::query_as("select count(*) from runs where status in ('queued', 'running')")
            .fetch_one(&self.db)
            .await
            .expect("count runs");
        n
    }
}
