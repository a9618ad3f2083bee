//! Workspace isolation, route by route: every operation of `/openapi.json` that takes an id in its
//! path is called with another workspace's key and the first workspace's ids. Each answer must be
//! 403 or 404 and carry nothing of the first workspace, and nothing of it may change.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use runq_e2e::Stack;
use serde_json::{Value, json};

/// A tool that needs approval; the run below pauses on it, so its URL is never called.
const TOOL: &str = "alpha_lookup";
const PAUSING_PROMPT: &str = r#"alpha weather? [[mock tool=alpha_lookup args={"city":"Paris"}]]"#;

/// What workspace A holds: one object of every kind a path can name.
struct WorkspaceA {
    /// `{param}` fillers by object kind.
    ids: BTreeMap<&'static str, String>,
    /// Every id and name of A; none may appear in an answer to B (unless B sent it itself).
    secrets: Vec<String>,
}

impl WorkspaceA {
    fn id(&self, kind: &str) -> &str {
        self.ids.get(kind).unwrap_or_else(|| panic!("no {kind} in workspace A"))
    }
}

async fn created(stack: &Stack, path: &str, body: Value) -> Value {
    let (status, object) = stack.app.call(Method::POST, path, Some(body)).await;
    assert!(status.is_success(), "{path}: {status} {object}");
    object
}

fn str_of(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_else(|| panic!("no {key} in {value}")).to_owned()
}

/// Fills workspace A (the admin key's) with an agent, its version, provider and model, a
/// thread, a finished run, an operation, a session, a tool, an approval waiting on it, a webhook
/// and a key.
async fn populate(stack: &Stack) -> WorkspaceA {
    let tool = json!({"name": TOOL, "description": "alpha tool", "url": "http://127.0.0.1:9/alpha-tool",
        "parameters": {"type": "object"}, "requires_approval": true});
    let tool = created(stack, "/v1/tools", tool).await;
    let agent = stack.agent("alpha-agent", "openai", json!({"tools": [TOOL], "system_prompt": "alpha prompt"})).await;
    let (_, versions) = stack.app.call(Method::GET, "/v1/agents/alpha-agent/versions", None).await;
    let version = versions["data"][0].clone();
    let (_, providers) = stack.app.call(Method::GET, "/v1/providers", None).await;
    let provider = providers["data"][0].clone();
    let model = created(
        stack,
        &format!("/v1/llm-providers/{}/models", str_of(&provider, "id")),
        json!({"model_id": "alpha-model", "display_name": "Alpha Model"}),
    )
    .await;
    let thread =
        created(stack, "/v1/threads", json!({"thread_id": "thr_alpha_thread", "metadata": {"alpha": 1}})).await;
    let (status, run) = stack
        .run(json!({"agent_id": "alpha-agent", "prompt": "alpha hello", "thread_id": "thr_alpha_thread", "stream": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let (status, operation) =
        stack.run(json!({"agent_id": "alpha-agent", "prompt": "alpha later", "async": true})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{operation}");
    let operation_id = str_of(&operation, "operation_id");
    stack.wait_operation(&operation_id).await;
    let session = created(stack, "/v1/agents/alpha-agent/sessions", json!({"title": "alpha session"})).await;
    let webhook =
        created(stack, "/v1/webhooks", json!({"url": "http://127.0.0.1:9/alpha-hook", "events": ["run.cancelled"]}))
            .await;
    let key = created(stack, "/v1/api-keys", json!({"name": "alpha-key", "scopes": ["run"]})).await;
    let (_, workspace) = stack.app.call(Method::GET, "/v1/workspace", None).await;

    let paused = stack
        .sse(stack.app.with_key(Method::POST, "/v1/run", stack.app.admin_key()).json(&json!({
            "agent_id": "alpha-agent", "prompt": PAUSING_PROMPT, "stream": true})))
        .await;
    assert!(paused.text.contains("tool-approval-request"), "{}", paused.text);
    let (_, approvals) = stack.app.call(Method::GET, "/v1/approvals?status=pending", None).await;
    let approval = approvals["data"][0].clone();

    let webhook_id = webhook["id"].as_str().or(webhook["endpoint"]["id"].as_str()).expect("webhook id").to_owned();
    let ids = BTreeMap::from([
        ("agent", str_of(&agent, "id")),
        ("slug", str_of(&agent, "slug")),
        ("version", str_of(&version, "id")),
        ("provider", str_of(&provider, "id")),
        ("model", str_of(&model, "id")),
        ("thread", str_of(&thread, "id")),
        ("run", str_of(&run, "id")),
        ("operation", operation_id),
        ("session", str_of(&session, "id")),
        ("tool", str_of(&tool, "id")),
        ("approval", str_of(&approval, "id")),
        ("webhook", webhook_id),
        ("key", str_of(&key, "id")),
        ("workspace", str_of(&workspace, "id")),
    ]);
    let mut secrets: Vec<String> = ids.values().cloned().collect();
    secrets.extend(
        [
            "alpha-agent-provider",
            "alpha prompt",
            "alpha hello",
            "alpha later",
            "alpha session",
            "alpha-hook",
            "alpha-key",
        ]
        .map(str::to_owned),
    );
    secrets.extend([TOOL.to_owned(), "Alpha Model".to_owned(), str_of(&key, "key"), str_of(&run, "output")]);
    WorkspaceA { ids, secrets }
}

/// The object kind a path parameter names, by the resource the path is under.
fn kind_of(path: &str, param: &str) -> Option<&'static str> {
    let resource = path.trim_start_matches("/v1/").split('/').next()?;
    Some(match (resource, param) {
        ("agents", "id") => "agent",
        ("agents", "version_id") => "version",
        ("agents", "session_id") => "session",
        ("api-keys", "id") | ("auth", "id") => "key",
        ("approvals", "id") => "approval",
        ("llm-providers", "id") | ("providers", "id") => "provider",
        ("operations", "id") => "operation",
        ("runs", "id") => "run",
        ("threads", "id") => "thread",
        ("tools", "id") => "tool",
        ("webhooks", "id") => "webhook",
        ("workspaces", "id") => "workspace",
        _ => return None,
    })
}

/// A body the operation would accept from A, so a refusal cannot come from the body alone.
fn body_for(method: &Method, path: &str, a: &WorkspaceA) -> Option<Value> {
    if *method == Method::GET || *method == Method::DELETE {
        return None;
    }
    Some(match path {
        "/v1/agents/{id}" => json!({"description": "beta"}),
        "/v1/agents/{id}/capabilities" => json!({"capability_ids": []}),
        "/v1/agents/{id}/deploy" => json!({"version_id": a.id("version")}),
        "/v1/agents/{id}/invoke" => json!({"query": "beta"}),
        "/v1/agents/{id}/sessions" => json!({"title": "beta"}),
        "/v1/agents/{id}/sessions/{session_id}/messages" => json!({"role": "user", "content": {"text": "beta"}}),
        "/v1/agents/{id}/versions" => json!({"provider": a.id("provider"), "model": "beta"}),
        "/v1/api-keys/{id}" => json!({"rate_limit_per_hour": 1}),
        "/v1/approvals/{id}/approve" | "/v1/approvals/{id}/deny" => json!({"reason": "beta"}),
        "/v1/llm-providers/{id}/models" => json!({"model_id": "beta-model"}),
        "/v1/tools/{id}" => json!({"description": "beta"}),
        "/v1/workspaces/{id}" => json!({"plan": "free", "rate_limit_per_hour": 1}),
        _ => json!({}),
    })
}

/// One call of the walk.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
}

/// Every operation with a path parameter, filled with A's ids: agents once by id, once by slug,
/// and, where a path names more than the agent, once more under B's own agent (`beta-agent`), so
/// the inner id (a version, a session) is the one checked.
fn calls(openapi: &Value, a: &WorkspaceA) -> Vec<Call> {
    let mut calls = Vec::new();
    for (template, operations) in openapi["paths"].as_object().expect("paths") {
        if !template.contains('{') {
            continue;
        }
        for (method, _) in operations.as_object().expect("operations") {
            let method: Method = method.to_uppercase().parse().expect("method");
            // B's own agent with A's version or session (or A's version or provider in the body)
            let inner = template.matches('{').count() > 1
                || template.ends_with("/deploy")
                || (template.ends_with("/versions") && method == Method::POST);
            let agent_forms: &[&str] = match (template.starts_with("/v1/agents/"), inner) {
                (true, true) => &["agent", "slug", "own"],
                (true, false) => &["agent", "slug"],
                (false, _) => &["agent"],
            };
            for agent_form in agent_forms {
                let mut path = template.clone();
                while let Some(start) = path.find('{') {
                    let end = start + path[start..].find('}').expect("closing brace");
                    let param = &path[start + 1..end];
                    let kind = kind_of(template, param).unwrap_or_else(|| {
                        panic!("{method} {template}: which object does `{param}` name? add it here")
                    });
                    let kind = if kind == "agent" { agent_form } else { &kind };
                    let filler = if *kind == "own" { "beta-agent" } else { a.id(kind) };
                    path.replace_range(start..=end, filler);
                }
                calls.push(Call { body: body_for(&method, template, a), method: method.clone(), path });
            }
        }
    }
    calls
}

/// Workspace A with one of everything, and workspace B (its key, and an agent of its own).
async fn two_workspaces() -> (Stack, WorkspaceA, String) {
    let stack = Stack::start().await;
    let a = populate(&stack).await;
    let b_key = stack.app.bootstrap_workspace("beta").await;
    stack.app.deployed_agent(&b_key, "beta-agent", "openai", &stack.mock.base_url()).await;
    (stack, a, b_key)
}

#[tokio::test]
async fn another_workspace_gets_403_or_404_and_nothing_of_ours_on_every_route_with_an_id() {
    let (stack, a, b_key) = two_workspaces().await;
    let (_, openapi) = stack.app.call(Method::GET, "/openapi.json", None).await;
    let calls = calls(&openapi, &a);
    assert!(calls.len() >= 40, "the walk covers every operation with an id: {}", calls.len());

    // the ids are real: A reads each of its objects (streams aside)
    for call in calls.iter().filter(|c| c.method == Method::GET && !c.path.ends_with("/events")) {
        if call.path.ends_with("/stream") || call.path.contains("/beta-agent/") {
            continue;
        }
        let (status, body) = stack.app.call(Method::GET, &call.path, None).await;
        assert_eq!(status, StatusCode::OK, "A reads its own GET {}: {body}", call.path);
    }

    let mut leaks = Vec::new();
    for call in &calls {
        let mut request = stack
            .app
            .with_key(call.method.clone(), &call.path, &b_key)
            .header("accept", "application/json")
            .timeout(Duration::from_secs(10));
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let sent = format!("{} {}", call.path, call.body.as_ref().map(Value::to_string).unwrap_or_default());
        let answer = match request.send().await {
            Ok(res) => (res.status(), res.text().await.unwrap_or_default()),
            Err(e) => {
                leaks.push(format!("{} {}: no complete answer within 10 s ({e})", call.method, call.path));
                continue;
            }
        };
        let (status, text) = answer;
        if status != StatusCode::FORBIDDEN && status != StatusCode::NOT_FOUND {
            leaks.push(format!("{} {} → {status}: {text}", call.method, call.path));
        }
        // B may hear back what it sent itself (an id in its own path), nothing else of A
        let seen: Vec<&String> =
            a.secrets.iter().filter(|s| text.contains(s.as_str()) && !sent.contains(s.as_str())).collect();
        if !seen.is_empty() {
            leaks.push(format!("{} {} → {status} carries {seen:?}: {text}", call.method, call.path));
        }
    }
    assert!(leaks.is_empty(), "{} of {} calls leak across workspaces:\n{}", leaks.len(), calls.len(), leaks.join("\n"));

    // and nothing of A changed
    let (_, agent) = stack.app.call(Method::GET, &format!("/v1/agents/{}", a.id("agent")), None).await;
    assert_eq!(agent["archived"], false, "{agent}");
    assert_eq!(agent["deployed_version_id"], a.id("version"), "{agent}");
    assert!(agent["description"] != "beta", "{agent}");
    let (status, _) = stack.app.call(Method::GET, &format!("/v1/tools/{}", a.id("tool")), None).await;
    assert_eq!(status, StatusCode::OK, "the tool is still there");
    let (_, approval) = stack.app.call(Method::GET, &format!("/v1/approvals/{}", a.id("approval")), None).await;
    assert_eq!(approval["status"], "pending", "{approval}");
    let (_, keys) = stack.app.call(Method::GET, "/v1/api-keys", None).await;
    assert!(keys.to_string().contains(a.id("key")), "the key is still there: {keys}");
    let (_, hooks) = stack.app.call(Method::GET, "/v1/webhooks", None).await;
    assert!(hooks.to_string().contains(a.id("webhook")), "the webhook is still there: {hooks}");
    let (_, workspace) = stack.app.call(Method::GET, "/v1/workspace", None).await;
    assert!(workspace["rate_limit_per_hour"] != 1, "{workspace}");
}

#[tokio::test]
async fn another_workspace_cannot_reach_our_objects_through_bodies_and_query_strings() {
    let (stack, a, b_key) = two_workspaces().await;
    let refused = [
        (Method::POST, "/v1/run".to_owned(), json!({"agent_id": a.id("agent"), "prompt": "beta", "stream": false})),
        (Method::POST, "/v1/run".to_owned(), json!({"agent_id": a.id("slug"), "prompt": "beta", "stream": false})),
        (Method::POST, "/v1/run".to_owned(), json!({"batch": [{"agent_id": a.id("agent"), "prompt": "beta"}]})),
        (
            Method::POST,
            "/v1/chat/completions".to_owned(),
            json!({"model": a.id("agent"), "messages": [{"role": "user", "content": "beta"}]}),
        ),
        (Method::POST, "/v1/agents/beta-agent/deploy".to_owned(), json!({"version_id": a.id("version")})),
        (
            Method::POST,
            "/v1/agents/beta-agent/versions".to_owned(),
            json!({"provider": a.id("provider"), "model": "m"}),
        ),
        (
            Method::POST,
            "/v1/agents/beta-agent/versions".to_owned(),
            json!({"provider": "alpha-agent-provider", "model": "m"}),
        ),
        (Method::POST, "/v1/agents".to_owned(), json!({"name": "beta two", "default_model_id": a.id("model")})),
        (Method::POST, "/v1/agents".to_owned(), json!({"name": "beta three", "model": "alpha-model"})),
    ];
    let mut leaks = Vec::new();
    for (method, path, body) in refused {
        let (status, answer) = stack.app.call_as(&b_key, method.clone(), &path, Some(body.clone())).await;
        let text = answer.to_string();
        let sent = body.to_string();
        let seen: Vec<&String> =
            a.secrets.iter().filter(|s| text.contains(s.as_str()) && !sent.contains(s.as_str())).collect();
        if !status.is_client_error() || !seen.is_empty() {
            leaks.push(format!("{method} {path} {body} → {status} carries {seen:?}: {text}"));
        }
    }
    let listings = [
        format!("/v1/runs?agent_id={}", a.id("agent")),
        format!("/v1/runs?thread_id={}", a.id("thread")),
        format!("/v1/llm-models?provider_id={}", a.id("provider")),
        format!("/v1/agents/beta-agent/sessions/{}/events?run_id={}", a.id("session"), a.id("run")),
        "/v1/runs".to_owned(),
        "/v1/approvals".to_owned(),
        "/v1/agents".to_owned(),
        "/v1/tools".to_owned(),
        "/v1/providers".to_owned(),
        "/v1/llm-providers".to_owned(),
        "/v1/llm-models".to_owned(),
        "/v1/models".to_owned(),
        "/v1/api-keys".to_owned(),
        "/v1/auth/api-keys".to_owned(),
        "/v1/webhooks".to_owned(),
        "/v1/queue".to_owned(),
        "/v1/workspace".to_owned(),
    ];
    for path in listings {
        let res =
            stack.app.with_key(Method::GET, &path, &b_key).header("accept", "application/json").send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let seen: Vec<&String> =
            a.secrets.iter().filter(|s| text.contains(s.as_str()) && !path.contains(s.as_str())).collect();
        if status.is_server_error() || !seen.is_empty() {
            leaks.push(format!("GET {path} → {status} carries {seen:?}: {text}"));
        }
    }

    // a run on B's agent naming A's thread id does not continue A's conversation
    let (status, run) = stack
        .app
        .call_as(
            &b_key,
            Method::POST,
            "/v1/run",
            Some(json!({"agent_id": "beta-agent", "prompt": "beta", "thread_id": a.id("thread"), "stream": false})),
        )
        .await;
    let seen: Vec<&String> =
        a.secrets.iter().filter(|s| run.to_string().contains(s.as_str()) && *s != a.id("thread")).collect();
    if status.is_server_error() || !seen.is_empty() {
        leaks.push(format!("POST /v1/run on A's thread → {status} carries {seen:?}: {run}"));
    }
    let path = format!("/v1/threads/{}/messages", a.id("thread"));
    let (_, messages) = stack.app.call_as(&b_key, Method::GET, &path, None).await;
    if messages.to_string().contains("alpha hello") {
        leaks.push(format!("GET {path} as B shows A's messages: {messages}"));
    }
    let (_, mine) = stack.app.call(Method::GET, &path, None).await;
    assert!(!mine.to_string().contains("\"beta\""), "B's run did not join A's thread: {mine}");
    assert!(leaks.is_empty(), "{} leaks across workspaces:\n{}", leaks.len(), leaks.join("\n"));
}
