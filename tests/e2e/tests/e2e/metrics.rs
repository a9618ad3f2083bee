//! Prometheus metrics and request logs: values move as runs happen, read through a parser of the
//! exposition format; the request id of a run's request shows up in the worker's log lines.
//!
//! An API and a worker in one process would share one metrics recorder and one log: the tests
//! that read what the worker's `/metrics` shows apart from the API's, or what a process logs,
//! spawn the binaries. The API-only tests run it in the test process.

use std::time::Duration;

use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue as Metric};
use reqwest::{Method, StatusCode};
use runq_e2e::{Env, MockConfig, MockServer, Service, SseReader, TestApp, eventually};
use runq_shared::db::runs;
use runq_shared::id::{RunId, WorkspaceId};
use runq_shared::queue::{self, Job, Opening, QueueKeys};
use serde_json::json;
use tokio::process::Child;

/// An API process, a mock provider, and a worker process serving `/metrics`, each log kept:
/// spawned, so that each `/metrics` shows its own process's values alone.
struct Observed {
    app: TestApp,
    mock: MockServer,
    _worker: Child,
    worker_metrics: String,
}

impl Observed {
    async fn start(env: Env) -> Self {
        let mock = MockServer::start(MockConfig::default()).await.expect("mock provider");
        let app = TestApp::spawn_binary(env.with("RUNQ_WORKER_METRICS_BIND", "127.0.0.1:0")).await;
        let (worker, addr, _) = app.env.spawn_logged("runq-worker").await;
        Self { app, mock, _worker: worker, worker_metrics: format!("http://{addr}/metrics") }
    }

    async fn agent(&self, slug: &str) {
        self.app.deployed_agent(self.app.admin_key(), slug, "openai", &self.mock.base_url()).await;
    }

    async fn api(&self) -> Scrape {
        scrape(&self.app.client, &format!("{}/metrics", self.app.base)).await
    }

    async fn worker(&self) -> Scrape {
        scrape(&self.app.client, &self.worker_metrics).await
    }
}

type Scrape = MetricsExposition<PrometheusType, Metric>;

/// `GET url` (no key) and the parsed exposition.
async fn scrape(client: &reqwest::Client, url: &str) -> Scrape {
    let res = client.get(url).send().await.expect("scrape");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = res.text().await.expect("body");
    openmetrics_parser::prometheus::parse_prometheus(&text).unwrap_or_else(|e| panic!("{e:?} in:\n{text}"))
}

/// Every label set of a family: `(name, value)` pairs.
fn label_sets(scrape: &Scrape, name: &str) -> Vec<Vec<(String, String)>> {
    let Some(family) = scrape.families.get(name) else { return Vec::new() };
    family
        .iter_samples()
        .map(|s| {
            let set = s.get_labelset().expect("a sample of a family");
            set.iter_names().cloned().zip(set.iter_values().cloned()).collect()
        })
        .collect()
}

/// Values of the samples of `name` whose labels include `labels`.
fn matching<'a>(scrape: &'a Scrape, name: &str, labels: &'a [(&str, &str)]) -> Vec<&'a Metric> {
    let Some(family) = scrape.families.get(name) else { return Vec::new() };
    family
        .iter_samples()
        .filter(|s| {
            let set = s.get_labelset().expect("a sample of a family");
            labels.iter().all(|(k, v)| set.get_label_value(k) == Some(*v))
        })
        .map(|s| &s.value)
        .collect()
}

/// The value of a counter or gauge (summed over label sets matching `labels`; 0 when absent).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(scrape, name, labels)
        .into_iter()
        .map(|v| match v {
            Metric::Counter(c) => c.value.as_f64(),
            Metric::Gauge(n) | Metric::Unknown(n) => n.as_f64(),
            other => panic!("{name} is not a counter or gauge: {other:?}"),
        })
        .fold(0.0, |a, b| a + b)
}

/// How many observations a histogram holds, over label sets matching `labels`.
fn observations(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(scrape, name, labels)
        .into_iter()
        .map(|v| match v {
            #[allow(clippy::cast_precision_loss)]
            Metric::Histogram(h) => h.count.unwrap_or_default() as f64,
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .fold(0.0, |a, b| a + b)
}

#[tokio::test]
async fn metrics_count_a_completed_run_on_the_worker_and_its_request_on_the_api() {
    let stack = Observed::start(Env::new().await).await;
    stack.agent("bot").await;
    let completed = [("status", "completed")];
    let before = stack.worker().await;

    let (status, run) = stack.app.call(Method::POST, "/v1/run", Some(json!({"agent_id": "bot", "prompt": "hi"}))).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "completed");

    // the worker counts a run before it announces the end the sync caller waited for
    let after = stack.worker().await;
    assert_eq!(value(&after, "runq_runs_total", &completed), value(&before, "runq_runs_total", &completed) + 1.0);
    assert!(value(&after, "runq_runs_started_total", &[]) >= 1.0);
    assert!(value(&after, "runq_provider_requests_total", &[("provider_kind", "openai"), ("outcome", "ok")]) >= 1.0);
    assert!(observations(&after, "runq_queue_wait_seconds", &[]) >= 1.0);
    assert!(observations(&after, "runq_time_to_first_token_seconds", &[]) >= 1.0);
    assert!(observations(&after, "runq_run_duration_seconds", &[]) >= 1.0);
    // the run's slot is given back just after its end is announced
    let idle = eventually(Duration::from_secs(10), || async {
        let now = stack.worker().await;
        let idle = value(&now, "runq_runs_in_flight", &[]) == 0.0
            && value(&now, "runq_worker_slots", &[("state", "used")]) == 0.0;
        idle.then_some(now)
    })
    .await
    .expect("the worker went back to idle");
    assert!(value(&idle, "runq_worker_slots", &[("state", "free")]) >= 1.0);

    // the API labels requests by route template, not by the raw path
    let run_id = run["id"].as_str().unwrap();
    let (status, _) = stack.app.call(Method::GET, &format!("/v1/runs/{run_id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let api = stack.api().await;
    assert!(value(&api, "runq_http_requests_total", &[("route", "/v1/run"), ("status", "200")]) >= 1.0);
    let routes = label_sets(&api, "runq_http_requests_total");
    let by_id = [("route", "/v1/runs/{id}"), ("status", "200")];
    assert_eq!(value(&api, "runq_http_requests_total", &by_id), 1.0, "{routes:?}");
    assert!(observations(&api, "runq_http_request_duration_seconds", &[("route", "/v1/runs/{id}")]) >= 1.0);
    let labels: Vec<_> = api.families.keys().flat_map(|name| label_sets(&api, name)).flatten().collect();
    assert!(!labels.iter().any(|(_, v)| v.contains(run_id)), "no id is a label value: {labels:?}");
}

#[tokio::test]
async fn the_open_streams_gauge_rises_with_a_stream_and_falls_when_it_closes() {
    let stack = Observed::start(Env::new().await).await;
    stack.agent("bot").await;
    let open = |scrape: &Scrape| value(scrape, "runq_sse_streams_open", &[]);
    assert_eq!(open(&stack.api().await), 0.0);

    // a slow answer keeps the stream open while the gauge is read
    let body = json!({"agent_id": "bot", "prompt": "[[mock tokens=400 delay=50]]", "stream": true});
    let mut reader =
        SseReader::open(stack.app.with_key(Method::POST, "/v1/run", stack.app.admin_key()).json(&body)).await;
    assert_eq!(reader.status, StatusCode::OK);
    assert!(reader.read_events(2, Duration::from_secs(30)).await, "the stream started");
    assert_eq!(open(&stack.api().await), 1.0);

    drop(reader);
    let closed =
        eventually(Duration::from_secs(30), || async { (open(&stack.api().await) == 0.0).then_some(()) }).await;
    assert!(closed.is_some(), "the gauge fell back to 0 once the client went away");
}

#[tokio::test]
async fn queue_depth_counts_jobs_waiting_while_no_worker_runs() {
    let app = TestApp::spawn().await;
    // no worker: the runs stay queued (the provider is never called)
    app.deployed_agent(app.admin_key(), "bot", "openai", "http://127.0.0.1:9/v1").await;
    for _ in 0..3 {
        let (status, body) =
            app.call(Method::POST, "/v1/run", Some(json!({"agent_id": "bot", "prompt": "hi", "async": true}))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let url = format!("{}/metrics", app.base);
    // the measurement is cached for a few seconds: wait for one taken after the pushes
    let scraped = eventually(Duration::from_secs(30), || async {
        let scraped = scrape(&app.client, &url).await;
        (value(&scraped, "runq_queue_depth", &[]) == 3.0).then_some(scraped)
    })
    .await
    .expect("runq_queue_depth reached 3");
    assert!(value(&scraped, "runq_queue_oldest_age_seconds", &[]) > 0.0);
}

#[tokio::test]
async fn metrics_need_no_key_and_are_not_rate_limited() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        let res = app.request(Method::GET, "/metrics").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("x-ratelimit-limit").is_none());
    }
}

/// Spawned: the API's and the worker's log lines are read from each process's stderr.
#[tokio::test]
async fn request_logs_name_the_route_and_the_worker_logs_the_request_id_of_the_run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = Env::new().await.with("RUNQ_LOG_FORMAT", "json");
    let mock = MockServer::start(MockConfig::default()).await.expect("mock provider");
    let (api, addr, api_logs) = env.spawn_logged("runq-api").await;
    let app = TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        db: sqlx::PgPool::connect(&env.database_url).await.expect("test db"),
        env: env.clone(),
        api: Service::Spawned(api),
    };
    app.deployed_agent(app.admin_key(), "bot", "openai", &mock.base_url()).await;

    let request_id = format!("req-e2e-{}", uuid::Uuid::now_v7().simple());
    let res = app
        .with_key(Method::POST, "/v1/run", app.admin_key())
        .header("x-request-id", &request_id)
        .json(&json!({"agent_id": "bot", "prompt": "hi", "async": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    let line = api_logs
        .wait_for(Duration::from_secs(10), |line| line.contains("request finished") && line.contains(&request_id))
        .await
        .expect("the API logged the request");
    let line: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["method"], "POST", "{line}");
    assert_eq!(line["route"], "/v1/run", "{line}");
    assert_eq!(line["status"], 202, "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert!(line["workspace_id"].as_str().is_some_and(|w| w.starts_with("wsp_")), "{line}");

    // the worker starts after the run was queued; its lines of that run carry the request id
    let (_worker, worker_logs) = {
        let env = env.with("RUNQ_WORKER_METRICS_BIND", "127.0.0.1:0");
        let (worker, _, logs) = env.spawn_logged("runq-worker").await;
        (worker, logs)
    };
    let finished = worker_logs
        .wait_for(Duration::from_secs(30), |line| line.contains("run finished") && line.contains(&request_id))
        .await;
    assert!(finished.is_some(), "the worker's `run finished` line carries the request id");
}

/// A sync run of `bot` that completes, and its JSON.
async fn completed_run(stack: &Observed, prompt: &str) -> serde_json::Value {
    let body = json!({"agent_id": "bot", "prompt": prompt});
    let (status, run) = stack.app.call(Method::POST, "/v1/run", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "completed", "{run}");
    run
}

/// Pushes `job` on the stack's queue, as the API or the reconciler would.
async fn push_job(stack: &Observed, job: Job) {
    let client = redis::Client::open(runq_e2e::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    queue::push(&mut redis, &QueueKeys::new(&stack.app.env.redis_prefix), &[job]).await.unwrap();
}

/// The worker's count of first requests sent while claiming, by `outcome`.
async fn openings(stack: &Observed, outcome: &str) -> f64 {
    value(&stack.worker().await, "runq_provider_openings_total", &[("outcome", outcome)])
}

#[tokio::test]
async fn a_new_runs_first_request_goes_out_while_it_is_claimed_and_is_made_once() {
    let stack = Observed::start(Env::new().await).await;
    stack.agent("bot").await;
    // the first run of a version tells the worker the version's provider, model and tools
    completed_run(&stack, "hi").await;
    assert_eq!(openings(&stack, "used").await, 0.0);

    stack.mock.reset();
    let run = completed_run(&stack, "[[mock tokens=3]] again").await;
    assert_eq!(run["output"], "tok0 tok1 tok2", "{run}");
    assert_eq!(openings(&stack, "used").await, 1.0);
    let stats = stack.mock.stats();
    assert_eq!((stats.requests, stats.disconnected), (1, 0), "one provider request for the run: {stats:?}");
}

#[tokio::test]
async fn a_first_request_sent_for_a_job_whose_run_cannot_be_claimed_is_dropped() {
    let stack = Observed::start(Env::new().await).await;
    stack.agent("bot").await;
    let run = completed_run(&stack, "hi").await;

    // a duplicate job of the finished run, carrying its opening: the claim fails
    let id = run["id"].as_str().unwrap();
    let run_id: RunId = id.parse().unwrap();
    let workspace: WorkspaceId = sqlx::query_scalar("select workspace_id from runs where id = $1")
        .bind(run_id)
        .fetch_one(&stack.app.db)
        .await
        .unwrap();
    let mut job = Job::new(run_id, workspace, None);
    job.opening = Some(Opening {
        version: serde_json::from_value(run["version_id"].clone()).unwrap(),
        messages: vec![runq_shared::chat::ChatMessage::user("[[mock ttft=2000]] hi")],
        parameters: serde_json::Map::new(),
    });
    stack.mock.reset();
    push_job(&stack, job).await;

    // the request is dropped with the claim: if it reached the provider, the provider saw it go
    let dropped = eventually(Duration::from_secs(10), || async {
        let stats = stack.mock.stats();
        let gone = stats.in_flight == 0 && stats.disconnected == stats.requests;
        (openings(&stack, "unclaimed").await == 1.0 && gone).then_some(())
    })
    .await;
    assert!(dropped.is_some(), "the early request was dropped: {:?}", stack.mock.stats());
    assert_eq!(stack.mock.stats().completed, 0, "{:?}", stack.mock.stats());
    let (status, again) = stack.app.call(Method::GET, &format!("/v1/runs/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&again["status"], &again["output"], &again["attempt"]),
        (&run["status"], &run["output"], &run["attempt"])
    );
}

#[tokio::test]
async fn a_first_request_sent_to_a_provider_that_changed_meanwhile_is_not_used() {
    let stack = Observed::start(Env::new().await).await;
    stack.agent("bot").await;
    completed_run(&stack, "hi").await;

    // the provider moves (as an operator would point it elsewhere) after the worker learnt it
    let moved = MockServer::start(MockConfig::default()).await.expect("second mock provider");
    sqlx::query("update providers set base_url = $1").bind(moved.base_url()).execute(&stack.app.db).await.unwrap();
    stack.mock.reset();

    // slow to answer: the early request is still waiting when the worker drops it
    let run = completed_run(&stack, "[[mock tokens=2 ttft=300]] again").await;
    assert_eq!(run["output"], "tok0 tok1", "{run}");
    assert_eq!(openings(&stack, "changed").await, 1.0);
    assert_eq!(moved.stats().requests, 1, "the run's call went to the provider as it is now");
    let dropped = eventually(Duration::from_secs(10), || async {
        let stats = stack.mock.stats();
        (stats.in_flight == 0 && stats.completed == 0 && stats.disconnected == stats.requests).then_some(())
    });
    assert!(dropped.await.is_some(), "the early request was dropped: {:?}", stack.mock.stats());
}

#[tokio::test]
async fn a_job_pushed_before_its_run_is_committed_starts_the_run_once_it_is() {
    let stack = Observed::start(Env::new().await).await;
    stack.agent("bot").await;
    let warm = completed_run(&stack, "hi").await;
    let (agent_id, version_id) = (warm["agent_id"].clone(), warm["version_id"].clone());
    let workspace: WorkspaceId =
        sqlx::query_scalar("select workspace_id from runs limit 1").fetch_one(&stack.app.db).await.unwrap();

    // the job goes first, as the API pushes a lone new run's job while the run is being committed
    let input = vec![runq_shared::chat::ChatMessage::user("[[mock tokens=2]] late")];
    let run = runs::NewRun {
        id: RunId::new(),
        workspace_id: workspace,
        agent_id: serde_json::from_value(agent_id).unwrap(),
        version_id: serde_json::from_value(version_id).unwrap(),
        thread_id: runq_shared::domain::ThreadId::generate().as_str().to_owned(),
        prelude: Vec::new(),
        input: input.clone(),
        parameters: serde_json::Map::new(),
        metadata: json!({}),
        cancel_on_disconnect: false,
        timeout_ms: 60_000,
        webhook_url: None,
        end_user_id: None,
        opens_thread: true,
    };
    let opening = Opening { version: run.version_id, messages: input, parameters: serde_json::Map::new() };
    let job = Job { early: true, opening: Some(opening), ..Job::new(run.id, workspace, None) };
    push_job(&stack, job).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    runs::insert_many(&stack.app.db, None, std::slice::from_ref(&run)).await.unwrap();

    let path = format!("/v1/runs/{}", run.id);
    let done = eventually(Duration::from_secs(10), || async {
        let (_, body) = stack.app.call(Method::GET, &path, None).await;
        (body["status"] == "completed").then_some(body)
    })
    .await
    .expect("the run completed");
    assert_eq!(done["output"], "tok0 tok1", "{done}");
    assert_eq!(done["attempt"], 1, "{done}");
    assert_eq!(openings(&stack, "used").await, 1.0, "its first request went out before the run was committed");
}

#[tokio::test]
async fn a_first_request_sent_early_is_still_bound_by_the_runs_deadline() {
    let stack = Observed::start(Env::new().await).await;
    stack.agent("bot").await;
    completed_run(&stack, "hi").await;

    // the provider never answers, not even its headers: the run's time limit ends the wait
    stack.mock.reset();
    let body = json!({"agent_id": "bot", "prompt": "[[mock fault=hang]] hi", "timeout_ms": 1000, "async": true});
    let (status, op) = stack.app.call(Method::POST, "/v1/run", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{op}");
    let path = format!("/v1/runs/{}", op["run_id"].as_str().expect("the run's id"));
    let ended = eventually(Duration::from_secs(10), || async {
        let (_, run) = stack.app.call(Method::GET, &path, None).await;
        (run["status"] == "timed_out").then_some(run)
    })
    .await;
    assert!(ended.is_some(), "the run timed out");
    assert_eq!(openings(&stack, "used").await, 1.0, "its request went out during the claim");
    let released = eventually(Duration::from_secs(5), || async {
        let stats = stack.mock.stats();
        (stats.in_flight == 0 && stats.disconnected == 1).then_some(())
    });
    assert!(released.await.is_some(), "the hung request was dropped: {:?}", stack.mock.stats());
}
