//! End-to-end tests of the mock over real HTTP.

use std::time::{Duration, Instant};

use eventsource_stream::{Event, Eventsource};
use futures::StreamExt;
use runq_mock::{MockConfig, MockServer, Stats};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    // reqwest is built without a default rustls provider, and its builder
    // wants one even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("build reqwest client")
}

async fn start() -> (MockServer, reqwest::Client) {
    let server = MockServer::start(MockConfig::default()).await.expect("start mock");
    (server, client())
}

async fn openai(http: &reqwest::Client, server: &MockServer, key: &str, body: &Value) -> reqwest::Response {
    http.post(format!("{}/chat/completions", server.base_url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("send openai request")
}

async fn anthropic(http: &reqwest::Client, server: &MockServer, key: &str, body: &Value) -> reqwest::Response {
    http.post(format!("{}/v1/messages", server.root_url()))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("send anthropic request")
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn openai_body(messages: Value, stream: bool) -> Value {
    json!({
        "model": "gpt-mock",
        "messages": messages,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

fn anthropic_body(messages: Value, stream: bool) -> Value {
    json!({
        "model": "claude-mock",
        "max_tokens": 1024,
        "system": "You are a test.",
        "messages": messages,
        "stream": stream,
    })
}

async fn sse(response: reqwest::Response) -> Vec<Event> {
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii content type").to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    response.bytes_stream().eventsource().map(|event| event.expect("well-formed SSE")).collect().await
}

fn data(event: &Event) -> Value {
    serde_json::from_str(&event.data).expect("event data is JSON")
}

/// Polls until `check` accepts the server's stats (server-side cleanup after
/// a client hangs up is asynchronous).
async fn wait_stats(server: &MockServer, check: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = server.stats();
        if check(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never matched: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn openai_stream_concatenates_and_reports_usage() {
    let (server, http) = start().await;
    let body = openai_body(
        json!([
            {"role": "system", "content": "Be brief."},
            user("hello   big world [[mock delay=1]]"),
        ]),
        true,
    );
    let events = sse(openai(&http, &server, "k", &body).await).await;
    let (last, chunks) = events.split_last().expect("events");
    assert_eq!(last.data, "[DONE]");
    let chunks: Vec<Value> = chunks.iter().map(data).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));

    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Echo: hello   big world");

    let usage_chunk = chunks.last().expect("usage chunk");
    assert_eq!(usage_chunk["choices"], json!([]));
    // "Be brief." + "hello big world [[mock delay=1]]"
    assert_eq!(usage_chunk["usage"], json!({"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}));
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["usage"], Value::Null);

    // The non-streamed reply carries the same text.
    let body = openai_body(json!([user("hello   big world [[mock delay=1]]")]), false);
    let reply: Value = openai(&http, &server, "k", &body).await.json().await.expect("json");
    assert_eq!(reply["choices"][0]["message"]["content"], text);

    let stats = server.stats();
    assert_eq!((stats.requests, stats.completed, stats.in_flight), (2, 2, 0));
}

#[tokio::test]
async fn openai_stream_without_usage_option_has_no_usage_chunk() {
    let (server, http) = start().await;
    let body = json!({
        "model": "m",
        "messages": [user("[[mock tokens=3]]")],
        "stream": true,
    });
    let events = sse(openai(&http, &server, "k", &body).await).await;
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(data).collect();
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "tok0 tok1 tok2");
}

#[tokio::test]
async fn openai_non_streaming_reply() {
    let (server, http) = start().await;
    let body = json!({
        "model": "gpt-mock",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "[[mock tokens=5]] ignored"}]},
        ],
        "max_completion_tokens": 100,
    });
    let response = http
        .post(format!("{}/v1/chat/completions", server.root_url()))
        .bearer_auth("k")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.expect("json");
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["model"], "gpt-mock");
    let choice = &reply["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "tok0 tok1 tok2 tok3 tok4");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(reply["usage"], json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}));
}

#[tokio::test]
async fn anthropic_stream_event_sequence() {
    let (server, http) = start().await;
    let body = anthropic_body(json!([user("hi there [[mock tokens=4]]")]), true);
    let events = sse(anthropic(&http, &server, "k", &body).await).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let mut expected = vec!["message_start", "ping", "content_block_start"];
    expected.extend(["content_block_delta"; 4]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    for event in &events {
        assert_eq!(data(event)["type"], event.event, "type matches event name");
    }

    let start = data(&events[0]);
    assert_eq!(start["message"]["role"], "assistant");
    assert_eq!(start["message"]["model"], "claude-mock");
    // "You are a test." + "hi there [[mock tokens=4]]"
    assert_eq!(start["message"]["usage"]["input_tokens"], 8);
    assert_eq!(data(&events[2])["content_block"], json!({"type": "text", "text": ""}));
    let text: String = events[3..7]
        .iter()
        .map(|e| {
            let d = data(e);
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().expect("text").to_owned()
        })
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3");
    let delta = data(&events[8]);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn anthropic_non_streaming_reply() {
    let (server, http) = start().await;
    let body = anthropic_body(
        json!([{"role": "user", "content": [{"type": "text", "text": "say  something [[mock ttft=1]]"}]}]),
        false,
    );
    let response = anthropic(&http, &server, "k", &body).await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.expect("json");
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["role"], "assistant");
    assert_eq!(reply["content"], json!([{"type": "text", "text": "Echo: say  something"}]));
    assert_eq!(reply["stop_reason"], "end_turn");
    assert_eq!(reply["usage"], json!({"input_tokens": 8, "output_tokens": 3}));
}

#[tokio::test]
async fn openai_tool_call_then_tool_result() {
    let (server, http) = start().await;
    let ask = user(r#"weather? [[mock tool=get_weather args={"city":"Paris","unit":"c"}]]"#);
    let events = sse(openai(&http, &server, "k", &openai_body(json!([ask]), true)).await).await;
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(data).collect();
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    let head = calls[0];
    assert_eq!(head["index"], 0);
    assert_eq!(head["type"], "function");
    assert_eq!(head["function"]["name"], "get_weather");
    assert_eq!(head["function"]["arguments"], "");
    let id = head["id"].as_str().expect("call id").to_owned();
    assert!(id.starts_with("call_"), "{id}");
    let args: String = calls[1..].iter().map(|c| c["function"]["arguments"].as_str().expect("fragment")).collect();
    assert!(calls.len() > 2, "arguments are streamed in fragments");
    assert_eq!(args, r#"{"city":"Paris","unit":"c"}"#);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[chunks.len() - 1]["usage"]["completion_tokens"], 1);

    // Non-streaming tool call.
    let reply: Value = openai(&http, &server, "k", &openai_body(json!([ask]), false)).await.json().await.expect("json");
    let message = &reply["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], args);
    assert_eq!(reply["choices"][0]["finish_reason"], "tool_calls");

    // Second turn with the tool result.
    let messages = json!([
        ask,
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": "get_weather", "arguments": args}}
        ]},
        {"role": "tool", "tool_call_id": id, "content": "sunny, 21C"},
    ]);
    let reply: Value =
        openai(&http, &server, "k", &openai_body(messages.clone(), false)).await.json().await.expect("json");
    assert_eq!(reply["choices"][0]["message"]["content"], "Tool get_weather returned: sunny, 21C");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");

    let events = sse(openai(&http, &server, "k", &openai_body(messages, true)).await).await;
    let text: String = events[..events.len() - 1]
        .iter()
        .filter_map(|e| data(e)["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Tool get_weather returned: sunny, 21C");
}

#[tokio::test]
async fn anthropic_tool_use_then_tool_result() {
    let (server, http) = start().await;
    let ask = user(r#"look it up [[mock tool=search args={"q":"rust"}]]"#);
    let events = sse(anthropic(&http, &server, "k", &anthropic_body(json!([ask]), true)).await).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "ping", "content_block_start"]);
    assert_eq!(names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
    let block = data(&events[2])["content_block"].clone();
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "search");
    assert_eq!(block["input"], json!({}));
    let id = block["id"].as_str().expect("tool id").to_owned();
    assert!(id.starts_with("toolu_"), "{id}");
    let partial: String = events
        .iter()
        .filter(|e| e.event == "content_block_delta")
        .map(|e| {
            let d = data(e);
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().expect("partial").to_owned()
        })
        .collect();
    assert_eq!(partial, r#"{"q":"rust"}"#);
    assert_eq!(data(&events[events.len() - 2])["delta"]["stop_reason"], "tool_use");

    let reply: Value =
        anthropic(&http, &server, "k", &anthropic_body(json!([ask]), false)).await.json().await.expect("json");
    assert_eq!(reply["stop_reason"], "tool_use");
    assert_eq!(reply["content"][0]["type"], "tool_use");
    assert_eq!(reply["content"][0]["input"], json!({"q": "rust"}));

    let messages = json!([
        ask,
        {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "search", "input": {"q": "rust"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id, "content": [{"type": "text", "text": "3 results"}]}
        ]},
    ]);
    let reply: Value =
        anthropic(&http, &server, "k", &anthropic_body(messages.clone(), false)).await.json().await.expect("json");
    assert_eq!(reply["content"], json!([{"type": "text", "text": "Tool search returned: 3 results"}]));
    assert_eq!(reply["stop_reason"], "end_turn");

    let events = sse(anthropic(&http, &server, "k", &anthropic_body(messages, true)).await).await;
    let text: String = events
        .iter()
        .filter(|e| e.event == "content_block_delta")
        .map(|e| data(e)["delta"]["text"].as_str().expect("text").to_owned())
        .collect();
    assert_eq!(text, "Tool search returned: 3 results");
}

#[tokio::test]
async fn fault_500_once_then_success() {
    let (server, http) = start().await;
    let body = openai_body(json!([user("retry me [[mock fault=500 times=1]]")]), false);
    let first = openai(&http, &server, "k", &body).await;
    assert_eq!(first.status(), 500);
    let error: Value = first.json().await.expect("json");
    assert_eq!(error["error"]["type"], "server_error");
    let second = openai(&http, &server, "k", &body).await;
    assert_eq!(second.status(), 200);
    let reply: Value = second.json().await.expect("json");
    assert_eq!(reply["choices"][0]["message"]["content"], "Echo: retry me");

    // A different conversation has its own counter; so does Anthropic.
    let other = openai_body(json!([user("other [[mock fault=500 times=1]]")]), true);
    assert_eq!(openai(&http, &server, "k", &other).await.status(), 500);
    let body = anthropic_body(json!([user("retry me [[mock fault=500 times=1]]")]), false);
    let first = anthropic(&http, &server, "k", &body).await;
    assert_eq!(first.status(), 500);
    let error: Value = first.json().await.expect("json");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
    assert_eq!(anthropic(&http, &server, "k", &body).await.status(), 200);

    // Reset forgets the counters.
    server.reset();
    assert_eq!(anthropic(&http, &server, "k", &body).await.status(), 500);
}

#[tokio::test]
async fn fault_429_sets_retry_after() {
    let (server, http) = start().await;
    let body = openai_body(json!([user("[[mock fault=429 retry_after=3 times=2]]")]), true);
    for _ in 0..2 {
        let response = openai(&http, &server, "k", &body).await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "3");
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    }
    assert_eq!(openai(&http, &server, "k", &body).await.status(), 200);

    let body = anthropic_body(json!([user("[[mock fault=429]]")]), false);
    for _ in 0..3 {
        let response = anthropic(&http, &server, "k", &body).await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["type"], "rate_limit_error");
    }
}

/// Reads a body until it fails, returning the raw bytes received.
async fn read_until_error(response: reqwest::Response) -> (String, bool) {
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), false)
}

#[tokio::test]
async fn fault_drop_cuts_the_stream() {
    let (server, http) = start().await;
    let body = openai_body(json!([user("[[mock tokens=10 fault=drop drop_after=3]]")]), true);
    let (received, failed) = read_until_error(openai(&http, &server, "k", &body).await).await;
    assert!(failed, "the connection must be cut, got: {received}");
    assert_eq!(received.matches("\"content\":\"tok").count(), 3);
    assert!(!received.contains("[DONE]"));
    assert!(!received.contains("finish_reason\":\"stop"));

    let body = anthropic_body(json!([user("[[mock tokens=10 fault=drop]]")]), true);
    let (received, failed) = read_until_error(anthropic(&http, &server, "k", &body).await).await;
    assert!(failed, "the connection must be cut, got: {received}");
    assert_eq!(received.matches("event: content_block_delta").count(), 2);
    assert!(!received.contains("message_stop"));

    // Non-streaming: half a JSON document, then the cut.
    let body = openai_body(json!([user("[[mock fault=drop]]")]), false);
    let response = openai(&http, &server, "k", &body).await;
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.is_err());

    let stats = wait_stats(&server, |s| s.in_flight == 0).await;
    assert_eq!((stats.completed, stats.disconnected), (3, 0));
}

#[tokio::test]
async fn hang_stream_sends_first_token_only() {
    let (server, http) = start().await;
    let body = openai_body(json!([user("[[mock tokens=5 fault=hang_stream]]")]), true);
    let response = openai(&http, &server, "k", &body).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_millis(300));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            chunk = stream.next() => received.extend_from_slice(&chunk.expect("open").expect("bytes")),
            () = &mut deadline => break,
        }
    }
    let received = String::from_utf8(received).expect("utf8");
    assert_eq!(received.matches("\"content\":\"tok").count(), 1, "{received}");
    assert_eq!(server.stats().in_flight, 1);
    drop(stream);
    let stats = wait_stats(&server, |s| s.in_flight == 0).await;
    assert_eq!(stats.disconnected, 1);
}

#[tokio::test]
async fn hang_never_answers() {
    let (server, http) = start().await;
    let body = anthropic_body(json!([user("[[mock fault=hang]]")]), true);
    let result = http
        .post(format!("{}/v1/messages", server.root_url()))
        .header("x-api-key", "k")
        .json(&body)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(result.expect_err("must time out").is_timeout());
    let stats = wait_stats(&server, |s| s.in_flight == 0).await;
    assert_eq!((stats.requests, stats.disconnected), (1, 1));
}

#[tokio::test]
async fn client_dropping_a_stream_counts_as_disconnected() {
    let (server, http) = start().await;
    let body = openai_body(json!([user("[[mock tokens=100 delay=20]]")]), true);
    let response = openai(&http, &server, "key-a", &body).await;
    let mut events = response.bytes_stream().eventsource();
    for _ in 0..3 {
        events.next().await.expect("event").expect("ok");
    }
    let stats = server.stats();
    assert_eq!((stats.in_flight, stats.per_key["key-a"].in_flight), (1, 1));
    drop(events);
    let stats = wait_stats(&server, |s| s.in_flight == 0).await;
    assert_eq!((stats.requests, stats.completed, stats.disconnected), (1, 0, 1));
    assert_eq!(stats.per_key["key-a"].in_flight, 0);
}

#[tokio::test]
async fn auth_and_validation_errors_use_protocol_shapes() {
    let (server, http) = start().await;
    let ok = openai_body(json!([user("hi")]), false);
    for key in ["bad-key", "invalid-123"] {
        let response = openai(&http, &server, key, &ok).await;
        assert_eq!(response.status(), 401);
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["code"], "invalid_api_key");
        assert!(error["error"]["message"].is_string());
    }
    let response = anthropic(&http, &server, "bad-key", &anthropic_body(json!([user("hi")]), true)).await;
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "authentication_error");

    // Missing `messages`.
    let response = openai(&http, &server, "k", &json!({"model": "m"})).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let response = anthropic(&http, &server, "k", &json!({"model": "m", "max_tokens": 5})).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["type"], "invalid_request_error");

    // Malformed JSON.
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let response = http
            .post(format!("{}{path}", server.root_url()))
            .header("x-api-key", "k")
            .bearer_auth("k")
            .body("{not json")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 400, "{path}");
    }

    // A typo in a directive is reported instead of silently ignored.
    let body = openai_body(json!([user("[[mock tokenz=3]]")]), false);
    let response = openai(&http, &server, "k", &body).await;
    assert_eq!(response.status(), 400);

    let stats = server.stats();
    assert_eq!((stats.requests, stats.completed), (8, 8));
    assert_eq!(stats.per_key["bad-key"].requests, 2);
}

#[tokio::test]
async fn latency_and_default_config() {
    let server =
        MockServer::start(MockConfig { ttft: Duration::from_millis(150), delay: Duration::ZERO, tokens: Some(3) })
            .await
            .expect("start");
    let http = client();
    let body = openai_body(json!([user("ignored")]), true);
    let started = Instant::now();
    let response = openai(&http, &server, "k", &body).await;
    // Headers come first; the body waits for the time to first token.
    assert!(started.elapsed() < Duration::from_millis(140), "{:?}", started.elapsed());
    let events = sse(response).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    let text: String = events[..events.len() - 1]
        .iter()
        .filter_map(|e| data(e)["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "tok0 tok1 tok2");

    // Directives override the defaults: 4 tokens, 0 ttft, 40ms between tokens.
    let body = anthropic_body(json!([user("[[mock ttft=0 delay=40 tokens=4]]")]), false);
    let started = Instant::now();
    let reply: Value = anthropic(&http, &server, "k", &body).await.json().await.expect("json");
    assert!(started.elapsed() >= Duration::from_millis(120));
    assert_eq!(reply["content"][0]["text"], "tok0 tok1 tok2 tok3");
}

#[tokio::test]
async fn concurrency_is_tracked_per_key() {
    let (server, http) = start().await;
    let body = openai_body(json!([user("[[mock ttft=200]]")]), false);
    let requests = (0..6).map(|i| {
        let key = if i % 2 == 0 { "even" } else { "odd" };
        openai(&http, &server, key, &body)
    });
    let responses = futures::future::join_all(requests).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    let stats = wait_stats(&server, |s| s.completed == 6).await;
    assert_eq!((stats.max_in_flight, stats.in_flight), (6, 0));
    assert_eq!(stats.per_key["even"].max_in_flight, 3);
    assert_eq!(stats.per_key["odd"].requests, 3);

    // The HTTP control API reports the same numbers and can reset them.
    let over_http: Stats =
        http.get(format!("{}/_mock/stats", server.root_url())).send().await.expect("send").json().await.expect("json");
    assert_eq!(over_http, stats);
    let reset = http.post(format!("{}/_mock/reset", server.root_url())).send().await.expect("send");
    assert!(reset.status().is_success());
    assert_eq!(server.stats(), Stats::default());

    let health = http.get(format!("{}/health", server.root_url())).send().await.expect("send");
    assert_eq!(health.text().await.expect("text"), "ok");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_hung_requests() {
    let (server, http) = start().await;
    let url = format!("{}/chat/completions", server.base_url());
    let body = openai_body(json!([user("[[mock fault=hang]]")]), false);
    let pending = tokio::spawn(async move { http.post(url).json(&body).send().await });
    wait_stats(&server, |s| s.in_flight == 1).await;
    tokio::time::timeout(Duration::from_secs(3), server.shutdown()).await.expect("shutdown is prompt");
    let result = pending.await.expect("join");
    assert!(result.is_err() || result.is_ok_and(|r| r.status() == 503));
}

#[test]
fn binary_logs_its_address_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_runq-mock"))
        .args(["--bind", "127.0.0.1:0", "--tokens", "2"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runq-mock");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let line =
        lines.by_ref().map(|l| l.expect("read stderr")).find(|l| l.contains("listening")).expect("listening line");
    let addr = line.split("listening addr=").nth(1).expect("addr field").trim().to_owned();
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{line}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let reply: Value = runtime.block_on(async {
        client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&json!({"model": "m", "messages": [user("x")]}))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json")
    });
    assert_eq!(reply["choices"][0]["message"]["content"], "tok0 tok1");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "{exit:?}");
}
