//! Signed completion webhooks against a receiver in the test: signatures checked by the Standard
//! Webhooks reference library (npm `standardwebhooks`, run with node), retries, a worker killed
//! before sending, 410 Gone, and the outbound address rules.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use reqwest::{Method, StatusCode};
use runq_e2e::{Cluster, Env, Stack, TestApp, assert_envelope, eventually, free_port};
use serde_json::{Value, json};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Script {
    /// Statuses to answer, in order; 200 once they run out.
    answers: VecDeque<u16>,
    got: Vec<Received>,
}

/// A webhook receiver on 127.0.0.1.
struct Receiver {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    async fn start(answers: &[u16]) -> Self {
        Self::start_on(0, answers).await
    }

    async fn start_on(port: u16, answers: &[u16]) -> Self {
        let script = Arc::new(Mutex::new(Script { answers: answers.iter().copied().collect(), got: Vec::new() }));
        let shared = script.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let script = shared.clone();
                async move {
                    let mut script = script.lock().unwrap();
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                        .collect();
                    script.got.push(Received { headers, body });
                    let status = script.answers.pop_front().unwrap_or(200);
                    (AxumStatus::from_u16(status).unwrap(), "thanks")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, script }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Waits (bounded) until `n` requests arrived; returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let got = eventually(Duration::from_secs(60), || async {
            let got = self.script.lock().unwrap().got.clone();
            (got.len() >= n).then_some(got)
        })
        .await;
        got.unwrap_or_else(|| panic!("the receiver did not get {n} requests: {:?}", self.script.lock().unwrap().got))
    }
}

/// Verifies a received request with the Standard Webhooks library; returns its payload.
async fn verify(secret: &str, received: &Received) -> Value {
    use tokio::io::AsyncWriteExt;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/js/verify-webhook.mjs");
    let headers: serde_json::Map<String, Value> =
        received.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let input = json!({"secret": secret, "headers": headers, "body": received.body});
    let mut child = tokio::process::Command::new("node")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node must be installed (make test installs standardwebhooks with npm ci)");
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    let result: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(result["ok"], true, "the Standard Webhooks library rejected the delivery: {result}");
    result["payload"].clone()
}

/// Registers an endpoint; returns its id and secret.
async fn endpoint(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let (status, body) = app.call(Method::POST, "/v1/webhooks", Some(json!({"url": url, "events": events}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (body["id"].as_str().unwrap().to_owned(), body["secret"].as_str().unwrap().to_owned())
}

async fn deliveries(app: &TestApp, endpoint: &str) -> Vec<Value> {
    let (status, body) = app.call(Method::GET, &format!("/v1/webhooks/{endpoint}/deliveries"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// Waits (bounded) until the endpoint's only delivery satisfies `done`.
async fn wait_delivery(app: &TestApp, endpoint: &str, done: impl Fn(&Value) -> bool) -> Value {
    let last = Mutex::new(Vec::new());
    let found = eventually(Duration::from_secs(60), || {
        let (last, done) = (&last, &done);
        async move {
            let all = deliveries(app, endpoint).await;
            *last.lock().unwrap() = all.clone();
            all.into_iter().next().filter(|d| done(d))
        }
    })
    .await;
    found.unwrap_or_else(|| panic!("the delivery did not get there; last seen: {:?}", last.lock().unwrap()))
}

#[tokio::test]
async fn a_completed_run_is_posted_signed_and_verifies_with_the_standard_webhooks_library() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({})).await;
    let receiver = Receiver::start(&[]).await;
    let (id, secret) = endpoint(&stack.app, &receiver.url(), &["run.completed", "run.failed"]).await;
    assert!(id.starts_with("whk_") && secret.starts_with("whsec_"));
    let (_, listed) = stack.app.call(Method::GET, "/v1/webhooks", None).await;
    assert_eq!(listed["data"][0]["events"], json!(["run.completed", "run.failed"]));
    assert!(!listed.to_string().contains(&secret), "the secret is shown once only: {listed}");

    let (status, run) = stack.run(json!({"agent_id": "bot", "prompt": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let got = receiver.wait_for(1).await;
    let payload = verify(&secret, &got[0]).await;
    assert_eq!(payload["type"], "run.completed");
    assert_eq!(payload["data"]["run_id"], run["id"]);
    assert_eq!(payload["data"]["status"], "completed");
    assert_eq!(got[0].header("webhook-id"), payload["id"].as_str().unwrap());
    assert!(payload["id"].as_str().unwrap().starts_with("evt_"));

    let delivery = wait_delivery(&stack.app, &id, |d| d["status"] == "delivered").await;
    assert_eq!(delivery["attempts"][0]["status_code"], 200, "{delivery}");
    assert_eq!(delivery["attempts"][0]["response"], "thanks", "{delivery}");
}

#[tokio::test]
async fn a_run_with_its_own_webhook_url_is_signed_with_the_workspace_secret() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({})).await;
    let receiver = Receiver::start(&[]).await;
    let (status, body) = stack.app.call(Method::POST, "/v1/webhooks/secret", None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();

    let (status, op) =
        stack.run(json!({"agent_id": "bot", "prompt": "hi", "async": true, "webhook": receiver.url()})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{op}");
    let got = receiver.wait_for(1).await;
    let payload = verify(&secret, &got[0]).await;
    assert_eq!(payload["type"], "run.completed");
    assert_eq!(payload["data"]["operation_id"], op["operation_id"]);
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_event_three_times_and_it_is_marked_delivered() {
    let stack = Stack::start_with(Env::new().await.with("RUNQ_WEBHOOK_RETRY_BASE_MS", "50")).await;
    stack.agent("bot", "openai", json!({})).await;
    let receiver = Receiver::start(&[500, 500]).await;
    let (id, secret) = endpoint(&stack.app, &receiver.url(), &["run.completed"]).await;

    let (status, run) = stack.run(json!({"agent_id": "bot", "prompt": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let got = receiver.wait_for(3).await;
    let event_ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert!(event_ids.iter().all(|e| *e == event_ids[0]), "one event, retried: {event_ids:?}");
    verify(&secret, &got[2]).await;

    let delivery = wait_delivery(&stack.app, &id, |d| d["status"] == "delivered").await;
    let codes: Vec<&Value> = delivery["attempts"].as_array().unwrap().iter().map(|a| &a["status_code"]).collect();
    assert_eq!(codes, [&json!(500), &json!(500), &json!(200)], "{delivery}");
    assert_eq!(receiver.script.lock().unwrap().got.len(), 3, "nothing after the 200");
}

#[tokio::test]
async fn a_webhook_is_still_delivered_when_its_worker_is_killed_before_sending_it() {
    // the first retry comes ~10 s after the first attempt: time enough to kill the worker first
    // however loaded the machine is
    let env = Env::new().await.with("RUNQ_WEBHOOK_RETRY_BASE_MS", "10000");
    let mut cluster = Cluster::start(1, 1, env).await;
    cluster.agent("bot", "openai", json!({})).await;
    // the receiver is down at first: the worker's first attempt fails
    let port = free_port();
    let (id, secret) = endpoint(cluster.app(0), &format!("http://127.0.0.1:{port}/hook"), &["run.completed"]).await;
    let (status, run) = cluster.run(0, json!({"agent_id": "bot", "prompt": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    wait_delivery(cluster.app(0), &id, |d| !d["attempts"].as_array().unwrap().is_empty()).await;

    cluster.kill_worker(0).await;
    let receiver = Receiver::start_on(port, &[]).await;
    cluster.restart_worker(0).await;
    let got = receiver.wait_for(1).await;
    let payload = verify(&secret, &got[0]).await;
    assert_eq!(payload["data"]["run_id"], run["id"]);
    wait_delivery(cluster.app(0), &id, |d| d["status"] == "delivered").await;
}

#[tokio::test]
async fn an_endpoint_answering_410_is_disabled() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({})).await;
    let receiver = Receiver::start(&[410]).await;
    let (id, _) = endpoint(&stack.app, &receiver.url(), &["run.completed"]).await;

    let (status, _) = stack.run(json!({"agent_id": "bot", "prompt": "one"})).await;
    assert_eq!(status, StatusCode::OK);
    let delivery = wait_delivery(&stack.app, &id, |d| d["status"] == "disabled").await;
    assert_eq!(delivery["attempts"][0]["status_code"], 410);
    let (_, listed) = stack.app.call(Method::GET, "/v1/webhooks", None).await;
    assert!(listed["data"][0]["disabled_at"].is_string(), "{listed}");

    // deliveries are recorded with the run's end: once the sync answer is back, none was added
    let (status, _) = stack.run(json!({"agent_id": "bot", "prompt": "two"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deliveries(&stack.app, &id).await.len(), 1);
}

#[tokio::test]
async fn private_targets_are_refused_when_the_setting_is_off() {
    let env = Env::new().await.with("RUNQ_ALLOW_PRIVATE_TARGETS", "false");
    let app = TestApp::spawn_with(env).await;
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["run.completed"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_envelope(&body, "invalid_request");
    assert_eq!(body["error"]["details"]["field"], "url");
    let (status, body) = app
        .call(Method::POST, "/v1/run", Some(json!({"agent_id": "bot", "prompt": "hi", "webhook": "http://10.1.2.3/"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["details"]["field"], "webhook");
}

#[tokio::test]
async fn a_worker_refuses_a_private_target_when_its_setting_is_off() {
    // the API let the URL in (allowed there); the worker sending it does not allow it
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({})).await;
    let receiver = Receiver::start(&[]).await;
    let (id, _) = endpoint(&stack.app, &receiver.url(), &["run.completed"]).await;
    let mut stack = stack;
    stack.worker.stop().await;
    let strict = stack.app.env.clone().with("RUNQ_ALLOW_PRIVATE_TARGETS", "false");
    let (_worker, _) = strict.start_worker().await;

    let (status, _) = stack.run(json!({"agent_id": "bot", "prompt": "hi"})).await;
    assert_eq!(status, StatusCode::OK);
    let delivery = wait_delivery(&stack.app, &id, |d| d["status"] == "failed").await;
    let response = delivery["attempts"][0]["response"].as_str().unwrap();
    assert!(response.starts_with("refused"), "{delivery}");
    assert!(receiver.script.lock().unwrap().got.is_empty());
}

#[tokio::test]
async fn webhook_endpoints_validate_events_and_can_be_deleted() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .call(Method::POST, "/v1/webhooks", Some(json!({"url": "http://127.0.0.1:9/", "events": ["run.exploded"]})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["details"]["field"], "events[0]", "{body}");
    let (status, body) =
        app.call(Method::POST, "/v1/webhooks", Some(json!({"url": "http://127.0.0.1:9/", "events": []}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["details"]["field"], "events", "{body}");

    let run_key = app.create_key(&["run"]).await;
    let (status, _) = app.call_as(&run_key, Method::GET, "/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "webhooks need the manage scope");

    let (id, _) = endpoint(&app, "http://127.0.0.1:9/hook", &["operation.completed"]).await;
    let (status, _) = app.call(Method::DELETE, &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.call(Method::DELETE, &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_envelope(&body, "webhook_not_found");
}

#[tokio::test]
async fn a_batch_sends_operation_completed_once_when_its_last_run_ends() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({})).await;
    let receiver = Receiver::start(&[]).await;
    let (id, secret) = endpoint(&stack.app, &receiver.url(), &["operation.completed"]).await;
    let batch: Vec<Value> = (0..5).map(|i| json!({"prompt": format!("item {i}")})).collect();
    let (status, op) = stack.run(json!({"agent_id": "bot", "batch": batch})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{op}");
    let op_id = op["operation_id"].as_str().unwrap();
    stack.wait_operation(op_id).await;

    let got = receiver.wait_for(1).await;
    let payload = verify(&secret, &got[0]).await;
    assert_eq!(payload["type"], "operation.completed");
    assert_eq!(payload["data"]["operation_id"], op_id);
    assert_eq!(payload["data"]["status"], "succeeded");
    assert_eq!(payload["data"]["progress"], json!({"total": 5, "completed": 5, "failed": 0}));
    assert_eq!(deliveries(&stack.app, &id).await.len(), 1, "once, however the last runs raced");
}
