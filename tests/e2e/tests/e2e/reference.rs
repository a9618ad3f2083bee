//! The request examples of the reference API documents (`../shared/reference/`), sent as the
//! documents show them with only the host and key changed, each checked against the documented
//! response shape.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use runq_e2e::{Stack, assert_envelope};
use serde_json::{Value, json};

/// The agent of reference `000_…`'s examples: its templated messages are the whole conversation.
async fn agent_123(stack: &Stack) {
    let messages = json!([{"role": "user", "content": "Hello, I am {{user_name}}. Tell me about {{topic}}."}]);
    stack.agent("agent-123", "openai", json!({"system_prompt": "You are concise.", "messages": messages})).await;
}

const AGENT_123_ANSWER: &str = "Echo: Hello, I am John. Tell me about AI.";

/// `curl -X POST …/api/v1/run -H "Content-Type: application/json" -H "x-api-key: …" -d '{…}'`
fn run_api(stack: &Stack, key: Option<&str>, body: &str) -> reqwest::RequestBuilder {
    let request = stack.app.request(Method::POST, "/api/v1/run").header("content-type", "application/json");
    let request = match key {
        Some(key) => request.header("x-api-key", key),
        None => request,
    };
    request.body(body.to_owned())
}

#[tokio::test]
async fn reference_000_non_streaming_example_answers_the_complete_messages() {
    let stack = Stack::start().await;
    agent_123(&stack).await;
    let body = r#"{
    "agent_id": "agent-123",
    "variables": {
      "user_name": "John",
      "topic": "AI"
    },
    "stream": false
  }"#;
    let res = run_api(&stack, Some(stack.app.admin_key()), body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let data: Value = res.json().await.unwrap();
    assert_eq!(data["messages"], json!([{"role": "assistant", "content": AGENT_123_ANSWER}]), "{data}");

    // the same request without `stream` answers JSON too on this path (its documented default)
    let omitted = r#"{"agent_id": "agent-123", "variables": {"user_name": "John", "topic": "AI"}}"#;
    let res = run_api(&stack, Some(stack.app.admin_key()), omitted).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/json");
    let data: Value = res.json().await.unwrap();
    assert_eq!(data["messages"][0]["content"], AGENT_123_ANSWER);
}

#[tokio::test]
async fn reference_000_streaming_example_streams_json_data_lines() {
    let stack = Stack::start().await;
    agent_123(&stack).await;
    let body = r#"{
    "agent_id": "agent-123",
    "variables": {
      "user_name": "John",
      "topic": "AI"
    },
    "stream": true
  }"#;
    let sse = stack.sse(run_api(&stack, Some(stack.app.admin_key()), body)).await;
    assert_eq!(sse.status, StatusCode::OK);
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    let parts = sse.parts();
    assert!(parts.iter().any(|p| p["type"] == "start-step"), "{}", sse.text);
    assert_eq!(sse.text(), AGENT_123_ANSWER);
    assert_eq!(sse.frames.last().unwrap().data, "[DONE]");
}

#[tokio::test]
async fn reference_000_access_checks_answer_its_documented_messages_in_its_order() {
    let stack = Stack::start().await;
    agent_123(&stack).await;
    stack.app.call(Method::POST, "/v1/agents", Some(json!({"name": "undeployed"}))).await;
    let other = stack.app.bootstrap_workspace("other").await;
    let (_, foreign) = stack.app.call_as(&other, Method::POST, "/v1/agents", Some(json!({"name": "theirs"}))).await;
    let foreign = foreign["id"].as_str().unwrap();

    let key = stack.app.admin_key();
    let cases = [
        (None, r#"{"agent_id": "agent-123"}"#.to_owned(), StatusCode::UNAUTHORIZED, "API key is required"),
        (Some(key), r#"{"variables": {}}"#.to_owned(), StatusCode::BAD_REQUEST, "agent_id is required"),
        (Some(key), r#"{"agent_id": "no-such-agent"}"#.to_owned(), StatusCode::NOT_FOUND, "Agent not found"),
        (Some(key), format!(r#"{{"agent_id": "{foreign}"}}"#), StatusCode::FORBIDDEN, "Access denied to this agent"),
        (
            Some(key),
            r#"{"agent_id": "undeployed", "stream": false}"#.to_owned(),
            StatusCode::NOT_FOUND,
            "No deployed version found for this agent",
        ),
    ];
    for (key, body, status, message) in cases {
        let res = run_api(&stack, key, &body).send().await.unwrap();
        assert_eq!(res.status(), status, "{body}");
        let error: Value = res.json().await.unwrap();
        assert_eq!(error["message"], message, "{body}: {error}");
        assert_eq!(error["status"], "error");
    }
}

#[tokio::test]
async fn reference_001_quick_start_lists_and_invokes_agents_with_a_bearer_key() {
    let stack = Stack::start().await;
    stack.agent("hello-agent", "openai", json!({})).await;
    let bearer = format!("Bearer {}", stack.app.admin_key());

    // curl -H "Authorization: Bearer YOUR_API_KEY" https://api.run-agent.ai/v1/agents
    let res = stack.app.request(Method::GET, "/v1/agents").header("authorization", &bearer).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["data"][0]["slug"], "hello-agent");
    assert_eq!(list["pagination"], json!({"page": 1, "limit": 20, "total": 1, "pages": 1}));

    // GET /v1/agents?page=2&limit=20
    let (status, page) = stack.app.call(Method::GET, "/v1/agents?page=2&limit=20", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["pagination"], json!({"page": 2, "limit": 20, "total": 1, "pages": 1}));

    // curl -X POST -H "Authorization: Bearer …" -H "Content-Type: application/json" -d '{"query": "Hello"}' …/invoke
    let res = stack
        .app
        .request(Method::POST, "/v1/agents/hello-agent/invoke")
        .header("authorization", &bearer)
        .header("content-type", "application/json")
        .body(r#"{"query": "Hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["data"]["result"], "Echo: Hello");
    assert!(answer["data"]["metadata"]["execution_time"].is_f64(), "{answer}");
    assert!(answer["data"]["metadata"]["tokens_used"].as_u64().unwrap() > 0, "{answer}");

    // {"query": "…", "parameters": {"temperature": 0.7, "max_tokens": 150}}
    let (status, answer) = stack
        .app
        .call(
            Method::POST,
            "/v1/agents/hello-agent/invoke",
            Some(json!({"query": "Your input here", "parameters": {"temperature": 0.7, "max_tokens": 150}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["result"], "Echo: Your input here");

    // a free-tier key (100 requests per hour) carries the rate-limit headers
    let free = format!("Bearer {}", stack.app.bootstrap_workspace("free-tier").await);
    let res = stack.app.request(Method::GET, "/v1/agents").header("authorization", &free).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-ratelimit-limit"], "100");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "99");
    assert!(res.headers().contains_key("x-ratelimit-reset"));
}

#[tokio::test]
async fn reference_001_batch_async_operations_streaming_and_errors_keep_their_shapes() {
    let stack = Stack::start().await;
    agent_123(&stack).await;
    stack.agent("plain", "openai", json!({})).await;

    // {"batch": [{"query": "Question 1"}, {"query": "Question 2"}, {"query": "Question 3"}]}
    let batch = r#"{
"batch": [
{"query": "Question 1"},
{"query": "Question 2"},
{"query": "Question 3"}
]
}"#;
    let res = stack
        .app
        .with_key(Method::POST, "/v1/agents/plain/invoke", stack.app.admin_key())
        .header("content-type", "application/json")
        .body(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let op: Value = res.json().await.unwrap();
    let id = op["operation_id"].as_str().unwrap();
    assert!(id.starts_with("op_"));
    assert_eq!(op["status"], "pending");
    assert_eq!(op["check_url"], format!("/v1/operations/{id}"));
    let done = stack.wait_operation(id).await;
    assert_eq!(done["progress"], json!({"total": 3, "completed": 3, "failed": 0}));

    // curl -H "Authorization: Bearer …" -H "Accept: text/event-stream" …/v1/agents/123/stream
    let sse = stack
        .sse(
            stack
                .app
                .request(Method::GET, "/v1/agents/agent-123/stream?variables[user_name]=John&variables[topic]=AI")
                .header("authorization", format!("Bearer {}", stack.app.admin_key()))
                .header("accept", "text/event-stream"),
        )
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    assert_eq!(sse.text(), AGENT_123_ANSWER);

    // the error envelope: {"status": "error", "error": {"code", "message", "details": {"field", "reason"}}}
    let (status, error) = stack.app.call(Method::POST, "/v1/agents/plain/invoke", Some(json!({"query": ""}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&error, "invalid_request");
    assert_eq!(error["error"]["details"], json!({"field": "query", "reason": "must not be empty"}), "{error}");
}

#[tokio::test]
async fn reference_004_stream_run_example_streams_with_run_and_thread_headers() {
    let stack = Stack::start().await;
    stack.agent("code-assistant", "openai", json!({})).await;
    let body = r#"{
    "agent": "code-assistant",
    "prompt": "Create a tiny TypeScript CLI.",
    "stream": true,
    "threadId": "thr_docs_example"
  }"#;
    let sse = stack
        .sse(
            stack
                .app
                .request(Method::POST, "/v1/run")
                .header("X-API-Key", stack.app.admin_key())
                .header("Content-Type", "application/json")
                .header("Accept", "text/event-stream")
                .body(body),
        )
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert!(sse.headers["x-run-id"].to_str().unwrap().starts_with("run_"));
    assert_eq!(sse.headers["x-thread-id"], "thr_docs_example");
    assert_eq!(sse.text(), "Echo: Create a tiny TypeScript CLI.");
    // every frame parses generically as the document's client does: split on blank lines
    assert!(
        sse.text.split("\n\n").filter(|f| !f.trim().is_empty()).all(|f| f.contains("data: ") || f.starts_with(':'))
    );
}

#[tokio::test]
async fn reference_004_omitting_stream_on_v1_run_streams_too() {
    let stack = Stack::start().await;
    stack.agent("code-assistant", "openai", json!({})).await;
    let sse = stack
        .sse(
            stack
                .app
                .request(Method::POST, "/v1/run")
                .header("X-API-Key", stack.app.admin_key())
                .header("Content-Type", "application/json")
                .body(r#"{"agent": "code-assistant", "prompt": "Run the test suite."}"#),
        )
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.text(), "Echo: Run the test suite.");

    // `stream: false` is the documented non-streaming alternative; `Accept: application/json` asks for it too
    let (status, run) =
        stack.run(json!({"agent": "code-assistant", "prompt": "Run the tests.", "stream": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["output"], "Echo: Run the tests.");
}

/// An LLM provider on the mock and its first model: the workspace's default from then on.
async fn default_model(stack: &Stack) -> Value {
    let (status, provider) = stack
        .app
        .call(
            Method::POST,
            "/v1/llm-providers",
            Some(json!({"name": "OpenAI", "provider_type": "openai", "api_key": "sk-test", "base_url": stack.mock.base_url()})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{provider}");
    assert_eq!(provider["provider_type"], "openai");
    assert_eq!(provider["has_api_key"], true);
    assert!(provider.get("api_key").is_none());
    let path = format!("/v1/llm-providers/{}/models", provider["id"].as_str().unwrap());
    let (status, model) = stack
        .app
        .call(
            Method::POST,
            &path,
            Some(json!({"model_id": "gpt-4", "display_name": "GPT-4", "context_window": 128000})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{model}");
    assert_eq!(model["is_default"], true, "the first model is the default");
    model
}

/// Reference `002_…`'s "Complete Example", verbatim but for `BASE_URL` and `API_KEY`.
const COMPLETE_EXAMPLE: &str = r#"#!/bin/bash

BASE_URL="http://localhost:9000"
API_KEY="evr_your-api-key"

# 1. Create an agent
AGENT=$(curl -s -X POST "$BASE_URL/v1/agents" \
  -H "Authorization: $API_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "name": "Assistant",
    "system_prompt": "You are a helpful assistant."
  }')

AGENT_ID=$(echo $AGENT | jq -r '.id')
echo "Created agent: $AGENT_ID"

# 2. Create a session
SESSION=$(curl -s -X POST "$BASE_URL/v1/agents/$AGENT_ID/sessions" \
  -H "Authorization: $API_KEY" \
  -H "Content-Type: application/json" \
  -d '{"title": "Test Chat"}')

SESSION_ID=$(echo $SESSION | jq -r '.id')
echo "Created session: $SESSION_ID"

# 3. Send a message
MESSAGE=$(curl -s -X POST "$BASE_URL/v1/agents/$AGENT_ID/sessions/$SESSION_ID/messages" \
  -H "Authorization: $API_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "role": "user",
    "content": {"text": "Hello! What can you help me with?"}
  }')

echo "Sent message: $(echo $MESSAGE | jq -r '.id')"

# 4. Wait for processing and get messages
sleep 2

MESSAGES=$(curl -s "$BASE_URL/v1/agents/$AGENT_ID/sessions/$SESSION_ID/messages" \
  -H "Authorization: $API_KEY")

echo "Conversation:"
echo $MESSAGES | jq '.data[] | "\(.role): \(.content.text)"'
"#;

#[tokio::test]
async fn reference_002_complete_example_prints_the_assistants_reply() {
    let stack = Stack::start().await;
    default_model(&stack).await;
    let script = COMPLETE_EXAMPLE
        .replace("http://localhost:9000", &stack.app.base)
        .replace("evr_your-api-key", stack.app.admin_key());
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .await
        .expect("bash, curl and jq must be installed (make test installs jq)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Created agent: agt_"), "{stdout}");
    assert!(stdout.contains("Created session: thr_"), "{stdout}");
    assert!(stdout.contains("Sent message: msg_"), "{stdout}");
    assert!(stdout.contains(r#""user: Hello! What can you help me with?""#), "{stdout}");
    assert!(stdout.contains(r#""assistant: Echo: Hello! What can you help me with?""#), "{stdout}");
}

#[tokio::test]
async fn reference_002_agents_sessions_and_messages_have_the_documented_shapes() {
    let stack = Stack::start().await;
    default_model(&stack).await;
    let key = stack.app.admin_key().to_owned();
    let call = |method: Method, path: String, body: Option<Value>| {
        let request = stack.app.request(method, &path).header("authorization", key.as_str());
        async move {
            let request = match body {
                Some(body) => request.json(&body),
                None => request,
            };
            let res = request.send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (status, agent) = call(
        Method::POST,
        "/v1/agents".into(),
        Some(json!({
            "name": "Customer Support Agent",
            "description": "Handles customer inquiries",
            "system_prompt": "You are a helpful customer support agent. Be friendly, concise, and solve problems efficiently.",
            "tags": ["support", "customer-facing"]
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    for field in ["id", "name", "description", "system_prompt", "tags", "status", "created_at", "updated_at"] {
        assert!(agent.get(field).is_some_and(|v| !v.is_null()), "{field} missing: {agent}");
    }
    assert_eq!(agent["status"], "active");
    let id = agent["id"].as_str().unwrap().to_owned();

    let (status, list) = call(Method::GET, "/v1/agents".into(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"][0]["status"], "active");
    let (status, got) = call(Method::GET, format!("/v1/agents/{id}"), None).await;
    assert_eq!((status, &got["name"]), (StatusCode::OK, &json!("Customer Support Agent")));

    let (status, updated) = call(
        Method::PATCH,
        format!("/v1/agents/{id}"),
        Some(json!({"name": "Updated Agent Name", "system_prompt": "Updated system prompt..."})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Updated Agent Name");
    assert_eq!(updated["system_prompt"], "Updated system prompt...");
    assert_ne!(updated["deployed_version_id"], agent["deployed_version_id"], "a new version serves the new prompt");

    let (status, session) =
        call(Method::POST, format!("/v1/agents/{id}/sessions"), Some(json!({"title": "Support Chat #1234"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(session["agent_id"], id.as_str());
    assert_eq!(session["title"], "Support Chat #1234");
    assert_eq!(session["status"], "pending");
    assert!(session["created_at"].is_string());
    let sid = session["id"].as_str().unwrap().to_owned();

    let (status, sessions) = call(Method::GET, format!("/v1/agents/{id}/sessions"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sessions["data"][0]["id"], sid.as_str());

    let (status, sent) = call(
        Method::POST,
        format!("/v1/agents/{id}/sessions/{sid}/messages"),
        Some(json!({"role": "user", "content": {"text": "How do I reset my password?"}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    assert_eq!(sent["session_id"], sid.as_str());
    assert_eq!(sent["sequence"], 1);
    assert_eq!(sent["role"], "user");
    assert_eq!(sent["content"], json!({"text": "How do I reset my password?"}));
    assert!(sent["id"].as_str().unwrap().starts_with("msg_") && sent["created_at"].is_string(), "{sent}");

    // pending → running → pending, then the reply is listed after the question
    let reply = "Echo: How do I reset my password?";
    let mut messages = Value::Null;
    for _ in 0..100 {
        let (_, session) = call(Method::GET, format!("/v1/agents/{id}/sessions/{sid}"), None).await;
        (_, messages) = call(Method::GET, format!("/v1/agents/{id}/sessions/{sid}/messages"), None).await;
        if session["status"] == "pending" && messages["data"].as_array().is_some_and(|m| m.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let data = messages["data"].as_array().expect("data");
    assert_eq!(data.len(), 2, "{messages}");
    assert_eq!(data[0]["id"], sent["id"], "the question keeps its id once stored");
    assert_eq!((&data[0]["sequence"], &data[0]["role"]), (&json!(1), &json!("user")));
    assert_eq!((&data[1]["sequence"], &data[1]["role"]), (&json!(2), &json!("assistant")));
    assert_eq!(data[1]["content"], json!({"text": reply}));

    // the events of the turn, with the document's names and resumable ids
    let events = |after: Option<&str>| {
        let mut request = stack
            .app
            .request(Method::GET, &format!("/v1/agents/{id}/sessions/{sid}/events"))
            .header("authorization", key.as_str())
            .header("accept", "text/event-stream");
        if let Some(after) = after {
            request = request.header("last-event-id", after);
        }
        stack.sse(request)
    };
    let sse = events(None).await;
    assert_eq!(sse.status, StatusCode::OK);
    let names: Vec<&str> = sse.frames.iter().filter_map(|f| f.event.as_deref()).collect();
    assert_eq!(names.first(), Some(&"session.started"), "{names:?}");
    assert_eq!(names.get(1), Some(&"step.started"), "{names:?}");
    assert_eq!(&names[names.len() - 2..], ["message.created", "session.completed"], "{names:?}");
    assert!(sse.frames.iter().all(|f| f.id.is_some()), "every event has an id: {}", sse.text);
    let deltas: String = sse
        .frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("message.delta"))
        .map(|f| serde_json::from_str::<Value>(&f.data).unwrap()["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deltas, reply);
    let started: Value = serde_json::from_str(&sse.frames[0].data).unwrap();
    assert_eq!(started["session_id"], sid.as_str());

    let last_delta = sse.frames.iter().rfind(|f| f.event.as_deref() == Some("message.delta")).unwrap();
    let resumed = events(Some(&last_delta.id.unwrap().to_string())).await;
    let names: Vec<&str> = resumed.frames.iter().filter_map(|f| f.event.as_deref()).collect();
    assert_eq!(names, ["message.created", "session.completed"]);

    let (status, archived) = call(Method::DELETE, format!("/v1/agents/{id}"), None).await;
    assert_eq!((status, &archived["status"]), (StatusCode::OK, &json!("archived")));
}

#[tokio::test]
async fn reference_002_events_opened_before_the_message_follow_the_turn() {
    let stack = Stack::start().await;
    default_model(&stack).await;
    let (_, agent) = stack
        .app
        .call(Method::POST, "/v1/agents", Some(json!({"name": "Assistant", "system_prompt": "Be brief."})))
        .await;
    let id = agent["id"].as_str().unwrap();
    let (_, session) = stack.app.call(Method::POST, &format!("/v1/agents/{id}/sessions"), Some(json!({}))).await;
    let sid = session["id"].as_str().unwrap();
    let events = format!("/v1/agents/{id}/sessions/{sid}/events");
    let listen = stack.sse(stack.app.with_key(Method::GET, &events, stack.app.admin_key()));
    let send = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = json!({"role": "user", "content": {"text": "hi there"}});
        stack.app.call(Method::POST, &format!("/v1/agents/{id}/sessions/{sid}/messages"), Some(text)).await
    };
    let (sse, (status, _)) = tokio::join!(tokio::time::timeout(Duration::from_secs(20), listen), send);
    assert_eq!(status, StatusCode::CREATED);
    let sse = sse.expect("the stream ended");
    let names: Vec<&str> = sse.frames.iter().filter_map(|f| f.event.as_deref()).collect();
    assert_eq!(names.first(), Some(&"session.started"));
    assert_eq!(names.last(), Some(&"session.completed"));
}

#[tokio::test]
async fn reference_002_providers_models_capabilities_and_keys() {
    let stack = Stack::start().await;
    let model = default_model(&stack).await;
    let (status, providers) = stack.app.call(Method::GET, "/v1/llm-providers", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(providers["data"][0]["name"], "OpenAI");
    let (_, also) = stack.app.call(Method::GET, "/v1/providers", None).await;
    assert_eq!(also["data"][0]["id"], providers["data"][0]["id"], "the same providers");
    let (status, models) = stack.app.call(Method::GET, "/v1/llm-models", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(models["data"], json!([model]));

    let (status, caps) = stack.app.call(Method::GET, "/v1/capabilities", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = caps["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"current_time") && ids.contains(&"noop"), "{caps}");

    let (_, agent) = stack
        .app
        .call(Method::POST, "/v1/agents", Some(json!({"name": "Timer", "system_prompt": "Tell the time."})))
        .await;
    let path = format!("/v1/agents/{}/capabilities", agent["id"].as_str().unwrap());
    let (status, none) = stack.app.call(Method::GET, &path, None).await;
    assert_eq!((status, none), (StatusCode::OK, json!({"capability_ids": []})));
    let (status, set) =
        stack.app.call(Method::PUT, &path, Some(json!({"capability_ids": ["current_time", "noop"]}))).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let (_, got) = stack.app.call(Method::GET, &path, None).await;
    assert_eq!(got, json!({"capability_ids": ["current_time", "noop"]}));
    let (status, run) = stack.run(json!({"agent_id": "timer", "prompt": "now? [[mock tool=current_time]]"})).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert!(run["output"].as_str().unwrap().starts_with("Tool current_time returned:"), "{run}");
    let (status, bad) = stack.app.call(Method::PUT, &path, Some(json!({"capability_ids": ["web_search"]}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&bad, "invalid_request");

    // curl -X POST …/v1/auth/api-keys -H "Authorization: Bearer $TOKEN" -d '{"name", "scopes": [...]}'
    let token = format!("Bearer {}", stack.app.admin_key());
    let res = stack
        .app
        .request(Method::POST, "/v1/auth/api-keys")
        .header("authorization", &token)
        .header("content-type", "application/json")
        .body(
            r#"{
    "name": "my-api-key",
    "scopes": ["agents:read", "agents:write", "sessions:read", "sessions:write"]
  }"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["name"], "my-api-key");
    assert_eq!(created["scopes"], json!(["agents:read", "agents:write", "sessions:read", "sessions:write"]));
    let new_key = created["key"].as_str().unwrap();
    let (status, _) = stack.app.call_as(new_key, Method::GET, "/v1/agents", None).await;
    assert_eq!(status, StatusCode::OK, "agents:* scopes manage agents");
    let key_id = created["id"].as_str().unwrap();

    let res = stack.app.request(Method::GET, "/v1/auth/api-keys").header("authorization", &token).send().await.unwrap();
    let keys: Value = res.json().await.unwrap();
    assert!(keys["data"].as_array().unwrap().iter().any(|k| k["id"] == key_id), "{keys}");
    let res = stack
        .app
        .request(Method::DELETE, &format!("/v1/auth/api-keys/{key_id}"))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (status, _) = stack.app.call_as(new_key, Method::GET, "/v1/agents", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a deleted key stops working");

    let (status, bad) = stack
        .app
        .call(Method::POST, "/v1/auth/api-keys", Some(json!({"name": "x", "scopes": ["billing:write"]})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["error"]["details"]["field"], "scopes[0]");
}

#[tokio::test]
async fn reference_002_auth_config_health_and_docs_aliases_answer() {
    let stack = Stack::start().await;
    let get = |path: &'static str| stack.app.request(Method::GET, path).send();
    let config: Value = get("/v1/auth/config").await.unwrap().json().await.unwrap();
    assert_eq!(config["mode"], "full");
    let health: Value = get("/health").await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["version"].is_string());
    let spec = get("/api-doc/openapi.json").await.unwrap();
    assert_eq!(spec.status(), StatusCode::OK);
    let spec: Value = spec.json().await.unwrap();
    assert!(spec["paths"]["/v1/agents/{id}/sessions"].is_object(), "sessions are documented");
    let ui = get("/swagger-ui/").await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.text().await.unwrap().contains("swagger"), "the viewer is served");
}

#[tokio::test]
async fn an_agent_from_a_system_prompt_needs_a_default_model_and_leaves_nothing_behind() {
    let stack = Stack::start().await;
    let (status, error) =
        stack.app.call(Method::POST, "/v1/agents", Some(json!({"name": "Early", "system_prompt": "Hi."}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["details"]["field"], "model");
    let (_, agents) = stack.app.call(Method::GET, "/v1/agents", None).await;
    assert_eq!(agents["data"], json!([]), "no agent was created");
}

#[tokio::test]
async fn use_chat_through_the_ai_sdk_transport_talks_to_v1_run_on_one_thread() {
    let stack = Stack::start().await;
    stack.agent("chat", "openai", json!({"system_prompt": "You chat."})).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/js/use-chat.mjs");
    let out = tokio::process::Command::new("node")
        .args([script, &stack.app.base, "chat", "first question", "second question"])
        .env("RUNQ_KEY", stack.app.admin_key())
        .output()
        .await
        .expect("node must be installed (make test installs the AI SDK with npm ci)");
    let result: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["answers"], json!(["Echo: first question", "Echo: second question"]));
    let chat = result["chatId"].as_str().unwrap();
    let (status, messages) = stack.app.call(Method::GET, &format!("/v1/threads/{chat}/messages"), None).await;
    assert_eq!(status, StatusCode::OK, "the chat id names the thread: {messages}");
    let turns: Vec<(&str, &str)> = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        turns,
        [
            ("user", "first question"),
            ("assistant", "Echo: first question"),
            ("user", "second question"),
            ("assistant", "Echo: second question"),
        ],
        "each turn stored once, history not duplicated"
    );
}
