//! The OpenAI-compatible gateway, driven by the official OpenAI clients (Python and npm) and by
//! hand for the wire details those clients depend on.

use reqwest::{Method, StatusCode};
use runq_e2e::{Stack, parse_sse};
use serde_json::{Value, json};

async fn stack_with_agent() -> Stack {
    let stack = Stack::start().await;
    stack.agent("helper", "openai", json!({"system_prompt": "You help."})).await;
    stack
}

#[tokio::test]
async fn the_openai_python_package_reads_sync_streamed_and_usage_answers() {
    let stack = stack_with_agent().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/openai_client.py");
    let out = tokio::process::Command::new("python3")
        .args([script, &stack.app.base, stack.app.admin_key(), "helper"])
        .output()
        .await
        .expect("python3 must be installed (make test installs the openai package)");
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    assert_eq!(result["object"], "chat.completion");
    assert_eq!(result["sync"], "Echo: Hello from Python");
    assert_eq!(result["sync_finish"], "stop");
    assert!(result["sync_usage"]["completion_tokens"].as_u64().unwrap() > 0, "{result}");
    let run_id = result["sync_run_id"].as_str().expect("X-Run-ID");
    let (status, run) = stack.app.call(Method::GET, &format!("/v1/runs/{run_id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["output"], "Echo: Hello from Python", "the completion is an ordinary run");
    assert_eq!(result["streamed"], "Echo: stream me please");
    assert_eq!(result["stream_finish"], "stop");
    let usage = &result["stream_usage"];
    assert_eq!(
        usage["total_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(result["models"], json!(["helper"]));
    assert_eq!(result["missing"]["status"], 404, "{result}");
    assert_eq!(result["missing"]["code"], "model_not_found");
}

#[tokio::test]
async fn the_openai_npm_package_streams_an_agent_reply() {
    let stack = stack_with_agent().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/js/openai-stream.mjs");
    let out = tokio::process::Command::new("node")
        .args([script, &stack.app.base, stack.app.admin_key(), "helper", "hello from node"])
        .output()
        .await
        .expect("node must be installed (make test runs npm ci)");
    let result: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["text"], "Echo: hello from node");
    assert_eq!(result["finish"], "stop");
    assert!(result["runId"].as_str().is_some_and(|id| id.starts_with("run_")), "{result}");
}

#[tokio::test]
async fn streamed_chunks_have_no_ids_or_pings_and_end_with_usage_then_done() {
    let stack = stack_with_agent().await;
    let body = json!({
        "model": "helper", "messages": [{"role": "user", "content": "one two"}],
        "stream": true, "stream_options": {"include_usage": true},
    });
    let sse =
        stack.sse(stack.app.with_key(Method::POST, "/v1/chat/completions", stack.app.admin_key()).json(&body)).await;
    assert_eq!(sse.status, StatusCode::OK);
    assert!(sse.headers["x-run-id"].to_str().unwrap().starts_with("run_"));
    assert!(!sse.text.contains("\nid:") && !sse.text.starts_with("id:"), "no id lines: {}", sse.text);
    assert!(!sse.text.contains(": ping") && !sse.text.contains("event:"), "{}", sse.text);
    let frames = parse_sse(&sse.text);
    assert_eq!(frames.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> =
        frames[..frames.len() - 1].iter().map(|f| serde_json::from_str(&f.data).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "helper"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]), "the usage chunk comes last: {usage}");
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Echo: one two");
}

#[tokio::test]
async fn gateway_errors_use_openais_shape() {
    let stack = stack_with_agent().await;
    let res = stack
        .app
        .request(Method::POST, "/v1/chat/completions")
        .json(&json!({"model": "helper", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let error: Value = res.json().await.unwrap();
    assert_eq!(error["error"]["type"], "authentication_error", "{error}");
    assert!(error["error"]["message"].is_string() && error.get("status").is_none(), "{error}");

    let cases = [
        (
            json!({"model": "ghost", "messages": [{"role": "user", "content": "hi"}]}),
            StatusCode::NOT_FOUND,
            "model_not_found",
            Value::Null,
        ),
        (
            json!({"model": "helper", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            json!("tools"),
        ),
        (json!({"messages": []}), StatusCode::BAD_REQUEST, "invalid_request", json!("model")),
    ];
    for (body, status, code, param) in cases {
        let (got, error) = stack.app.call(Method::POST, "/v1/chat/completions", Some(body.clone())).await;
        assert_eq!(got, status, "{body} → {error}");
        assert_eq!(error["error"]["code"], code, "{error}");
        assert_eq!(error["error"]["param"], param, "{error}");
    }
}

#[tokio::test]
async fn run_events_page_as_json_for_clients_that_poll() {
    let stack = stack_with_agent().await;
    let (_, run) = stack.run(json!({"agent_id": "helper", "prompt": "a b c", "stream": false})).await;
    let id = run["id"].as_str().unwrap();
    let (status, first) = stack.app.call(Method::GET, &format!("/v1/runs/{id}/events?limit=2"), None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    assert_eq!(first["data"][0]["seq"], 1);
    assert_eq!(first["data"][0]["type"], "start");
    assert_eq!(first["data"][0]["data"]["type"], "start");
    assert!(first["data"][0]["created_at"].as_str().is_some_and(|t| t.starts_with("20")), "{first}");
    assert_eq!(first["next_after"], 2);
    let (_, rest) = stack.app.call(Method::GET, &format!("/v1/runs/{id}/events?after=2&limit=1000"), None).await;
    let rest = rest["data"].as_array().unwrap();
    assert_eq!(rest[0]["seq"], 3);
    assert_eq!(rest.last().unwrap()["type"], "finish");
    let (_, empty) = stack.app.call(Method::GET, &format!("/v1/runs/{id}/events?after=9999"), None).await;
    assert_eq!(empty, json!({"data": [], "next_after": 9999}));
}
