//! Workspace HTTP tools and human approval of tool calls, against a tool server in the test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use reqwest::{Method, StatusCode};
use runq_e2e::{Cluster, Env, Stack, assert_envelope, parse_sse};
use serde_json::{Value, json};

/// One request the tool server received.
#[derive(Debug, Clone)]
struct Call {
    headers: Vec<(String, String)>,
    body: Value,
}

impl Call {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A tool server on 127.0.0.1: `/echo` answers `{"got": <body>}`, `/fail` 500, `/slow` after 2 s.
struct ToolServer {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl ToolServer {
    async fn start() -> Self {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/{kind}",
            axum::routing::post(
                move |axum::extract::Path(kind): axum::extract::Path<String>, headers: HeaderMap, body: String| {
                    let seen = seen.clone();
                    async move {
                        let headers = headers
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                            .collect();
                        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        seen.lock().unwrap().push(Call { headers, body: body.clone() });
                        match kind.as_str() {
                            "fail" => (AxumStatus::INTERNAL_SERVER_ERROR, axum::Json(json!({"oops": true}))),
                            "slow" => {
                                tokio::time::sleep(Duration::from_secs(2)).await;
                                (AxumStatus::OK, axum::Json(json!({"late": true})))
                            }
                            _ => (AxumStatus::OK, axum::Json(json!({"got": body}))),
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the tool server");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, calls }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

fn tool(name: &str, url: &str, extra: Value) -> Value {
    let mut body = json!({
        "name": name,
        "description": "Looks a city up",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "url": url,
    });
    body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    body
}

const LOOKUP: &str = r#"weather? [[mock tool=lookup args={"city":"Paris"}]]"#;

#[tokio::test]
async fn an_http_tool_gets_the_arguments_and_the_four_headers_and_its_answer_reaches_the_model() {
    let stack = Stack::start().await;
    let server = ToolServer::start().await;
    let body = tool(
        "lookup",
        &server.url("echo"),
        json!({"headers": {"x-static": "yes"}, "auth": {"header": "authorization", "value": "Bearer s3cret"}}),
    );
    let (status, created) = stack.app.call(Method::POST, "/v1/tools", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["has_auth"], true);
    assert!(!created.to_string().contains("s3cret"), "the secret is never returned: {created}");
    let (_, listed) = stack.app.call(Method::GET, "/v1/tools", None).await;
    let kinds: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["builtin", "builtin", "http"]);
    assert!(!listed.to_string().contains("s3cret"));

    stack.agent("bot", "openai", json!({"tools": ["lookup"]})).await;
    let res = stack
        .app
        .with_key(Method::POST, "/v1/run", stack.app.admin_key())
        .header("x-end-user-id", "user-42")
        .header("accept", "application/json")
        .json(&json!({"agent_id": "bot", "prompt": LOOKUP, "thread_id": "thr_tools"}))
        .send()
        .await
        .unwrap();
    let run: Value = res.json().await.unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["output"], r#"Tool lookup returned: {"got":{"city":"Paris"}}"#);

    let calls = server.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.body, json!({"city": "Paris"}));
    assert_eq!(call.header("x-run-id"), run["id"].as_str());
    assert_eq!(call.header("x-thread-id"), Some("thr_tools"));
    assert!(call.header("x-tool-call-id").is_some_and(|id| !id.is_empty()));
    assert_eq!(call.header("x-end-user-id"), Some("user-42"));
    assert_eq!(call.header("x-static"), Some("yes"));
    assert_eq!(call.header("authorization"), Some("Bearer s3cret"));
}

#[tokio::test]
async fn tool_errors_and_timeouts_reach_the_model_and_the_stream() {
    let stack = Stack::start().await;
    let server = ToolServer::start().await;
    stack.app.call(Method::POST, "/v1/tools", Some(tool("failing", &server.url("fail"), json!({})))).await;
    stack
        .app
        .call(Method::POST, "/v1/tools", Some(tool("sleepy", &server.url("slow"), json!({"timeout_ms": 300}))))
        .await;
    stack.agent("bot", "openai", json!({"tools": ["failing", "sleepy"]})).await;
    for (name, expected) in
        [("failing", "the tool answered HTTP 500"), ("sleepy", "the tool did not answer within 300 ms")]
    {
        let body = json!({"agent_id": "bot", "prompt": format!("[[mock tool={name}]]"), "stream": true});
        let sse = stack.sse(stack.app.with_key(Method::POST, "/v1/run", stack.app.admin_key()).json(&body)).await;
        let parts = sse.parts();
        let error = parts.iter().find(|p| p["type"] == "tool-output-error").unwrap_or_else(|| panic!("{}", sse.text));
        assert!(error["errorText"].as_str().unwrap().starts_with(expected), "{error}");
        assert_eq!(error.as_object().unwrap().len(), 3, "only the protocol's keys: {error}");
        assert!(sse.text().contains(expected), "the model read the error: {}", sse.text());
        assert_eq!(parts.last().unwrap()["type"], "finish", "a tool error does not fail the run");
    }
}

#[tokio::test]
async fn private_tool_addresses_are_refused_when_the_setting_is_off() {
    let stack = Stack::start_with(Env::new().await.with("RUNQ_ALLOW_PRIVATE_TARGETS", "false")).await;
    let server = ToolServer::start().await;
    let (status, error) =
        stack.app.call(Method::POST, "/v1/tools", Some(tool("lookup", &server.url("echo"), json!({})))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["details"]["field"], "url");

    // a tool that points at a private address anyway (its DNS changed since, say) is refused when called
    let workspace: (uuid::Uuid,) =
        sqlx::query_as("select id from workspaces limit 1").fetch_one(&stack.app.db).await.unwrap();
    sqlx::query("insert into tools (id, workspace_id, name, parameters, url) values ($1, $2, 'lookup', '{}', $3)")
        .bind(uuid::Uuid::now_v7())
        .bind(workspace.0)
        .bind(server.url("echo"))
        .execute(&stack.app.db)
        .await
        .unwrap();
    stack.agent("bot", "openai", json!({"tools": ["lookup"]})).await;
    let (_, run) = stack.run(json!({"agent_id": "bot", "prompt": LOOKUP, "stream": false})).await;
    assert!(run["output"].as_str().unwrap().contains("the tool's URL was refused"), "{run}");
    assert!(server.calls().is_empty(), "nothing reached the private address");
}

#[tokio::test]
async fn a_run_killed_after_a_tool_call_finished_does_not_call_the_tool_again() {
    let mut cluster = Cluster::start(1, 1, Env::new().await).await;
    let server = ToolServer::start().await;
    cluster.call(0, Method::POST, "/v1/tools", Some(tool("lookup", &server.url("echo"), json!({})))).await;
    cluster.agent("bot", "openai", json!({"tools": ["lookup"]})).await;
    // the answer after the tool result streams slowly: time to kill the worker mid-run
    let prompt = r#"[[mock tool=lookup args={"city":"Oslo"} tokens=40 delay=100]]"#;
    let mut stream = cluster.stream(0, json!({"agent_id": "bot", "prompt": prompt})).await;
    let run = stream.run_id();
    assert!(
        stream.read_until(Duration::from_secs(20), |f| f.data.contains("\"text-delta\"")).await,
        "the answer started"
    );
    assert_eq!(server.calls().len(), 1);
    cluster.kill_worker(0).await;
    cluster.add_worker().await;
    let done = cluster.wait_run(&run, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(server.calls().len(), 1, "the tool was not called again: {:?}", server.calls());
    assert!(done["output"].as_str().unwrap().contains("Tool lookup returned:"), "{done}");
}

/// A cluster whose agent `bot` calls `lookup`, a tool that needs approval.
async fn approval_cluster(env: Env) -> (Cluster, ToolServer) {
    let cluster = Cluster::start(1, 1, env).await;
    let server = ToolServer::start().await;
    let body = tool("lookup", &server.url("echo"), json!({"requires_approval": true}));
    let (status, created) = cluster.call(0, Method::POST, "/v1/tools", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    cluster.agent("bot", "openai", json!({"tools": ["lookup"]})).await;
    (cluster, server)
}

/// Streams a run that pauses for approval; returns the run id, the approval id and the seq of
/// the stream's last event.
async fn paused_run(cluster: &Cluster) -> (String, String, u64) {
    let mut stream = cluster.stream(0, json!({"agent_id": "bot", "prompt": LOOKUP})).await;
    assert!(stream.read_to_done(Duration::from_secs(30)).await, "the paused stream ends with [DONE]");
    let run = stream.run_id();
    let parts = stream.parts();
    let kinds: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    let n = kinds.len();
    assert_eq!(kinds[n - 4..], ["tool-input-available", "tool-approval-request", "finish-step", "finish"], "{kinds:?}");
    let request = &parts[n - 3];
    assert_eq!(request.as_object().unwrap().len(), 3, "exactly the AI SDK's keys: {request}");
    assert_eq!(request["toolCallId"], parts[n - 4]["toolCallId"]);
    assert_eq!(parts[n - 1]["messageMetadata"]["status"], "requires_action");
    let approval = request["approvalId"].as_str().unwrap().to_owned();
    assert!(approval.starts_with("apr_"));
    (run, approval, stream.last_id().unwrap())
}

/// The events after `after`, read until the run's next `[DONE]`.
async fn continuation(cluster: &Cluster, run: &str, after: u64) -> Vec<Value> {
    let request = cluster.request(0, Method::GET, &format!("/v1/runs/{run}/events?after={after}"));
    let text = request.timeout(Duration::from_secs(30)).send().await.unwrap().text().await.unwrap();
    parse_sse(&text).iter().filter(|f| f.id.is_some()).map(|f| serde_json::from_str(&f.data).unwrap()).collect()
}

#[tokio::test]
async fn an_approved_call_runs_and_the_run_completes_after_processes_died_while_it_waited() {
    let (mut cluster, server) = approval_cluster(Env::new().await).await;
    let (run, approval, last) = paused_run(&cluster).await;
    assert!(server.calls().is_empty(), "nothing runs before the approval");

    let run_object = cluster.get_run(&run).await;
    assert_eq!(run_object["status"], "requires_action");
    assert_eq!(run_object["pending_approvals"][0]["id"], approval.as_str());
    let (_, pending) = cluster.call(0, Method::GET, "/v1/approvals?status=pending", None).await;
    assert_eq!(pending["data"][0]["id"], approval.as_str(), "{pending}");
    assert_eq!(pending["data"][0]["arguments"], json!({"city": "Paris"}));
    let hash = pending["data"][0]["payload_hash"].as_str().unwrap().to_owned();

    // nothing holds the waiting run: kill the worker and restart the API
    cluster.kill_worker(0).await;
    cluster.restart_api(0).await;
    cluster.add_worker().await;

    let path = format!("/v1/approvals/{approval}/approve");
    let (status, wrong) = cluster.call(0, Method::POST, &path, Some(json!({"payload_hash": "00"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{wrong}");
    assert_envelope(&wrong, "payload_hash_mismatch");
    let (status, approved) = cluster.call(0, Method::POST, &path, Some(json!({"payload_hash": hash}))).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["status"], "approved");
    let (status, again) = cluster.call(0, Method::POST, &path, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_envelope(&again, "approval_decided");

    let rest = continuation(&cluster, &run, last).await;
    assert_eq!(rest[0]["type"], "data-run", "{rest:?}");
    assert!(rest.iter().any(|p| p["type"] == "tool-output-available"), "{rest:?}");
    assert_eq!(rest.last().unwrap()["messageMetadata"]["status"], "completed");
    let done = cluster.wait_run(&run, Duration::from_secs(30)).await;
    assert_eq!(done["output"], r#"Tool lookup returned: {"got":{"city":"Paris"}}"#);
    assert_eq!(server.calls().len(), 1);
}

#[tokio::test]
async fn a_denied_call_tells_the_model_why() {
    let (cluster, server) = approval_cluster(Env::new().await).await;
    let (run, approval, last) = paused_run(&cluster).await;
    let path = format!("/v1/approvals/{approval}/deny");
    let (status, denied) = cluster.call(0, Method::POST, &path, Some(json!({"reason": "not today"}))).await;
    assert_eq!(status, StatusCode::OK, "{denied}");
    let rest = continuation(&cluster, &run, last).await;
    let denial = rest.iter().find(|p| p["type"] == "tool-output-denied").expect("tool-output-denied");
    assert_eq!(denial.as_object().unwrap().len(), 2, "{denial}");
    let done = cluster.wait_run(&run, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "completed");
    assert!(done["output"].as_str().unwrap().contains("not today"), "{done}");
    assert!(server.calls().is_empty(), "a denied call never runs");
}

#[tokio::test]
async fn an_approval_nobody_decides_expires_as_a_denial() {
    let env = Env::new().await.with("RUNQ_APPROVAL_TTL_MS", "300").with("RUNQ_RECONCILE_INTERVAL_MS", "200");
    let (cluster, server) = approval_cluster(env).await;
    let (run, approval, _) = paused_run(&cluster).await;
    let done = cluster.wait_run(&run, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["output"].as_str().unwrap().contains("the approval expired"), "{done}");
    let (_, expired) = cluster.call(0, Method::GET, &format!("/v1/approvals/{approval}"), None).await;
    assert_eq!(expired["status"], "expired");
    assert!(server.calls().is_empty());
}

#[tokio::test]
async fn the_paused_stream_passes_the_ai_sdks_own_parser() {
    let (cluster, _server) = approval_cluster(Env::new().await).await;
    let (run, _, _) = paused_run(&cluster).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/js/parse-ui-stream.mjs");
    let out = tokio::process::Command::new("node")
        .arg(script)
        .arg(format!("{}/v1/runs/{run}/events", cluster.api(0)))
        .env("RUNQ_KEY", cluster.admin_key())
        .output()
        .await
        .expect("node");
    let result: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(result["ok"], true, "{result}");
    let types: Vec<&str> = result["chunkTypes"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(types.contains(&"tool-approval-request"), "{types:?}");
    let parts = result["message"]["parts"].as_array().unwrap();
    assert!(parts.iter().any(|p| p["state"] == "approval-requested"), "the SDK shows the request: {result}");
}
