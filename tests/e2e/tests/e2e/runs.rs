use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use runq_e2e::{Stack, assert_envelope};
use serde_json::{Value, json};

/// Keys each UI message stream part may carry (AI SDK `uiMessageChunkSchema`).
fn allowed_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "start" => &["type", "messageId", "messageMetadata"],
        "start-step" | "finish-step" => &["type"],
        "text-start" | "text-end" => &["type", "id", "providerMetadata"],
        "text-delta" => &["type", "id", "delta", "providerMetadata"],
        "tool-input-available" => {
            &["type", "toolCallId", "toolName", "input", "providerExecuted", "providerMetadata", "dynamic"]
        }
        "tool-output-available" => &["type", "toolCallId", "output", "providerExecuted", "dynamic", "preliminary"],
        "tool-output-error" => &["type", "toolCallId", "errorText", "providerExecuted", "dynamic"],
        "tool-output-denied" => &["type", "toolCallId"],
        "tool-approval-request" => &["type", "approvalId", "toolCallId"],
        "finish" => &["type", "finishReason", "messageMetadata"],
        "error" => &["type", "errorText"],
        "abort" => &["type", "reason"],
        k if k.starts_with("data-") => &["type", "id", "data", "transient"],
        other => panic!("unknown part type {other}"),
    }
}

fn assert_protocol(parts: &[Value]) {
    for part in parts {
        let kind = part["type"].as_str().expect("type");
        let allowed = allowed_keys(kind);
        for key in part.as_object().unwrap().keys() {
            assert!(allowed.contains(&key.as_str()), "{kind} carries unknown key {key}: {part}");
        }
    }
}

#[tokio::test]
async fn a_sync_run_answers_from_the_provider_for_both_protocols() {
    let stack = Stack::start().await;
    for kind in ["openai", "anthropic"] {
        stack.agent(kind, kind, json!({"system_prompt": "You help {{company}}."})).await;
        let (status, run) =
            stack.run(json!({"agent_id": kind, "prompt": "Hello runq", "variables": {"company": "Acme"}})).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["output"], "Echo: Hello runq");
        assert_eq!(run["messages"], json!([{"role": "assistant", "content": "Echo: Hello runq"}]));
        assert!(run["usage"]["output_tokens"].as_u64().unwrap() > 0, "{run}");
        assert!(run["execution_time_ms"].is_i64());
        assert!(run["id"].as_str().unwrap().starts_with("run_"));
    }
}

#[tokio::test]
async fn a_streamed_run_speaks_the_ui_message_stream_and_replays_after_any_seq() {
    let stack = Stack::start().await;
    for kind in ["openai", "anthropic"] {
        stack.agent(kind, kind, json!({})).await;
        let body = json!({"agent_id": kind, "prompt": "one two three four five", "stream": true});
        let sse = stack.sse(stack.app.with_key(Method::POST, "/v1/run", stack.app.admin_key()).json(&body)).await;
        assert_eq!(sse.status, StatusCode::OK);
        assert_eq!(sse.headers["content-type"], "text/event-stream");
        assert_eq!(sse.headers["x-vercel-ai-ui-message-stream"], "v1");
        let run_id = sse.headers["x-run-id"].to_str().unwrap().to_owned();
        assert!(sse.headers["x-thread-id"].to_str().unwrap().starts_with("thr_"));

        let parts = sse.parts();
        assert_protocol(&parts);
        let kinds: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(kinds.first(), Some(&"start"));
        assert_eq!(kinds.last(), Some(&"finish"));
        assert_eq!(sse.frames.last().unwrap().data, "[DONE]");
        assert_eq!(sse.text(), "Echo: one two three four five");
        let ids = sse.ids();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "seq strictly increasing: {ids:?}");
        assert_eq!(parts[0]["messageMetadata"]["runId"], run_id.as_str());

        // after completion, ?after=N and Last-Event-ID return exactly the frames after N
        let n = ids[ids.len() / 2];
        let expected: Vec<_> = sse.frames.iter().filter(|f| f.id.is_none_or(|id| id > n)).cloned().collect();
        let by_query = stack
            .sse(stack.app.with_key(Method::GET, &format!("/v1/runs/{run_id}/events?after={n}"), stack.app.admin_key()))
            .await;
        assert_eq!(by_query.frames, expected);
        let by_header = stack
            .sse(
                stack
                    .app
                    .with_key(Method::GET, &format!("/v1/runs/{run_id}/events"), stack.app.admin_key())
                    .header("last-event-id", n.to_string()),
            )
            .await;
        assert_eq!(by_header.frames, expected);
        let whole = stack
            .sse(stack.app.with_key(Method::GET, &format!("/v1/runs/{run_id}/events"), stack.app.admin_key()))
            .await;
        assert_eq!(whole.frames, sse.frames, "the same events, live or finished");
    }
}

#[tokio::test]
async fn accept_event_stream_also_streams() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({})).await;
    let sse = stack
        .sse(
            stack
                .app
                .with_key(Method::POST, "/v1/run", stack.app.admin_key())
                .header("accept", "text/event-stream")
                .json(&json!({"agent": "bot", "query": "hi"})),
        )
        .await;
    assert_eq!(sse.headers["x-vercel-ai-ui-message-stream"], "v1");
    assert_eq!(sse.text(), "Echo: hi");
}

#[tokio::test]
async fn an_async_run_is_polled_to_its_result() {
    let stack = Stack::start().await;
    for kind in ["openai", "anthropic"] {
        stack.agent(kind, kind, json!({})).await;
        let (status, op) = stack.run(json!({"agent_id": kind, "input": "later please", "async": true})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        assert_eq!(op["status"], "pending");
        let id = op["operation_id"].as_str().unwrap();
        assert_eq!(op["check_url"], format!("/v1/operations/{id}"));
        let done = stack.wait_operation(id).await;
        assert_eq!(done["status"], "succeeded");
        assert_eq!(done["progress"], json!({"total": 1, "completed": 1, "failed": 0}));
        assert_eq!(done["result"]["output"], "Echo: later please");
    }
}

#[tokio::test]
async fn a_batch_of_1000_queries_completes_with_progress_and_paginated_results() {
    let stack = Stack::start().await;
    for kind in ["openai", "anthropic"] {
        stack.agent(kind, kind, json!({})).await;
        let batch: Vec<Value> = (0..1000).map(|i| json!({"query": format!("q{i}")})).collect();
        let (status, op) = stack.run(json!({"agent_id": kind, "batch": batch})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        assert_eq!(op["progress"]["total"], 1000);
        let id = op["operation_id"].as_str().unwrap().to_owned();
        let done = stack.wait_operation(&id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["progress"], json!({"total": 1000, "completed": 1000, "failed": 0}));

        let (_, page) =
            stack.app.call(Method::GET, &format!("/v1/operations/{id}/results?page=3&limit=100"), None).await;
        assert_eq!(page["pagination"], json!({"page": 3, "limit": 100, "total": 1000, "pages": 10}));
        let outputs: Vec<&str> =
            page["data"].as_array().unwrap().iter().map(|r| r["output"].as_str().unwrap()).collect();
        let expected: Vec<String> = (200..300).map(|i| format!("Echo: q{i}")).collect();
        assert_eq!(outputs, expected, "results come in item order");
    }
}

#[tokio::test]
async fn invoke_answers_in_the_seed_001_envelope_and_agent_stream_streams() {
    let stack = Stack::start().await;
    for kind in ["openai", "anthropic"] {
        stack.agent(kind, kind, json!({})).await;
        let (status, body) = stack
            .app
            .call(
                Method::POST,
                &format!("/v1/agents/{kind}/invoke"),
                Some(json!({"query": "ping", "parameters": {"temperature": 0.1}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "success");
        assert_eq!(body["data"]["result"], "Echo: ping");
        assert!(body["data"]["metadata"]["tokens_used"].as_u64().unwrap() > 0);
        assert!(body["data"]["metadata"]["execution_time"].is_number());

        let (status, op) = stack
            .app
            .call(
                Method::POST,
                &format!("/v1/agents/{kind}/invoke"),
                Some(json!({"batch": [{"query": "a"}, {"query": "b"}]})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        stack.wait_operation(op["operation_id"].as_str().unwrap()).await;

        let sse = stack
            .sse(stack.app.with_key(
                Method::GET,
                &format!("/v1/agents/{kind}/stream?query=streamed"),
                stack.app.admin_key(),
            ))
            .await;
        assert_eq!(sse.status, StatusCode::OK);
        assert_eq!(sse.text(), "Echo: streamed");
    }
}

#[tokio::test]
async fn a_thread_continues_with_its_earlier_messages() {
    let stack = Stack::start().await;
    for kind in ["openai", "anthropic"] {
        stack.agent(kind, kind, json!({})).await;
        let thread = format!("thr_docs_example_{kind}");
        let (_, first) = stack.run(json!({"agent_id": kind, "prompt": "my name is Ada", "threadId": thread})).await;
        assert_eq!(first["thread_id"], thread.as_str());
        let (_, second) = stack.run(json!({"agent_id": kind, "prompt": "what is my name", "thread_id": thread})).await;
        assert_eq!(second["status"], "completed", "{second}");
        assert_eq!(second["thread_id"], thread.as_str());
        // the mock counts every input word: the second call carried the first turn too
        let alone = stack.run(json!({"agent_id": kind, "prompt": "what is my name"})).await.1;
        assert!(
            second["usage"]["input_tokens"].as_u64() > alone["usage"]["input_tokens"].as_u64(),
            "history reached the provider: {second} vs {alone}"
        );

        let (_, messages) = stack.app.call(Method::GET, &format!("/v1/threads/{thread}/messages"), None).await;
        let turns: Vec<(String, String)> = messages["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned()))
            .collect();
        let expected = [
            ("user", "my name is Ada"),
            ("assistant", "Echo: my name is Ada"),
            ("user", "what is my name"),
            ("assistant", "Echo: what is my name"),
        ];
        assert_eq!(turns, expected.map(|(r, c)| (r.to_owned(), c.to_owned())));
    }
}

#[tokio::test]
async fn a_thread_a_run_started_reads_as_a_thread_and_its_id_is_taken() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({})).await;
    let (_, generated) = stack.run(json!({"agent_id": "bot", "prompt": "hello"})).await;
    let (_, named) = stack.run(json!({"agent_id": "bot", "prompt": "hello", "thread_id": "thr_named_by_run"})).await;
    for run in [&generated, &named] {
        let thread = run["thread_id"].as_str().unwrap();
        let (status, read) = stack.app.call(Method::GET, &format!("/v1/threads/{thread}"), None).await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(read["id"], thread);
        assert_eq!(read["created_at"], run["created_at"], "a run's thread starts with its first run");
        assert_eq!(read["metadata"], json!({}));
        let (status, again) = stack.app.call(Method::POST, "/v1/threads", Some(json!({"thread_id": thread}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{again}");
        assert_envelope(&again, "thread_exists");
    }
    let (status, missing) = stack.app.call(Method::GET, "/v1/threads/thr_never_used", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    let (status, created) =
        stack.app.call(Method::POST, "/v1/threads", Some(json!({"thread_id": "thr_never_used"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

#[tokio::test]
async fn runs_of_one_thread_never_interleave() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({})).await;
    let thread = "thr_serial";
    let slow =
        json!({"agent_id": "bot", "prompt": "first [[mock tokens=20 delay=10]]", "thread_id": thread, "async": true});
    let (_, a) = stack.run(slow).await;
    let (_, b) = stack.run(json!({"agent_id": "bot", "prompt": "second", "thread_id": thread, "async": true})).await;
    let a = stack.wait_operation(a["operation_id"].as_str().unwrap()).await;
    let b = stack.wait_operation(b["operation_id"].as_str().unwrap()).await;
    let (a_end, b_start) = (a["result"]["finished_at"].as_str().unwrap(), b["result"]["started_at"].as_str().unwrap());
    assert!(b_start >= a_end, "the second run started ({b_start}) before the first finished ({a_end})");
    let (_, messages) = stack.app.call(Method::GET, &format!("/v1/threads/{thread}/messages"), None).await;
    let roles: Vec<&str> = messages["data"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
}

#[tokio::test]
async fn a_scripted_tool_call_runs_current_time_and_the_answer_follows_it() {
    let stack = Stack::start().await;
    for kind in ["openai", "anthropic"] {
        stack.agent(kind, kind, json!({"tools": ["current_time"]})).await;
        let body = json!({"agent_id": kind, "prompt": "what time is it [[mock tool=current_time]]", "stream": true});
        let sse = stack.sse(stack.app.with_key(Method::POST, "/v1/run", stack.app.admin_key()).json(&body)).await;
        let parts = sse.parts();
        assert_protocol(&parts);
        let position =
            |t: &str| parts.iter().position(|p| p["type"] == t).unwrap_or_else(|| panic!("no {t}: {parts:?}"));
        let (input, output, text) =
            (position("tool-input-available"), position("tool-output-available"), position("text-delta"));
        assert!(input < output && output < text, "tool call, its output, then the answer");
        assert_eq!(parts[input]["toolName"], "current_time");
        let now = parts[output]["output"]["now"].as_str().unwrap();
        assert!(chrono_like(now), "{now}");
        assert!(sse.text().starts_with("Tool current_time returned:") && sse.text().contains(now));
    }
}

fn chrono_like(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T')
}

#[tokio::test]
async fn admission_errors_use_the_envelope_and_record_nothing() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({"system_prompt": "You help {{company}}."})).await;
    stack.app.call(Method::POST, "/v1/agents", Some(json!({"name": "draft"}))).await;
    stack.agent("blank", "openai", json!({})).await;
    let other = stack.app.bootstrap_workspace("other").await;
    let (_, foreign) = stack.app.call_as(&other, Method::POST, "/v1/agents", Some(json!({"name": "theirs"}))).await;

    let cases = [
        (json!({"agent_id": "ghost", "prompt": "x"}), StatusCode::NOT_FOUND, "agent_not_found", "Agent not found"),
        (
            json!({"agent_id": "draft", "prompt": "x"}),
            StatusCode::NOT_FOUND,
            "agent_not_deployed",
            "No deployed version found for this agent",
        ),
        (
            json!({"agent_id": foreign["id"], "prompt": "x"}),
            StatusCode::FORBIDDEN,
            "forbidden",
            "Access denied to this agent",
        ),
        (
            json!({"agent_id": "bot", "prompt": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid variables.company: the agent's prompt uses this variable but the request did not provide it",
        ),
        (
            json!({"agent_id": "blank"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid prompt: the agent's deployed version has no prompt or messages, so a run needs a prompt, query, input or messages",
        ),
        (
            json!({"agent_id": "bot", "prompt": " "}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid prompt: must not be empty",
        ),
        (json!({"prompt": "x"}), StatusCode::BAD_REQUEST, "invalid_request", "agent_id is required"),
        (
            json!({"agent_id": "ghost", "prompt": "x", "query": "y"}),
            StatusCode::NOT_FOUND,
            "agent_not_found",
            "Agent not found",
        ),
        (
            json!({"agent_id": "bot", "prompt": "x", "variables": {"company": "A"}, "promt": "typo"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid promt: unknown field",
        ),
        (
            json!({"agent_id": "bot", "variables": {"company": "A"}, "batch": [{"query": "ok", "colour": "red"}]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid batch[0].colour: unknown field",
        ),
        (
            json!({"agent_id": "bot", "prompt": "x", "variables": {"company": "A"}, "thread_id": "bad id!"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid thread_id: must be 1-128 letters, digits, '_', '-', '.' or ':'",
        ),
        (
            json!({"agent_id": "bot", "variables": {"company": "A"}, "batch": [{"query": "ok"}, {"messages": [{"role": "robot", "content": "x"}]}]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid batch[1].messages[0].role: must be user, assistant or system",
        ),
    ];
    for (body, status, code, message) in cases {
        let (got, res) = stack.run(body.clone()).await;
        assert_eq!(got, status, "{body} → {res}");
        assert_envelope(&res, code);
        assert_eq!(res["message"], message, "{body}");
    }
    let run_key = stack.app.create_key(&["run"]).await;
    let (status, _) =
        stack.app.call_as(&run_key, Method::POST, "/v1/run", Some(json!({"agent_id": "ghost", "prompt": "x"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "run-only keys may run agents");

    let (runs,): (i64,) = sqlx::query_as("select count(*) from runs").fetch_one(&stack.app.db).await.unwrap();
    assert_eq!(runs, 0, "refused runs leave nothing behind");
}

#[tokio::test]
async fn the_run_row_ends_completed_with_usage_timings_and_thread_messages() {
    let stack = Stack::start().await;
    stack.agent("bot", "anthropic", json!({})).await;
    let (_, run) = stack.run(json!({"agent_id": "bot", "prompt": "store me", "metadata": {"ticket": 7}})).await;
    let id = run["id"].as_str().unwrap().trim_start_matches("run_").to_owned();
    let row: (String, i32, Option<String>, Value, bool, bool, Value, Option<i64>) = sqlx::query_as(
        "select status, attempt, output, usage, started_at is not null, finished_at >= started_at, metadata, queue_wait_us
         from runs where id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&stack.app.db)
    .await
    .unwrap();
    assert_eq!(row.0, "completed");
    assert_eq!(row.1, 1);
    assert_eq!(row.2.as_deref(), Some("Echo: store me"));
    assert!(row.3["input_tokens"].as_u64().unwrap() > 0 && row.3["output_tokens"].as_u64().unwrap() > 0, "{}", row.3);
    assert!(row.4 && row.5);
    assert_eq!(row.6, json!({"ticket": 7}));
    assert!(row.7.is_some_and(|us| us >= 0));

    let roles: Vec<(String,)> = sqlx::query_as("select role from messages where run_id = $1::uuid order by id")
        .bind(&id)
        .fetch_all(&stack.app.db)
        .await
        .unwrap();
    let roles: BTreeSet<_> = roles.into_iter().map(|(r,)| r).collect();
    assert_eq!(roles, BTreeSet::from(["assistant".to_owned(), "user".to_owned()]));
}

#[tokio::test]
async fn a_live_stream_parses_with_the_ai_sdk_and_matches_the_stored_output() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({"tools": ["current_time"]})).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/js/parse-ui-stream.mjs");
    let body = json!({"agent_id": "bot", "prompt": "time? [[mock tool=current_time delay=5]]", "stream": true});
    let out = tokio::process::Command::new("node")
        .arg(script)
        .arg(format!("{}/v1/run", stack.app.base))
        .arg(body.to_string())
        .env("RUNQ_KEY", stack.app.admin_key())
        .output()
        .await
        .expect("node must be installed (make test installs the AI SDK with npm ci)");
    let result: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["done"], true);
    let run_id = result["message"]["metadata"]["runId"].as_str().unwrap();
    let (_, run) = stack.app.call(Method::GET, &format!("/v1/runs/{run_id}"), None).await;
    assert_eq!(result["text"], run["output"], "the SDK's reconstruction equals the stored output");
    let parts = result["message"]["parts"].as_array().unwrap();
    assert!(parts.iter().any(|p| p["type"] == "tool-current_time" && p["state"] == "output-available"), "{result}");
}

#[tokio::test]
async fn replaying_a_finished_run_from_its_last_event_or_beyond_ends_at_once() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({})).await;
    let sse = stack
        .sse(
            stack
                .app
                .with_key(Method::POST, "/v1/run", stack.app.admin_key())
                .json(&json!({"agent": "bot", "prompt": "hi"})),
        )
        .await;
    let run = sse.headers["x-run-id"].to_str().unwrap().to_owned();
    let last = *sse.ids().last().unwrap();
    for after in [last, last + 100] {
        let request = stack
            .app
            .with_key(Method::GET, &format!("/v1/runs/{run}/events"), stack.app.admin_key())
            .header("last-event-id", after.to_string())
            .timeout(std::time::Duration::from_secs(5));
        let replay = stack.sse(request).await;
        assert_eq!(replay.frames.len(), 1, "after {after}: {}", replay.text);
        assert_eq!(replay.frames[0].data, "[DONE]");
    }
}

#[tokio::test]
async fn runs_filter_by_agent_slug_and_an_async_operation_names_its_run_from_the_start() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({})).await;
    stack.agent("other", "openai", json!({})).await;
    let (_, first) = stack.run(json!({"agent_id": "bot", "prompt": "one"})).await;
    stack.run(json!({"agent_id": "other", "prompt": "two"})).await;
    let (status, runs) = stack.app.call(Method::GET, "/v1/runs?agent_id=bot", None).await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    assert_eq!(runs["pagination"]["total"], 1);
    assert_eq!(runs["data"][0]["id"], first["id"]);
    let (status, missing) = stack.app.call(Method::GET, "/v1/runs?agent_id=ghost", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    let (_, completed) = stack.app.call(Method::GET, "/v1/runs?status=completed", None).await;
    assert_eq!(completed["pagination"]["total"], 2);
    let (status, bogus) = stack.app.call(Method::GET, "/v1/runs?status=done", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bogus}");
    assert_eq!(bogus["error"]["details"]["field"], "status");

    let (status, op) = stack.run(json!({"agent_id": "bot", "prompt": "later [[mock delay=200]]", "async": true})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let run_id = op["run_id"].as_str().expect("run_id at once").to_owned();
    let (_, polled) = stack.app.call(Method::GET, op["check_url"].as_str().unwrap(), None).await;
    assert_eq!(polled["run_id"], run_id.as_str(), "{polled}");
    let done = stack.wait_operation(op["operation_id"].as_str().unwrap()).await;
    assert_eq!(done["result"]["id"], run_id.as_str());
}

#[tokio::test]
async fn batch_items_may_each_name_their_agent() {
    let stack = Stack::start().await;
    stack.agent("alpha", "openai", json!({"system_prompt": "You are alpha."})).await;
    stack.agent("beta", "anthropic", json!({})).await;
    let batch = json!([{"agent_id": "alpha", "query": "Q1"}, {"agent": "beta", "query": "Q2"}, {"query": "Q3"}]);
    let (status, op) = stack.run(json!({"agent_id": "beta", "batch": batch})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{op}");
    stack.wait_operation(op["operation_id"].as_str().unwrap()).await;
    let (_, results) = stack.app.call(Method::GET, op["results_url"].as_str().unwrap(), None).await;
    let (_, alpha) = stack.app.call(Method::GET, "/v1/agents/alpha", None).await;
    let (_, beta) = stack.app.call(Method::GET, "/v1/agents/beta", None).await;
    let agents: Vec<&Value> = results["data"].as_array().unwrap().iter().map(|r| &r["agent_id"]).collect();
    assert_eq!(agents, [&alpha["id"], &beta["id"], &beta["id"]]);
    let outputs: Vec<&Value> = results["data"].as_array().unwrap().iter().map(|r| &r["output"]).collect();
    assert_eq!(outputs, [&json!("Echo: Q1"), &json!("Echo: Q2"), &json!("Echo: Q3")]);

    // without a top-level agent every item needs its own; an unknown one refuses the whole batch
    let (status, error) = stack.run(json!({"batch": [{"agent_id": "alpha", "query": "a"}, {"query": "b"}]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["message"], "batch[1].agent_id is required");
    let before = stack.app.call(Method::GET, "/v1/runs", None).await.1["pagination"]["total"].clone();
    let (status, _) =
        stack.run(json!({"batch": [{"agent_id": "alpha", "query": "a"}, {"agent_id": "ghost", "query": "b"}]})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        stack.app.call(Method::GET, "/v1/runs", None).await.1["pagination"]["total"],
        before,
        "nothing recorded"
    );
}

#[tokio::test]
async fn concurrent_admissions_of_several_workspaces_are_each_recorded_once() {
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({})).await;
    let other = stack.app.bootstrap_workspace("second").await;
    stack.app.deployed_agent(&other, "bot", "openai", &stack.mock.base_url()).await;
    let keys = [stack.app.admin_key().to_owned(), other.clone()];
    // admissions that arrive together are written together (group commit); each answers its own run
    let answers = futures::future::join_all((0..64).map(|i| {
        let key = keys[i % 2].clone();
        let app = &stack.app;
        async move {
            let body = json!({"agent_id": "bot", "prompt": format!("run {i}"), "thread_id": format!("thr_group_{i}")});
            app.call_as(&key, Method::POST, "/v1/run", Some(body)).await
        }
    }))
    .await;
    for (i, (status, run)) in answers.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "{run}");
        assert_eq!(run["output"], format!("Echo: run {i}"), "each caller gets its own run");
    }
    let (runs, threads): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct (workspace_id, thread_id)) from runs where thread_id like 'thr_group_%'",
    )
    .fetch_one(&stack.app.db)
    .await
    .unwrap();
    assert_eq!((runs, threads), (64, 64));
    let (_, theirs) = stack.app.call_as(&other, Method::GET, "/v1/runs?limit=100", None).await;
    assert_eq!(theirs["pagination"]["total"], 32, "each run is in its caller's workspace");
}
