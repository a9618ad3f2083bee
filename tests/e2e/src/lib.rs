//! Harness for runq's end-to-end tests: real `runq-api` (and later `runq-worker`) processes on
//! port 0, a fresh Postgres database per test, a private Redis prefix per test, and the mock
//! provider in-process.
//!
//! # Layout
//! - [`TestApp`] — one API process and its database, with request helpers.
//! - [`fresh_database`] — creates `runq_test_<uuid>` and returns its URL.
//! - [`bin`] — path of a workspace binary (`make test` builds them first).
//! - [`PrivatePostgres`] — a Postgres cluster of one test, which it can stop and start again.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use runq_mock::{MockConfig, MockServer};

mod postgres;
pub use postgres::PrivatePostgres;

/// The master key every test process shares.
pub const MASTER_KEY: &str = "6b9d7e0f1a2c3b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5";

fn postgres_url() -> String {
    std::env::var("RUNQ_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Path of a binary built from this workspace, next to the test executable's `deps/` folder.
/// A binary older than its sources is refused: the tests would test yesterday's code.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target profile dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins` (make test does)", path.display());
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).expect("binary modification time");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sources: &[&str] = match name {
        "runq-api" => &["api", "shared", "migrations"],
        "runq-worker" => &["worker", "shared", "migrations"],
        "runq-mock" => &["tests/mock"],
        "runq" => &["cli"],
        _ => &[],
    };
    if let Some(newer) = sources.iter().find_map(|dir| newer_file(&root.join(dir), built)) {
        panic!("{} is older than {}: run `cargo build --bins` (make test does)", path.display(), newer.display());
    }
    path
}

/// A file under `dir` (sources, not build output) modified after `than`.
fn newer_file(dir: &std::path::Path, than: std::time::SystemTime) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let skipped = path.file_name().is_some_and(|n| n == "target" || n == "node_modules");
            if let Some(found) = (!skipped).then(|| newer_file(&path, than)).flatten() {
                return Some(found);
            }
        } else if meta.modified().is_ok_and(|modified| modified > than) {
            return Some(path);
        }
    }
    None
}

/// Creates an empty database for one test and returns its URL; migrations are applied by the API.
pub async fn fresh_database() -> String {
    let name = format!("runq_test_{}", uuid::Uuid::now_v7().simple());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{}/postgres?sslmode=disable", postgres_url()))
        .await
        .expect("Postgres must be running (make test starts it)");
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}"))).execute(&admin).await.expect("create database");
    admin.close().await;
    // loopback: TLS would only cost CPU
    format!("{}/{name}?sslmode=disable", postgres_url())
}

/// Environment shared by every runq process of one test.
#[derive(Clone, Debug)]
pub struct Env {
    pub database_url: String,
    pub redis_prefix: String,
    pub admin_key: String,
    pub extra: Vec<(String, String)>,
}

impl Env {
    pub async fn new() -> Self {
        Self {
            database_url: fresh_database().await,
            redis_prefix: format!("runq_test_{}", uuid::Uuid::now_v7().simple()),
            admin_key: format!("rq_admin_{}", uuid::Uuid::now_v7().simple()),
            extra: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", redis_url())
            .env("RUNQ_REDIS_PREFIX", &self.redis_prefix)
            .env("RUNQ_MASTER_KEY", MASTER_KEY)
            .env("RUNQ_ADMIN_KEY", &self.admin_key)
            .env("RUNQ_BIND", "127.0.0.1:0")
            // many processes run at once in a suite: stay well under Postgres's 100 connections
            .env("RUNQ_DB_MAX_CONNECTIONS", "4")
            .env("RUNQ_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            // webhook receivers of the tests listen on 127.0.0.1
            .env("RUNQ_ALLOW_PRIVATE_TARGETS", "true")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(self.extra.iter().map(|(k, v)| (k, v)));
    }

    /// Runs a binary to completion (e.g. `runq-api bootstrap`), returning status and stdout.
    pub async fn run(&self, name: &str, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(bin(name));
        self.apply(&mut cmd);
        let out = cmd.args(args).stdin(Stdio::null()).output().await.expect("run binary");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a long-running binary and waits for its `listening addr=` line when `wait_addr`.
    pub async fn spawn(&self, name: &str, wait_addr: bool) -> (Child, Option<String>) {
        let (child, line) = self.spawn_until(name, wait_addr.then_some("listening addr=")).await;
        let addr = line.map(|line| {
            line.split("listening addr=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{name} did not report its address"))
        });
        (child, addr)
    }

    /// Starts a long-running binary; with `needle`, waits (30 s at most) for a log line holding
    /// it and returns that line. The process's log goes on to the test's stderr.
    pub async fn spawn_until(&self, name: &str, needle: Option<&str>) -> (Child, Option<String>) {
        let mut cmd = Command::new(bin(name));
        self.apply(&mut cmd);
        let mut child = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn().expect("spawn");
        let pid = child.id().unwrap_or_default();
        let label = format!("{name}:{pid}");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut found_line = None;
        if let Some(needle) = needle {
            let found = tokio::time::timeout(Duration::from_secs(30), async {
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("[{label}] {line}");
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                None
            })
            .await;
            found_line =
                Some(found.ok().flatten().unwrap_or_else(|| panic!("{name} did not log `{needle}` within 30 s")));
        }
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{label}] {line}");
            }
        });
        (child, found_line)
    }
}

/// One running `runq-api` with its own database.
pub struct TestApp {
    pub env: Env,
    pub base: String,
    pub client: reqwest::Client,
    pub db: PgPool,
    pub api: Child,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Env::new().await).await
    }

    pub async fn spawn_with(env: Env) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (api, addr) = env.spawn("runq-api", true).await;
        let db = PgPoolOptions::new().max_connections(2).connect(&env.database_url).await.expect("test db");
        Self {
            base: format!("http://{}", addr.expect("addr")),
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            env,
            db,
            api,
        }
    }

    pub fn admin_key(&self) -> &str {
        &self.env.admin_key
    }

    /// A request with no credentials.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// A request authenticated with `key` in `x-api-key`.
    pub fn with_key(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.request(method, path).header("x-api-key", key)
    }

    /// Sends a JSON request with the admin key; returns status and parsed body.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let key = self.env.admin_key.clone();
        self.call_as(&key, method, path, body).await
    }

    pub async fn call_as(&self, key: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        // a JSON client: `POST /v1/run` without `stream` answers JSON to it
        let mut req = self.with_key(method, path, key).header("accept", "application/json");
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let body = res.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Creates a workspace through `runq-api bootstrap` and returns its management key.
    pub async fn bootstrap_workspace(&self, name: &str) -> String {
        let (ok, out) = self.env.run("runq-api", &["bootstrap", "--workspace", name]).await;
        assert!(ok, "bootstrap failed: {out}");
        let created: Value = serde_json::from_str(out.trim()).expect("bootstrap prints JSON");
        created["key"].as_str().expect("key").to_owned()
    }

    /// Mints a key with `scopes` in the admin workspace.
    pub async fn create_key(&self, scopes: &[&str]) -> String {
        let (status, body) =
            self.call(Method::POST, "/v1/api-keys", Some(json!({"name": "test", "scopes": scopes}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["key"].as_str().expect("key").to_owned()
    }

    /// A provider, an agent and a deployed version using it; returns the agent.
    pub async fn deployed_agent(&self, key: &str, slug: &str, kind: &str, base_url: &str) -> Value {
        self.deployed_agent_with(key, slug, kind, base_url, json!({})).await
    }

    /// Like [`TestApp::deployed_agent`], with extra version fields (`system_prompt`, `tools`, …).
    pub async fn deployed_agent_with(
        &self,
        key: &str,
        slug: &str,
        kind: &str,
        base_url: &str,
        version: Value,
    ) -> Value {
        self.deployed_agent_keyed(key, slug, kind, base_url, "sk-test", version).await
    }

    /// Like [`TestApp::deployed_agent_with`], with the provider's own API key (`bad-key` makes
    /// the mock answer 401).
    pub async fn deployed_agent_keyed(
        &self,
        key: &str,
        slug: &str,
        kind: &str,
        base_url: &str,
        provider_key: &str,
        version: Value,
    ) -> Value {
        let provider_name = format!("{slug}-provider");
        let (status, body) = self
            .call_as(
                key,
                Method::POST,
                "/v1/providers",
                Some(json!({"name": provider_name, "kind": kind, "base_url": base_url, "api_key": provider_key})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, agent) =
            self.call_as(key, Method::POST, "/v1/agents", Some(json!({"name": slug, "slug": slug}))).await;
        assert_eq!(status, StatusCode::CREATED, "{agent}");
        let mut body = json!({"provider": provider_name, "model": "mock-model", "deploy": true});
        body.as_object_mut().expect("object").extend(version.as_object().cloned().unwrap_or_default());
        let (status, version) =
            self.call_as(key, Method::POST, &format!("/v1/agents/{slug}/versions"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{version}");
        agent
    }
}

/// The whole local stack of one test: API and worker processes, and the mock provider in-process.
pub struct Stack {
    pub app: TestApp,
    pub worker: Child,
    pub mock: MockServer,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(Env::new().await).await
    }

    pub async fn start_with(env: Env) -> Self {
        let mock = MockServer::start(MockConfig::default()).await.expect("mock provider");
        let app = TestApp::spawn_with(env).await;
        let (worker, _) = app.env.spawn("runq-worker", false).await;
        Self { app, worker, mock }
    }

    /// A deployed agent on the mock provider speaking `kind` (`openai` or `anthropic`).
    pub async fn agent(&self, slug: &str, kind: &str, version: Value) -> Value {
        self.app.deployed_agent_with(self.app.admin_key(), slug, kind, &self.mock.base_url(), version).await
    }

    /// A deployed agent `slug` whose one tool, the HTTP tool `lookup` served by `tool`, waits for
    /// a person's approval on every call.
    pub async fn approval_agent(&self, slug: &str, tool: &EchoTool) -> Value {
        let body = json!({
            "name": "lookup", "description": "Looks a city up",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "url": tool.url, "requires_approval": true,
        });
        let (status, created) = self.app.call(Method::POST, "/v1/tools", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        self.agent(slug, "openai", json!({"tools": ["lookup"]})).await
    }

    /// `POST /v1/run` with the admin key.
    pub async fn run(&self, body: Value) -> (StatusCode, Value) {
        self.app.call(Method::POST, "/v1/run", Some(body)).await
    }

    /// Sends a request and reads the whole SSE response.
    pub async fn sse(&self, request: RequestBuilder) -> Sse {
        let res = request.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        Sse { status, headers, frames: parse_sse(&text), text }
    }

    /// Polls an operation until it is done (or 120 s pass).
    pub async fn wait_operation(&self, id: &str) -> Value {
        for _ in 0..1200 {
            let (status, body) = self.app.call(Method::GET, &format!("/v1/operations/{id}"), None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if body["status"] == "succeeded" || body["status"] == "failed" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("operation {id} did not finish");
    }
}

/// A tool server on 127.0.0.1: every POST answers `{"got": <the JSON body>}`.
pub struct EchoTool {
    pub url: String,
    calls: Arc<AtomicUsize>,
}

impl EchoTool {
    pub async fn start() -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move { axum::Json(json!({"got": body})) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the tool server");
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, calls }
    }

    /// How many calls the tool got.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A read SSE response.
#[derive(Debug)]
pub struct Sse {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub frames: Vec<Frame>,
    pub text: String,
}

impl Sse {
    /// The JSON payloads of the frames that carry an id.
    pub fn parts(&self) -> Vec<Value> {
        self.frames
            .iter()
            .filter(|f| f.id.is_some())
            .map(|f| serde_json::from_str(&f.data).expect("frame data is JSON"))
            .collect()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.frames.iter().filter_map(|f| f.id).collect()
    }

    /// The concatenated `text-delta`s.
    pub fn text(&self) -> String {
        self.parts()
            .iter()
            .filter(|p| p["type"] == "text-delta")
            .map(|p| p["delta"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// One SSE frame: its `id:`, `event:` name and joined `data:` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: String,
}

/// Splits an SSE body into frames; comments (`: ping`) are skipped.
pub fn parse_sse(text: &str) -> Vec<Frame> {
    text.split("\n\n")
        .filter_map(|block| {
            let (mut id, mut event) = (None, None);
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            (!data.is_empty()).then(|| Frame { id, event, data: data.join("\n") })
        })
        .collect()
}

/// Asserts the error envelope: status, `error.code`, and `message` mirrored at the top.
pub fn assert_envelope(body: &Value, code: &str) {
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(body["message"], body["error"]["message"], "{body}");
    assert!(body["error"]["details"].is_object(), "{body}");
}

// ---------------------------------------------------------------------------------------------
// Fault injection: many processes on one database, a private Redis, resumable SSE reading.

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

impl Env {
    /// Sets `key` unless this environment already sets it.
    pub fn with_default(mut self, key: &str, value: &str) -> Self {
        if self.get(key).is_none() {
            self.extra.push((key.into(), value.into()));
        }
        self
    }

    /// The value this environment gives `key` (the last one set wins, as for the processes).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.extra.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A TCP port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Sends `signal` (`TERM`, `KILL`, …) to a child process with the `kill` command.
pub fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("the process is still running");
    let status =
        std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Waits (bounded) for a child to exit; `None` when it is still running after `timeout`.
pub async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    tokio::time::timeout(timeout, child.wait()).await.ok().and_then(Result::ok)
}

/// Calls `probe` every 50 ms until it returns `Some`, or `timeout` passes (`None`).
pub async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The mock's answer to a `[[mock tokens=N]]` directive: `tok0 tok1 … tok{N-1}`.
pub fn mock_tokens(n: usize) -> String {
    (0..n).map(|i| format!("tok{i}")).collect::<Vec<_>>().join(" ")
}

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
/// provider in-process. Every process gets [`FAULT_TIMINGS`] unless the [`Env`] says otherwise.
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
        let mut started = vec![TestApp::spawn_with(env.clone()).await];
        for _ in 1..apis {
            started.push(TestApp::spawn_with(env.clone()).await);
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
        let _ = self.apis[i].api.kill().await;
        self.api_alive[i] = false;
    }

    /// Sends SIGTERM to API `i` (it drains and exits by itself).
    pub fn term_api(&self, i: usize) {
        signal(&self.apis[i].api, "TERM");
    }

    /// Waits (bounded) for API `i` to exit.
    pub async fn wait_api_exit(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let status = wait_exit(&mut self.apis[i].api, timeout).await;
        if status.is_some() {
            self.api_alive[i] = false;
        }
        status
    }

    /// Starts a new API in slot `i` (killing the old one if it still runs).
    pub async fn restart_api(&mut self, i: usize) {
        self.kill_api(i).await;
        self.apis[i] = TestApp::spawn_with(self.env.clone()).await;
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
        let last = std::sync::Mutex::new(Value::Null);
        let done = eventually(timeout, || {
            let last = &last;
            async move {
                let (status, run) = self.get(&format!("/v1/runs/{id}")).await?;
                let terminal = status == StatusCode::OK && TERMINAL.iter().any(|t| run["status"] == *t);
                *last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = run.clone();
                terminal.then_some(run)
            }
        })
        .await;
        let last = last.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        done.unwrap_or_else(|| panic!("run {id} did not finish within {timeout:?}; last seen: {last}"))
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
        let last = std::sync::Mutex::new(Value::Null);
        let done = eventually(timeout, || {
            let last = &last;
            async move {
                let (status, op) = self.get(&format!("/v1/operations/{id}")).await?;
                let done =
                    status == StatusCode::OK && ["succeeded", "failed", "cancelled"].iter().any(|s| op["status"] == *s);
                *last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = op.clone();
                done.then_some(op)
            }
        })
        .await;
        let last = last.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        done.unwrap_or_else(|| panic!("operation {id} did not finish within {timeout:?}; last seen: {last}"))
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

/// An SSE response read frame by frame as it arrives, so a test can stop mid-stream (drop it, or
/// kill the server) and resume elsewhere with `Last-Event-ID`.
pub struct SseReader {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: Vec<u8>,
    /// Every frame read so far (comments excluded).
    pub frames: Vec<Frame>,
    /// The body ended (cleanly or not).
    pub ended: bool,
    /// Why the body ended, when it broke.
    pub error: Option<String>,
}

impl SseReader {
    /// Sends the request; the body is read lazily.
    pub async fn open(request: RequestBuilder) -> Self {
        use futures::StreamExt as _;
        let res = request.send().await.expect("request");
        Self {
            status: res.status(),
            headers: res.headers().clone(),
            body: res.bytes_stream().map(|chunk| chunk.map(|b| b.to_vec())).boxed(),
            buf: Vec::new(),
            frames: Vec::new(),
            ended: false,
            error: None,
        }
    }

    /// The next frame; `None` once the body ended. Cancel-safe (usable under a timeout).
    pub async fn next_frame(&mut self) -> Option<Frame> {
        use futures::StreamExt as _;
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..pos + 2).collect();
                if let Some(frame) = parse_sse(&String::from_utf8_lossy(&block)).into_iter().next() {
                    self.frames.push(frame.clone());
                    return Some(frame);
                }
                continue;
            }
            if self.ended {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    self.error = Some(e.to_string());
                    self.ended = true;
                }
                None => self.ended = true,
            }
        }
    }

    /// Reads until a frame satisfies `until` (that frame included); false when the body ended
    /// or `timeout` passed first.
    pub async fn read_until(&mut self, timeout: Duration, mut until: impl FnMut(&Frame) -> bool) -> bool {
        tokio::time::timeout(timeout, async {
            while let Some(frame) = self.next_frame().await {
                if until(&frame) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false)
    }

    /// Reads `n` more frames carrying an id; false when the body ended or `timeout` passed first.
    pub async fn read_events(&mut self, n: usize, timeout: Duration) -> bool {
        let mut left = n;
        if left == 0 {
            return true;
        }
        self.read_until(timeout, |f| {
            if f.id.is_some() {
                left -= 1;
            }
            left == 0
        })
        .await
    }

    /// Reads until `[DONE]`; false when the body ended without it or `timeout` passed.
    pub async fn read_to_done(&mut self, timeout: Duration) -> bool {
        self.read_until(timeout, |f| f.data == "[DONE]").await
    }

    /// Reads until the body ends; false when `timeout` passed first.
    pub async fn read_to_end(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async { while self.next_frame().await.is_some() {} }).await.is_ok()
    }

    /// The `X-Run-ID` header.
    pub fn run_id(&self) -> String {
        self.headers
            .get("x-run-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no X-Run-ID (status {})", self.status))
            .to_owned()
    }

    /// The id of the last frame read that had one (what `Last-Event-ID` resumes from).
    pub fn last_id(&self) -> Option<u64> {
        self.frames.iter().rev().find_map(|f| f.id)
    }

    pub fn saw_done(&self) -> bool {
        self.frames.iter().any(|f| f.data == "[DONE]")
    }

    pub fn ids(&self) -> Vec<u64> {
        self.frames.iter().filter_map(|f| f.id).collect()
    }

    pub fn parts(&self) -> Vec<Value> {
        parts_of(&self.frames)
    }

    pub fn text(&self) -> String {
        text_of(&self.frames)
    }

    /// Whatever was received but is not a complete frame (e.g. a JSON error body).
    pub fn rest(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// The JSON payloads of the frames that carry an id.
pub fn parts_of(frames: &[Frame]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f.id.is_some())
        .map(|f| serde_json::from_str(&f.data).unwrap_or_else(|_| panic!("frame data is not JSON: {}", f.data)))
        .collect()
}

/// The concatenated `text-delta`s of the frames.
pub fn text_of(frames: &[Frame]) -> String {
    parts_of(frames)
        .iter()
        .filter(|p| p["type"] == "text-delta")
        .filter_map(|p| p["delta"].as_str().map(str::to_owned))
        .collect()
}

/// Whether a part marks a retry: a new attempt (`data-run` `{status: "running", retry: true}`)
/// or a retried provider call (`data-run` carrying a retry count).
pub fn is_retry_marker(part: &Value) -> bool {
    part["type"] == "data-run" && !matches!(part["data"]["retry"], Value::Null | Value::Bool(false))
}

/// The text-deltas after the last retry marker: what the call that finished the run streamed.
pub fn final_attempt_text(frames: &[Frame]) -> String {
    let parts = parts_of(frames);
    let start = parts.iter().rposition(is_retry_marker).map_or(0, |i| i + 1);
    parts[start..]
        .iter()
        .filter(|p| p["type"] == "text-delta")
        .filter_map(|p| p["delta"].as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Watching a process's log: what request logs and request ids are checked with.

/// Every log line a process wrote so far, kept for the test to search.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Logs {
    /// The first line (already written, or written within `timeout`) that satisfies `matches`.
    pub async fn wait_for(&self, timeout: Duration, matches: impl Fn(&str) -> bool) -> Option<String> {
        eventually(timeout, || {
            let found = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|line| matches(line))
                .cloned();
            async move { found }
        })
        .await
    }
}

impl Env {
    /// Starts a long-running binary, waits (30 s at most) for its `listening` line and
    /// returns the address, and keeps every line it logs in [`Logs`] (they still go to the test's
    /// stderr).
    pub async fn spawn_logged(&self, name: &str) -> (Child, String, Logs) {
        let mut cmd = Command::new(bin(name));
        self.apply(&mut cmd);
        let mut child = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn().expect("spawn");
        let label = format!("{name}:{}", child.id().unwrap_or_default());
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let logs = Logs::default();
        let kept = logs.clone();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{label}] {line}");
                if let Some(addr) = listening_addr(&line)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr);
                }
                kept.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(30), addr_rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("{name} did not log `listening addr=` within 30 s"));
        (child, addr, logs)
    }
}

/// The address of a `listening` line, in text (`listening addr=…`) or JSON (`"addr":"…"`) format.
fn listening_addr(line: &str) -> Option<String> {
    if let Some(rest) = line.split("listening addr=").nth(1) {
        return rest.split_whitespace().next().map(str::to_owned);
    }
    let json: Value = serde_json::from_str(line).ok()?;
    let message = json["message"].as_str().or_else(|| json["fields"]["message"].as_str())?;
    if !message.ends_with("listening") {
        return None;
    }
    json["addr"].as_str().or_else(|| json["fields"]["addr"].as_str()).map(str::to_owned)
}
