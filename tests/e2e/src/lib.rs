//! Harness for runq's end-to-end tests: real `runq-api` (and later `runq-worker`) processes on
//! port 0, a fresh Postgres database per test, a private Redis prefix per test, and the mock
//! provider in-process.
//!
//! # Layout
//! - [`TestApp`] — one API process and its database, with request helpers.
//! - [`fresh_database`] — creates `runq_test_<uuid>` and returns its URL.
//! - [`bin`] — path of a workspace binary (`make test` builds them first).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use runq_mock::{MockConfig, MockServer};

/// The master key every test process shares.
pub const MASTER_KEY: &str = "6b9d7e0f1a2c3b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5";

fn postgres_url() -> String {
    std::env::var("RUNQ_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Path of a binary built from this workspace, next to the test executable's `deps/` folder.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` (make test does)",
        path.display()
    );
    path
}

/// Creates an empty database for one test and returns its URL; migrations are applied by the API.
pub async fn fresh_database() -> String {
    let name = format!("runq_test_{}", uuid::Uuid::now_v7().simple());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{}/postgres", postgres_url()))
        .await
        .expect("Postgres must be running (make test starts it)");
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    format!("{}/{name}", postgres_url())
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
            .env("RUNQ_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(self.extra.iter().map(|(k, v)| (k, v)));
    }

    /// Runs a binary to completion (e.g. `runq-api bootstrap`), returning status and stdout.
    pub async fn run(&self, name: &str, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(bin(name));
        self.apply(&mut cmd);
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run binary");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Starts a long-running binary and waits for its `listening addr=` line when `wait_addr`.
    pub async fn spawn(&self, name: &str, wait_addr: bool) -> (Child, Option<String>) {
        let mut cmd = Command::new(bin(name));
        self.apply(&mut cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut addr = None;
        if wait_addr {
            let found = tokio::time::timeout(Duration::from_secs(30), async {
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("[{name}] {line}");
                    if let Some(rest) = line.split("listening addr=").nth(1) {
                        return rest.split_whitespace().next().map(str::to_owned);
                    }
                }
                None
            })
            .await;
            addr = Some(
                found
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| panic!("{name} did not report its address")),
            );
        }
        let label = name.to_owned();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{label}] {line}");
            }
        });
        (child, addr)
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
        let db = PgPoolOptions::new()
            .max_connections(2)
            .connect(&env.database_url)
            .await
            .expect("test db");
        Self {
            base: format!("http://{}", addr.expect("addr")),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
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
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let key = self.env.admin_key.clone();
        self.call_as(&key, method, path, body).await
    }

    pub async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.with_key(method, path, key);
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
        let (ok, out) = self
            .env
            .run("runq-api", &["bootstrap", "--workspace", name])
            .await;
        assert!(ok, "bootstrap failed: {out}");
        let created: Value = serde_json::from_str(out.trim()).expect("bootstrap prints JSON");
        created["key"].as_str().expect("key").to_owned()
    }

    /// Mints a key with `scopes` in the admin workspace.
    pub async fn create_key(&self, scopes: &[&str]) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/api-keys",
                Some(json!({"name": "test", "scopes": scopes})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["key"].as_str().expect("key").to_owned()
    }

    /// A provider, an agent and a deployed version using it; returns the agent.
    pub async fn deployed_agent(&self, key: &str, slug: &str, kind: &str, base_url: &str) -> Value {
        self.deployed_agent_with(key, slug, kind, base_url, json!({}))
            .await
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
        let provider_name = format!("{slug}-provider");
        let (status, body) = self
            .call_as(
                key,
                Method::POST,
                "/v1/providers",
                Some(json!({"name": provider_name, "kind": kind, "base_url": base_url, "api_key": "sk-test"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, agent) = self
            .call_as(
                key,
                Method::POST,
                "/v1/agents",
                Some(json!({"name": slug, "slug": slug})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{agent}");
        let mut body = json!({"provider": provider_name, "model": "mock-model", "deploy": true});
        body.as_object_mut()
            .expect("object")
            .extend(version.as_object().cloned().unwrap_or_default());
        let (status, version) = self
            .call_as(
                key,
                Method::POST,
                &format!("/v1/agents/{slug}/versions"),
                Some(body),
            )
            .await;
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
        let mock = MockServer::start(MockConfig::default())
            .await
            .expect("mock provider");
        let app = TestApp::spawn_with(env).await;
        let (worker, _) = app.env.spawn("runq-worker", false).await;
        Self { app, worker, mock }
    }

    /// A deployed agent on the mock provider speaking `kind` (`openai` or `anthropic`).
    pub async fn agent(&self, slug: &str, kind: &str, version: Value) -> Value {
        self.app
            .deployed_agent_with(
                self.app.admin_key(),
                slug,
                kind,
                &self.mock.base_url(),
                version,
            )
            .await
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
        Sse {
            status,
            headers,
            frames: parse_sse(&text),
            text,
        }
    }

    /// Polls an operation until it is done (or 60 s pass).
    pub async fn wait_operation(&self, id: &str) -> Value {
        for _ in 0..600 {
            let (status, body) = self
                .app
                .call(Method::GET, &format!("/v1/operations/{id}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if body["status"] == "succeeded" || body["status"] == "failed" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("operation {id} did not finish");
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

/// One SSE frame: its `id:` and joined `data:` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub id: Option<u64>,
    pub data: String,
}

/// Splits an SSE body into frames; comments (`: ping`) are skipped.
pub fn parse_sse(text: &str) -> Vec<Frame> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            (!data.is_empty()).then(|| Frame {
                id,
                data: data.join("\n"),
            })
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
