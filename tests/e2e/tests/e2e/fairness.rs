use reqwest::{Method, StatusCode};
use runq_e2e::{Env, MockConfig, MockServer, Service, TestApp};
use serde_json::{Value, json};

/// Two APIs and two workers (16 runs at a time each, so worker slots are what runs compete for)
/// on one database and Redis prefix, all in the test process. Bootstrapped workspaces are on the `free`
/// plan, whose default rate limit these bursts and polls would exceed.
async fn two_of_each() -> (TestApp, TestApp, MockServer, Vec<Service>) {
    let env = Env::new().await.with("RUNQ_WORKER_CONCURRENCY", "16").with("RUNQ_PLAN_FREE_LIMIT", "1000000");
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let first = TestApp::spawn_with(env.clone()).await;
    let second = TestApp::spawn_with(env.clone()).await;
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(env.start_worker().await.0);
    }
    (first, second, mock, workers)
}

async fn wait_done(app: &TestApp, key: &str, operation: &str) -> Value {
    for _ in 0..1200 {
        let (_, op) = app.call_as(key, Method::GET, &format!("/v1/operations/{operation}"), None).await;
        if op["status"] == "succeeded" || op["status"] == "failed" {
            return op;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("operation {operation} did not finish");
}

#[tokio::test]
async fn a_concurrency_cap_holds_across_workers_and_every_run_completes() {
    let (first, second, mock, _workers) = two_of_each().await;
    let key = first.bootstrap_workspace("capped").await;
    first.deployed_agent_with(&key, "bot", "openai", &mock.base_url(), json!({})).await;
    let cap = 3;
    sqlx::query("update workspaces set concurrency_limit = $1 where name = 'capped'")
        .bind(cap)
        .execute(&first.db)
        .await
        .unwrap();

    // a burst of 10 × cap runs, half through each API
    let mut operations = Vec::new();
    for i in 0..10 * cap {
        let app = if i % 2 == 0 { &first } else { &second };
        let body = json!({"agent_id": "bot", "prompt": format!("run {i} [[mock tokens=5 delay=20]]"), "async": true});
        let (status, op) = app.call_as(&key, Method::POST, "/v1/run", Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        operations.push(op["operation_id"].as_str().unwrap().to_owned());
    }
    for op in &operations {
        assert_eq!(wait_done(&first, &key, op).await["status"], "succeeded");
    }
    let stats = mock.stats();
    let provider = &stats.per_key["sk-test"];
    eprintln!("cap {cap}: {} requests, at most {} at once", provider.requests, provider.max_in_flight);
    assert_eq!(provider.requests, 10 * cap as u64);
    assert!(
        provider.max_in_flight <= cap as u64,
        "{} runs were in flight at once with a cap of {cap}",
        provider.max_in_flight
    );
    assert!(provider.max_in_flight >= 2, "the runs did overlap, so the cap was what held them");
}

#[tokio::test]
async fn one_workspaces_big_batch_does_not_hold_back_another_workspaces_run() {
    let (first, second, mock, _workers) = two_of_each().await;
    let a = first.bootstrap_workspace("busy").await;
    let b = first.bootstrap_workspace("quiet").await;
    first.deployed_agent_with(&a, "bulk", "openai", &mock.base_url(), json!({})).await;
    first.deployed_agent_with(&b, "solo", "openai", &mock.base_url(), json!({})).await;

    let batch: Vec<Value> =
        (0..2000).map(|i| json!({"query": format!("item {i} [[mock tokens=3 delay=2]]")})).collect();
    let (status, op) =
        first.call_as(&a, Method::POST, "/v1/run", Some(json!({"agent_id": "bulk", "batch": batch}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{op}");
    let operation = op["operation_id"].as_str().unwrap().to_owned();

    let (status, run) =
        second.call_as(&b, Method::POST, "/v1/run", Some(json!({"agent_id": "solo", "prompt": "me first?"}))).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "completed");

    let (_, progress) = first.call_as(&a, Method::GET, &format!("/v1/operations/{operation}"), None).await;
    let done = progress["progress"]["completed"].as_i64().unwrap() + progress["progress"]["failed"].as_i64().unwrap();
    eprintln!("the other workspace's run finished when the batch had {done} of 2000 done");
    assert!(done < 1000, "B's run waited for half of A's batch ({done} done)");
    assert_eq!(wait_done(&first, &a, &operation).await["progress"]["completed"], 2000);
}
