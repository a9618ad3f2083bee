//! One API ([`TestApp`]) and the whole local stack of one test ([`Stack`]), with request helpers.
//!
//! Both run in the test process ([`TestApp::spawn`], [`Stack::start`]) unless the test needs
//! processes ([`TestApp::spawn_binary`], [`Stack::spawn_binaries`]): see [`crate::service`] for
//! which tier a test uses and why.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::*;

/// One running API with its own database.
pub struct TestApp {
    pub env: Env,
    pub base: String,
    pub client: reqwest::Client,
    pub db: PgPool,
    /// The API: tasks of the test process, or a spawned `runq-api` the test can kill or signal.
    pub api: Service,
}

impl TestApp {
    /// An API in the test process on a fresh database.
    pub async fn spawn() -> Self {
        Self::spawn_with(Env::new().await).await
    }

    /// An API in the test process (`build` + `run_until_stopped` on port 0), set up by `env`:
    /// what every test uses that does not kill, signal or restart the API, nor read its log.
    pub async fn spawn_with(env: Env) -> Self {
        let (api, addr) = env.start_api().await;
        Self::serving(env, api, addr).await
    }

    /// A spawned `runq-api` process, for the tests that kill, signal or restart it (as
    /// [`Cluster`] does) or read what the process alone logs or exports.
    pub async fn spawn_binary(env: Env) -> Self {
        let (api, addr) = env.spawn("runq-api", true).await;
        Self::serving(env, Service::Spawned(api), addr.expect("addr")).await
    }

    /// The test's handle on `api`, which serves at `addr`.
    async fn serving(env: Env, api: Service, addr: impl std::fmt::Display) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let db = PgPoolOptions::new().max_connections(2).connect(&env.database_url).await.expect("test db");
        Self {
            base: format!("http://{addr}"),
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

/// The whole local stack of one test: an API, a worker and the mock provider.
pub struct Stack {
    pub app: TestApp,
    pub worker: Service,
    pub mock: MockServer,
}

impl Stack {
    /// API and worker in the test process, on a fresh database.
    pub async fn start() -> Self {
        Self::start_with(Env::new().await).await
    }

    /// API and worker in the test process, set up by `env`.
    pub async fn start_with(env: Env) -> Self {
        let mock = MockServer::start(MockConfig::default()).await.expect("mock provider");
        let app = TestApp::spawn_with(env).await;
        let (worker, _) = app.env.start_worker().await;
        Self { app, worker, mock }
    }

    /// `runq-api` and `runq-worker` processes, for the tests that need what each process alone
    /// logs, measures or exports.
    pub async fn spawn_binaries(env: Env) -> Self {
        let mock = MockServer::start(MockConfig::default()).await.expect("mock provider");
        let app = TestApp::spawn_binary(env).await;
        let (worker, _) = app.env.spawn("runq-worker", false).await;
        Self { app, worker: Service::Spawned(worker), mock }
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

/// Asserts the error envelope: status, `error.code`, and `message` mirrored at the top.
pub fn assert_envelope(body: &Value, code: &str) {
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(body["message"], body["error"]["message"], "{body}");
    assert!(body["error"]["details"].is_object(), "{body}");
}
