//! The web console: its files as served, the queue route it reads, and the console itself
//! driven in headless Chromium by `js/console.mjs` (playwright-core).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use runq_e2e::{EchoTool, Stack, TestApp, bin};
use serde_json::{Value, json};

/// Where the run page's screenshot goes: `target/console-run.png`.
fn screenshot_path() -> PathBuf {
    bin("runq-api").parent().and_then(|profile| profile.parent()).expect("target dir").join("console-run.png")
}

#[tokio::test]
async fn the_console_is_served_offline_from_the_binary() {
    let app = TestApp::spawn().await;
    let page = app.request(Method::GET, "/console").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"src="/console/app.js""#), "{html}");

    for (path, kind) in [("/console/app.js", "text/javascript"), ("/console/app.css", "text/css")] {
        let res = app.request(Method::GET, path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let body = res.text().await.unwrap();
        assert!(!body.contains("http://") && !body.contains("https://"), "{path} loads nothing from elsewhere");
    }
    let (_, openapi) = app.call(Method::GET, "/openapi.json", None).await;
    assert!(openapi["paths"].get("/console").is_none(), "a page, not an API route");
    assert!(openapi["paths"].get("/v1/queue").is_some());
}

#[tokio::test]
async fn the_queue_counts_the_workspaces_waiting_runs_and_their_oldest_wait() {
    // no worker: runs stay queued
    let app = TestApp::spawn().await;
    let (_, empty) = app.call(Method::GET, "/v1/queue", None).await;
    assert_eq!(empty, json!({"queued": 0, "running": 0, "oldest_queued_at": null, "oldest_wait_ms": null}));

    app.deployed_agent(app.admin_key(), "bot", "openai", "http://127.0.0.1:9/v1").await;
    for _ in 0..3 {
        let (status, body) =
            app.call(Method::POST, "/v1/run", Some(json!({"agent_id": "bot", "prompt": "hi", "async": true}))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let run_key = app.create_key(&["run"]).await;
    let (status, queue) = app.call_as(&run_key, Method::GET, "/v1/queue", None).await;
    assert_eq!(status, StatusCode::OK, "a run key reads the queue");
    assert_eq!((queue["queued"].as_i64(), queue["running"].as_i64()), (Some(3), Some(0)), "{queue}");
    assert!(queue["oldest_wait_ms"].as_i64().is_some_and(|ms| ms >= 0), "{queue}");

    let other = app.bootstrap_workspace("other").await;
    let (_, theirs) = app.call_as(&other, Method::GET, "/v1/queue", None).await;
    assert_eq!(theirs["queued"], 0, "another workspace's runs are not counted");
}

#[tokio::test]
async fn the_console_in_chromium_signs_in_streams_a_run_cancels_one_rolls_back_and_decides_approvals() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(std::path::Path::new(&chromium).exists(), "{chromium} is missing: make test installs Debian's chromium");
    let stack = Stack::start().await;
    stack.agent("bot", "openai", json!({"tools": ["current_time"]})).await;
    let (_, versions) = stack.app.call(Method::GET, "/v1/agents/bot/versions", None).await;
    let first = versions["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, second) = stack
        .app
        .call(
            Method::POST,
            "/v1/agents/bot/versions",
            Some(
                json!({"provider": "bot-provider", "model": "mock-model-2", "tools": ["current_time"], "deploy": true}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let tool = EchoTool::start().await;
    stack.approval_agent("asker", &tool).await;

    let screenshot = screenshot_path();
    let _ = std::fs::remove_file(&screenshot);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/js/console.mjs");
    let run = tokio::process::Command::new("node")
        .arg(script)
        .arg(&stack.app.base)
        .env("RUNQ_KEY", stack.app.admin_key())
        .env("SCREENSHOT", &screenshot)
        .env("ROLLBACK_TO", &first)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser script ends within 180 s")
        .expect("node must be installed (make test installs it and playwright-core)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(result["ok"], true, "{result:#}\n{stderr}");
    assert!(out.status.success());
    assert_eq!(result["steps"].as_array().map(Vec::len), Some(11), "{result:#}");
    assert_eq!(tool.calls(), 1, "the approved call ran, the denied one did not");

    let (_, agent) = stack.app.call(Method::GET, "/v1/agents/bot", None).await;
    assert_eq!(agent["deployed_version_id"], first.as_str(), "the rollback reached the server");
    let png = std::fs::read(&screenshot).expect("a screenshot of the run page");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
}
