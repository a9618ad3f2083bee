use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use runq_e2e::{Env, TestApp, assert_envelope};
use serde_json::{Value, json};

/// A response read whole: status, headers and JSON body.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn number(&self, name: &str) -> u64 {
        self.header(name).unwrap_or_else(|| panic!("{name} is missing: {:?}", self.headers)).parse().unwrap()
    }

    fn remaining(&self) -> u64 {
        self.number("x-ratelimit-remaining")
    }

    fn is_unlimited(&self) -> bool {
        ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"].iter().all(|h| self.header(h).is_none())
    }
}

async fn send(app: &TestApp, key: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
    let mut req = app.with_key(method, path, key).header("accept", "application/json");
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    Reply { status, headers, body: res.json().await.unwrap_or(Value::Null) }
}

fn epoch_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Sleeps until just after the next window boundary (windows are aligned on the epoch), so a
/// short burst is counted in one window.
async fn at_window_start(window_secs: u64) {
    let window_ms = window_secs * 1000;
    let into = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 % window_ms;
    tokio::time::sleep(Duration::from_millis(window_ms - into + 50)).await;
}

async fn count_runs(app: &TestApp) -> i64 {
    sqlx::query_as::<_, (i64,)>("select count(*) from runs").fetch_one(&app.db).await.unwrap().0
}

/// Mints a key in the admin workspace with its own limit (only the admin key may).
async fn limited_key(app: &TestApp, limit: u32) -> String {
    let (status, created) = app
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(json!({"name": "limited", "scopes": ["run"], "rate_limit_per_hour": limit})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["rate_limit_per_hour"], limit);
    created["key"].as_str().unwrap().to_owned()
}

/// The id of the (only) key of a bootstrapped workspace.
async fn own_key_id(app: &TestApp, key: &str) -> String {
    let keys = send(app, key, Method::GET, "/v1/api-keys", None).await;
    assert_eq!(keys.status, StatusCode::OK, "{}", keys.body);
    keys.body["data"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_keys_budget_is_shared_by_every_api_process_and_refills_in_the_next_window() {
    const WINDOW: u64 = 3;
    let env = Env::new().await.with("RUNQ_RATE_LIMIT_WINDOW_SECS", &WINDOW.to_string());
    let first = TestApp::spawn_with(env.clone()).await;
    let second = TestApp::spawn_with(env.clone()).await;
    let key = limited_key(&first, 5).await;

    at_window_start(WINDOW).await;
    for (i, left) in [4, 3, 2, 1, 0].into_iter().enumerate() {
        let app = if i % 2 == 0 { &first } else { &second };
        let reply = send(app, &key, Method::GET, "/v1/tools", None).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {}", reply.body);
        assert_eq!(reply.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(reply.remaining(), left, "request {i} (API {})", i % 2 + 1);
        let reset = reply.number("x-ratelimit-reset");
        assert!(reset > epoch_secs() && reset <= epoch_secs() + WINDOW, "reset {reset} is the window's end");
    }

    let refused = send(&second, &key, Method::GET, "/v1/tools", None).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.body);
    assert_envelope(&refused.body, "rate_limited");
    assert_eq!(refused.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(refused.remaining(), 0);
    let retry_after = refused.number("retry-after");
    assert!((1..=WINDOW).contains(&retry_after), "Retry-After: {retry_after}");
    assert_eq!(refused.body["error"]["details"]["retry_after"], retry_after);
    // the other API refuses too: the budget is one
    assert_eq!(send(&first, &key, Method::GET, "/v1/tools", None).await.status, StatusCode::TOO_MANY_REQUESTS);

    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100)).await;
    for app in [&first, &second] {
        let reply = send(app, &key, Method::GET, "/v1/tools", None).await;
        assert_eq!(reply.status, StatusCode::OK, "a new window, a new budget: {}", reply.body);
    }
    assert_eq!(send(&first, &key, Method::GET, "/v1/tools", None).await.remaining(), 2);
}

#[tokio::test]
async fn a_free_workspace_gets_the_plan_default_until_an_admin_changes_its_plan_or_limits() {
    let app = TestApp::spawn().await;
    let key = app.bootstrap_workspace("acme").await;

    let own = send(&app, &key, Method::GET, "/v1/workspace", None).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    assert_eq!(own.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(own.remaining(), 99);
    assert_eq!(own.body["name"], "acme");
    assert_eq!(own.body["plan"], "free");
    assert_eq!(own.body["limits"], json!({"rate_limit_per_hour": 100, "window_secs": 3600, "concurrency_limit": null}));
    assert_eq!(own.body["usage"], json!({"requests_in_window": 1, "running": 0, "queued": 0}));
    let id = own.body["id"].as_str().unwrap().to_owned();

    // errors of a limited key carry the headers too
    let missing = send(&app, &key, Method::GET, "/v1/agents/ghost", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.remaining(), 98);

    let (status, changed) = app
        .call(Method::PATCH, &format!("/v1/workspaces/{id}"), Some(json!({"plan": "pro", "concurrency_limit": 4})))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!((&changed["plan"], &changed["concurrency_limit"]), (&json!("pro"), &json!(4)));
    let pro = send(&app, &key, Method::GET, "/v1/workspace", None).await;
    assert_eq!(pro.header("x-ratelimit-limit"), Some("1000"));
    assert_eq!(pro.remaining(), 997, "the window's count carries over a plan change");
    assert_eq!(pro.body["plan"], "pro");
    assert_eq!(pro.body["limits"]["rate_limit_per_hour"], 1000);
    assert_eq!(pro.body["limits"]["concurrency_limit"], 4);
    assert_eq!(pro.body["usage"]["requests_in_window"], 3);

    // a custom workspace limit beats the plan; a key's own limit beats both; null undoes each
    let patch = |path: String, body: Value| {
        let app = &app;
        async move {
            let (status, body) = app.call(Method::PATCH, &path, Some(body)).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            body
        }
    };
    patch(format!("/v1/workspaces/{id}"), json!({"rate_limit_per_hour": 50})).await;
    assert_eq!(send(&app, &key, Method::GET, "/v1/tools", None).await.header("x-ratelimit-limit"), Some("50"));
    let key_id = own_key_id(&app, &key).await;
    let record = patch(format!("/v1/api-keys/{key_id}"), json!({"rate_limit_per_hour": 7})).await;
    assert_eq!(record["rate_limit_per_hour"], 7);
    assert_eq!(send(&app, &key, Method::GET, "/v1/tools", None).await.header("x-ratelimit-limit"), Some("7"));
    patch(format!("/v1/api-keys/{key_id}"), json!({"rate_limit_per_hour": null})).await;
    let workspace = patch(format!("/v1/workspaces/{id}"), json!({"rate_limit_per_hour": null})).await;
    assert_eq!(workspace["rate_limit_per_hour"], Value::Null);
    assert_eq!(workspace["concurrency_limit"], 4, "fields left out are left alone");
    assert_eq!(send(&app, &key, Method::GET, "/v1/tools", None).await.header("x-ratelimit-limit"), Some("1000"));

    let (status, body) = app.call(Method::PATCH, &format!("/v1/workspaces/{id}"), Some(json!({"plan": "gold"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"]["field"], "plan", "{body}");
    let (status, body) =
        app.call(Method::PATCH, &format!("/v1/workspaces/{id}"), Some(json!({"rate_limit_per_hour": 0}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"]["field"], "rate_limit_per_hour", "{body}");
}

#[tokio::test]
async fn only_admin_keys_change_plans_and_limits_and_the_admin_key_is_not_limited() {
    let app = TestApp::spawn().await;
    let manager = app.bootstrap_workspace("acme").await;
    let own = send(&app, &manager, Method::GET, "/v1/workspace", None).await;
    let id = own.body["id"].as_str().unwrap().to_owned();
    let key_id = own_key_id(&app, &manager).await;

    let refusals = [
        (Method::PATCH, format!("/v1/workspaces/{id}"), json!({"plan": "enterprise"})),
        (Method::PATCH, format!("/v1/api-keys/{key_id}"), json!({"rate_limit_per_hour": 1_000_000})),
        (Method::POST, "/v1/api-keys".to_owned(), json!({"name": "x", "scopes": ["run"], "rate_limit_per_hour": 5})),
        (Method::POST, "/v1/api-keys".to_owned(), json!({"name": "x", "scopes": ["admin"]})),
    ];
    for (method, path, body) in refusals {
        let reply = send(&app, &manager, method.clone(), &path, Some(body)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}: {}", reply.body);
        assert_envelope(&reply.body, "forbidden");
        assert!(reply.header("x-ratelimit-limit").is_some(), "a counted request, refused or not");
    }
    let (plan, limit): (String, Option<i32>) =
        sqlx::query_as("select plan, rate_limit_per_hour from workspaces where name = 'acme'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((plan.as_str(), limit), ("free", None));
    let (keys,): (i64,) = sqlx::query_as("select count(*) from api_keys where rate_limit_per_hour is not null")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(keys, 0);

    // the operator's workspace is on enterprise: no limit, no headers, for its keys without one
    let admin = send(&app, app.admin_key(), Method::GET, "/v1/workspace", None).await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
    assert!(admin.is_unlimited(), "{:?}", admin.headers);
    assert_eq!(admin.body["plan"], "enterprise");
    assert_eq!(admin.body["limits"]["rate_limit_per_hour"], Value::Null);
    assert_eq!(admin.body["usage"]["requests_in_window"], Value::Null);
    for _ in 0..3 {
        assert!(send(&app, app.admin_key(), Method::GET, "/v1/tools", None).await.is_unlimited());
    }
    let run_key = app.create_key(&["run"]).await;
    assert!(send(&app, &run_key, Method::GET, "/v1/tools", None).await.is_unlimited());
}

#[tokio::test]
async fn a_batch_counts_as_one_request() {
    let app = TestApp::spawn().await;
    let key = app.bootstrap_workspace("acme").await;
    app.deployed_agent(&key, "bot", "openai", "http://127.0.0.1:9/v1").await;

    let before = send(&app, &key, Method::GET, "/v1/tools", None).await.remaining();
    let batch: Vec<Value> = (0..10).map(|i| json!({"query": format!("item {i}")})).collect();
    let reply = send(&app, &key, Method::POST, "/v1/run", Some(json!({"agent_id": "bot", "batch": batch}))).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.remaining(), before - 1);
    assert_eq!(count_runs(&app).await, 10);

    let after = send(&app, &key, Method::GET, "/v1/workspace", None).await;
    assert_eq!(after.remaining(), before - 2);
    assert_eq!(after.body["usage"]["requests_in_window"], 100 - (before - 2));
}

#[tokio::test]
async fn a_refused_request_records_no_run() {
    let app = TestApp::spawn().await;
    app.deployed_agent(app.admin_key(), "bot", "openai", "http://127.0.0.1:9/v1").await;
    let key = limited_key(&app, 2).await;
    let run = json!({"agent_id": "bot", "prompt": "hello", "async": true});

    for left in [1, 0] {
        let reply = send(&app, &key, Method::POST, "/v1/run", Some(run.clone())).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        assert_eq!(reply.remaining(), left);
    }
    assert_eq!(count_runs(&app).await, 2);

    let batch: Vec<Value> = (0..5).map(|i| json!({"query": format!("item {i}")})).collect();
    for body in [run, json!({"agent_id": "bot", "batch": batch})] {
        let refused = send(&app, &key, Method::POST, "/v1/run", Some(body)).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.body);
        assert_envelope(&refused.body, "rate_limited");
        assert!(refused.number("retry-after") >= 1);
        assert_eq!(refused.remaining(), 0);
    }
    assert_eq!(count_runs(&app).await, 2, "refused requests are not executed");
    let (operations,): (i64,) = sqlx::query_as("select count(*) from operations").fetch_one(&app.db).await.unwrap();
    assert_eq!(operations, 2);
}

#[tokio::test]
async fn requests_are_let_through_without_headers_while_redis_is_unreachable() {
    // nothing listens on port 9: every rate-limit check fails to reach Redis
    let env = Env::new().await.with("REDIS_URL", "redis://127.0.0.1:9").with("RUNQ_DEPENDENCY_TIMEOUT_MS", "300");
    let app = TestApp::spawn_with(env).await;
    let key = limited_key(&app, 1).await;
    for _ in 0..3 {
        let reply = send(&app, &key, Method::GET, "/v1/tools", None).await;
        assert_eq!(reply.status, StatusCode::OK, "fail open: {}", reply.body);
        assert!(reply.is_unlimited(), "no verdict, no headers: {:?}", reply.headers);
    }
}
