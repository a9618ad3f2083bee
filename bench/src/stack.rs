//! The stack under test: the mock provider, one `runq-api` and one `runq-worker` as child
//! processes, the `runq_bench` database, and the agent every scenario runs.
//!
//! Children are killed on drop as well as by [`Stack::shutdown`], so an error or a panic never
//! leaves them behind. Their stderr goes to log files (`target/release/bench-logs/`), counting
//! warnings, so the bench's own output stays one table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The bench's own database, recreated at every start.
pub const DATABASE: &str = "runq_bench";
/// Slug of the agent every scenario runs (OpenAI protocol, on the mock provider).
pub const AGENT: &str = "bench";
/// `application_name` of the bench's own connections, so they are told apart from runq's.
const BENCH_APPLICATION: &str = "runq-bench";
/// API key the worker presents to the mock (any key but `bad-key`/`invalid*` is accepted).
pub const PROVIDER_KEY: &str = "sk-bench";
/// Any 32 bytes: provider secrets only need to round-trip between API and worker.
const MASTER_KEY: &str = "9c1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6";
/// The API's listening line is logged at info by target `runq_api`; its per-request spans (in
/// `runq_api::routes` and `runq_api::submit`) stay off, like everything else below warn. The
/// request log (`runq_api::observe`) stays on, as in a default deployment; the observability
/// scenario measures it against an API without it.
const API_LOG_FILTER: &str = "warn,runq_api=info,runq_api::routes=warn,runq_api::submit=warn";
const MOCK_LOG_FILTER: &str = "warn,runq_mock=info";
const WORKER_LOG_FILTER: &str = "warn";

/// Where the stack comes from and what it talks to.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub postgres_url: String,
    pub redis_url: String,
    pub worker_concurrency: usize,
    bin_dir: PathBuf,
    log_dir: PathBuf,
}

impl StackOptions {
    /// Finds `runq-api`, `runq-worker` and `runq-mock` next to this executable.
    pub fn new(postgres_url: String, redis_url: String, worker_concurrency: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let bin_dir = exe.parent().context("executable directory")?.to_path_buf();
        for name in ["runq-api", "runq-worker", "runq-mock"] {
            ensure!(
                bin_dir.join(name).exists(),
                "{} is missing: run `cargo build --release --bins` (make bench does)",
                bin_dir.join(name).display()
            );
        }
        let log_dir = bin_dir.join("bench-logs");
        std::fs::create_dir_all(&log_dir)?;
        Ok(Self {
            postgres_url: postgres_url.trim_end_matches('/').to_owned(),
            redis_url,
            worker_concurrency,
            bin_dir,
            log_dir,
        })
    }
}

/// One child process.
struct Proc {
    name: &'static str,
    child: Child,
}

/// A child's log file and the warnings it holds (kept across restarts).
struct Log {
    name: &'static str,
    path: PathBuf,
    warnings: Arc<AtomicUsize>,
}

/// Warnings and errors a child logged, for the results header.
#[derive(Debug, Clone)]
pub struct LogSummary {
    pub name: &'static str,
    pub warnings: usize,
    pub path: PathBuf,
}

/// The running stack.
pub struct Stack {
    options: StackOptions,
    pub redis_prefix: String,
    pub admin_key: String,
    /// Shared client for management calls and the request/response scenarios.
    pub http: reqwest::Client,
    /// `http://127.0.0.1:<port>` of the API.
    pub api: String,
    pub api_addr: SocketAddr,
    /// `http://127.0.0.1:<port>` of the mock provider.
    pub mock: String,
    db: Option<PgPool>,
    procs: Vec<Proc>,
    logs: Vec<Log>,
}

impl Stack {
    /// Recreates the database; no process runs yet.
    pub async fn new(options: StackOptions) -> anyhow::Result<Self> {
        let admin = admin_pool(&options).await?;
        sqlx::query("drop database if exists runq_bench with (force)").execute(&admin).await?;
        sqlx::query("create database runq_bench").execute(&admin).await?;
        admin.close().await;
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Self {
            redis_prefix: format!("runq_bench_{}", std::process::id()),
            admin_key: format!("rq_admin_bench_{}", uuid::Uuid::now_v7().simple()),
            http,
            api: String::new(),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            mock: String::new(),
            db: None,
            procs: Vec::new(),
            logs: Vec::new(),
            options,
        })
    }

    /// Starts mock, API and worker, creates the agent and checks one run end to end.
    pub async fn launch(&mut self) -> anyhow::Result<()> {
        let mock = self.spawn("mock", "runq-mock", MOCK_LOG_FILTER, &[]).await?.context("mock address")?;
        self.mock = format!("http://{mock}");
        self.start_runq().await?;
        let url = format!("{}/{DATABASE}?sslmode=disable", self.options.postgres_url);
        let options = url.parse::<PgConnectOptions>()?.application_name(BENCH_APPLICATION);
        self.db = Some(PgPoolOptions::new().max_connections(4).connect_with(options).await?);
        self.create_agent(&self.admin_key).await?;
        self.smoke_test().await
    }

    /// Replaces the API and the worker with fresh processes (the API gets a new port), so a
    /// scenario can measure memory against a process that served nothing before.
    pub async fn restart_runq(&mut self) -> anyhow::Result<()> {
        for name in ["worker", "api"] {
            if let Some(i) = self.procs.iter().position(|p| p.name == name) {
                let mut proc = self.procs.remove(i);
                proc.child.kill().await?;
            }
        }
        self.start_runq().await?;
        self.smoke_test().await
    }

    /// Starts one more API on the same database, Redis and worker, logging through `log_filter`;
    /// returns its base URL. [`Stack::stop`] ends it (teardown does too).
    pub async fn start_extra_api(&mut self, name: &'static str, log_filter: &str) -> anyhow::Result<String> {
        let addr = self.spawn(name, "runq-api", log_filter, &[]).await?.context("api address")?;
        Ok(format!("http://{addr}"))
    }

    /// Kills the process started as `name`, if it runs.
    pub async fn stop(&mut self, name: &str) {
        if let Some(i) = self.procs.iter().position(|p| p.name == name) {
            let mut proc = self.procs.remove(i);
            let _ = proc.child.kill().await;
        }
    }

    async fn start_runq(&mut self) -> anyhow::Result<()> {
        let api = self.spawn("api", "runq-api", API_LOG_FILTER, &[]).await?.context("api address")?;
        self.api_addr = api;
        self.api = format!("http://{api}");
        let concurrency = self.options.worker_concurrency.to_string();
        let worker_env = [
            ("RUNQ_WORKER_CONCURRENCY", concurrency.as_str()),
            // the streams scenario holds provider calls open for minutes on purpose
            ("RUNQ_PROVIDER_IDLE_TIMEOUT_MS", "1800000"),
        ];
        self.spawn("worker", "runq-worker", WORKER_LOG_FILTER, &worker_env).await?;
        Ok(())
    }

    /// Starts `bin`; returns the address of its `listening addr=` line, for those that print one.
    /// `bin` with the stack's environment (and no `RUNQ_` variable of the bench's own).
    fn command(&self, bin: &str, log_filter: &str) -> Command {
        let mut cmd = Command::new(self.options.bin_dir.join(bin));
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("RUNQ_")) {
            cmd.env_remove(key);
        }
        cmd.env("DATABASE_URL", format!("{}/{DATABASE}?sslmode=disable", self.options.postgres_url))
            .env("REDIS_URL", &self.options.redis_url)
            .env("RUNQ_REDIS_PREFIX", &self.redis_prefix)
            .env("RUNQ_MASTER_KEY", MASTER_KEY)
            .env("RUNQ_ADMIN_KEY", &self.admin_key)
            .env("RUNQ_BIND", "127.0.0.1:0")
            .env("RUNQ_MOCK_BIND", "127.0.0.1:0")
            .env("RUNQ_LOG_FORMAT", "text")
            .env("RUST_LOG", log_filter)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        cmd
    }

    async fn spawn(
        &mut self,
        name: &'static str,
        bin: &str,
        log_filter: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Option<SocketAddr>> {
        let mut cmd = self.command(bin, log_filter);
        cmd.envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {bin}"))?;
        let stderr = child.stderr.take().context("stderr")?;
        let log = match self.logs.iter().find(|l| l.name == name) {
            Some(log) => log,
            None => {
                let path = self.options.log_dir.join(format!("{name}.log"));
                std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                self.logs.push(Log { name, path, warnings: Arc::default() });
                self.logs.last().expect("just pushed")
            }
        };
        let (log, warnings) = (log.path.clone(), log.warnings.clone());
        let (addr_tx, addr_rx) = oneshot::channel();
        tokio::spawn(copy_log(stderr, log.clone(), warnings, addr_tx));
        let pid = child.id();
        self.procs.push(Proc { name, child });

        let waits_for_addr = name != "worker";
        if !waits_for_addr {
            return Ok(None);
        }
        match tokio::time::timeout(Duration::from_secs(30), addr_rx).await {
            Ok(Ok(addr)) => Ok(Some(addr)),
            _ => bail!("{bin} (pid {pid:?}) did not report `listening addr=`; see {}", log.display()),
        }
    }

    /// The bench agent on the mock provider, in the workspace of `key`.
    async fn create_agent(&self, key: &str) -> anyhow::Result<()> {
        let provider = json!({
            "name": "mock", "kind": "openai", "base_url": format!("{}/v1", self.mock), "api_key": PROVIDER_KEY,
        });
        self.manage(key, "/v1/providers", provider).await?;
        self.manage(key, "/v1/agents", json!({"name": AGENT, "slug": AGENT})).await?;
        let version = json!({"provider": "mock", "model": "mock-model", "deploy": true});
        self.manage(key, &format!("/v1/agents/{AGENT}/versions"), version).await
    }

    async fn manage(&self, key: &str, path: &str, body: Value) -> anyhow::Result<()> {
        let res = self.post_as(key, path).json(&body).send().await?;
        let status = res.status();
        ensure!(status == StatusCode::CREATED, "POST {path}: {status} {}", res.text().await.unwrap_or_default());
        Ok(())
    }

    /// Another workspace with the bench agent, as an operator makes one: `runq-api bootstrap
    /// --workspace NAME` (which prints its first key), then the admin key moves it to the
    /// `enterprise` plan so the bench is not rate limited. Returns the workspace's key.
    pub async fn add_workspace(&self, name: &str) -> anyhow::Result<String> {
        let out = self.command("runq-api", "warn").args(["bootstrap", "--workspace", name]).output().await?;
        ensure!(out.status.success(), "runq-api bootstrap: {}", String::from_utf8_lossy(&out.stderr).trim());
        let created: Value = serde_json::from_slice(&out.stdout).context("runq-api bootstrap printed no JSON")?;
        let (Some(workspace), Some(key)) = (created["workspace_id"].as_str(), created["key"].as_str()) else {
            bail!("runq-api bootstrap printed no workspace_id and key: {created}");
        };
        let res = self
            .http
            .patch(format!("{}/v1/workspaces/{workspace}", self.api))
            .header("x-api-key", &self.admin_key)
            .json(&json!({"plan": "enterprise"}))
            .send()
            .await?;
        let status = res.status();
        ensure!(status.is_success(), "PATCH /v1/workspaces/{workspace}: {status} {}", res.text().await?);
        self.create_agent(key).await?;
        Ok(key.to_owned())
    }

    /// One sync run, retried while the worker starts.
    async fn smoke_test(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let body = json!({"agent_id": AGENT, "prompt": "[[mock tokens=2]] smoke", "metadata": {"bench": "smoke"}});
        loop {
            let res = self.post("/v1/run").json(&body).timeout(Duration::from_secs(5)).send().await;
            let outcome = match res {
                Ok(res) => {
                    let status = res.status();
                    let run: Value = res.json().await.unwrap_or_default();
                    if status == StatusCode::OK && run["status"] == "completed" {
                        return Ok(());
                    }
                    format!("{status} {run}")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("the stack does not answer a sync run: {outcome}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A POST to the API with the admin key.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.post_as(&self.admin_key, path)
    }

    /// A POST to the API with `key`.
    pub fn post_as(&self, key: &str, path: &str) -> RequestBuilder {
        // a JSON client: `POST /v1/run` without `stream` answers JSON to it
        self.http.post(format!("{}{path}", self.api)).header("x-api-key", key).header("accept", "application/json")
    }

    /// A GET from the API with the admin key.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(format!("{}{path}", self.api)).header("x-api-key", &self.admin_key)
    }

    /// The mock's chat completions endpoint (what the worker calls).
    pub fn completions_url(&self) -> String {
        format!("{}/v1/chat/completions", self.mock)
    }

    /// The mock's `GET /_mock/stats`.
    pub async fn mock_stats(&self) -> anyhow::Result<Value> {
        self.clone_mock_probe().stats().await
    }

    /// A handle on the mock's counters that tasks can own.
    pub fn clone_mock_probe(&self) -> MockProbe {
        MockProbe { http: self.http.clone(), stats_url: format!("{}/_mock/stats", self.mock) }
    }

    /// The bench database.
    pub fn db(&self) -> &PgPool {
        self.db.as_ref().expect("launched")
    }

    /// Process ids of the Postgres backends serving runq in the bench database (the API's and
    /// the worker's connections, autovacuum there), not the bench's own connections.
    pub async fn postgres_backends(&self) -> anyhow::Result<Vec<u32>> {
        let pids: Vec<i32> = sqlx::query_scalar(
            "select pid from pg_stat_activity where datname = current_database() and application_name <> $1",
        )
        .bind(BENCH_APPLICATION)
        .fetch_all(self.db())
        .await?;
        Ok(pids.into_iter().filter_map(|pid| u32::try_from(pid).ok()).collect())
    }

    /// The WAL position and counters of the whole Postgres server, now.
    pub async fn wal(&self) -> anyhow::Result<Wal> {
        Ok(sqlx::query_as(
            "select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 as lsn, wal_records, wal_fpi
             from pg_stat_wal",
        )
        .fetch_one(self.db())
        .await?)
    }

    /// Process id of `api`, `worker` or `mock`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.iter().find(|p| p.name == name).and_then(|p| p.child.id())
    }

    /// `queue_wait_us` of the finished runs tagged `metadata.bench = tag`.
    pub async fn queue_waits(&self, tag: &str) -> anyhow::Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "select queue_wait_us from runs where metadata->>'bench' = $1 and queue_wait_us is not null",
        )
        .bind(tag)
        .fetch_all(self.db())
        .await?)
    }

    /// Waits until no run is queued or running and the mock serves nothing; `false` on timeout.
    pub async fn quiesce(&self, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let active: i64 = sqlx::query_scalar("select count(*) from runs where status in ('queued', 'running')")
                .fetch_one(self.db())
                .await?;
            let in_flight = self.mock_stats().await?["in_flight"].as_u64().unwrap_or(0);
            if active == 0 && in_flight == 0 {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_summary(&self) -> Vec<LogSummary> {
        self.logs
            .iter()
            .map(|l| LogSummary { name: l.name, warnings: l.warnings.load(Ordering::Relaxed), path: l.path.clone() })
            .collect()
    }

    /// Kills the children, drops the database and deletes the Redis keys; reports problems on
    /// stderr rather than failing, so the results are still printed.
    pub async fn shutdown(&mut self) {
        for proc in self.procs.iter_mut().rev() {
            let _ = proc.child.start_kill();
            if tokio::time::timeout(Duration::from_secs(10), proc.child.wait()).await.is_err() {
                eprintln!("runq-bench: {} did not exit after SIGKILL", proc.name);
            }
        }
        if let Some(db) = self.db.take() {
            db.close().await;
        }
        if let Err(e) = self.drop_database().await {
            eprintln!("runq-bench: could not drop database {DATABASE}: {e:#}");
        }
        if let Err(e) = self.clean_redis().await {
            eprintln!("runq-bench: could not delete Redis keys {}:*: {e:#}", self.redis_prefix);
        }
    }

    async fn drop_database(&self) -> anyhow::Result<()> {
        let admin = admin_pool(&self.options).await?;
        sqlx::query("drop database if exists runq_bench with (force)").execute(&admin).await?;
        admin.close().await;
        Ok(())
    }

    async fn clean_redis(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.options.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let pattern = format!("{}:*", self.redis_prefix);
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                redis::cmd("UNLINK").arg(&keys).query_async::<()>(&mut conn).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// WAL written by the whole server (every database: other users of a shared Postgres count
/// too). `lsn` is exact at once; the `pg_stat_wal` counters are flushed by each backend about
/// once a second, so over a window of seconds they are close.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Wal {
    /// Bytes of WAL since `0/0`.
    pub lsn: f64,
    pub wal_records: i64,
    pub wal_fpi: i64,
}

impl Wal {
    /// WAL written since `earlier`, per `runs`: (bytes, records, full-page images).
    pub fn per_run_since(&self, earlier: &Wal, runs: f64) -> (f64, f64, f64) {
        let runs = runs.max(1.0);
        (
            (self.lsn - earlier.lsn) / runs,
            (self.wal_records - earlier.wal_records) as f64 / runs,
            (self.wal_fpi - earlier.wal_fpi) as f64 / runs,
        )
    }
}

/// Reads the mock provider's counters (`GET /_mock/stats`).
#[derive(Debug, Clone)]
pub struct MockProbe {
    http: reqwest::Client,
    stats_url: String,
}

impl MockProbe {
    pub async fn stats(&self) -> anyhow::Result<Value> {
        Ok(self.http.get(&self.stats_url).send().await?.error_for_status()?.json().await?)
    }

    /// Provider requests fully answered since the mock started.
    pub async fn completed(&self) -> anyhow::Result<u64> {
        self.stats().await?["completed"].as_u64().context("mock stats without `completed`")
    }

    /// Provider requests being served now.
    pub async fn in_flight(&self) -> anyhow::Result<u64> {
        self.stats().await?["in_flight"].as_u64().context("mock stats without `in_flight`")
    }
}

async fn admin_pool(options: &StackOptions) -> anyhow::Result<PgPool> {
    let url = format!("{}/postgres?sslmode=disable", options.postgres_url);
    PgPoolOptions::new().max_connections(1).connect(&url).await.with_context(|| format!("connecting to {url}"))
}

/// Copies a child's stderr to its log file, counts warnings and reports the listening address.
async fn copy_log(
    stderr: tokio::process::ChildStderr,
    path: PathBuf,
    warnings: Arc<AtomicUsize>,
    addr: oneshot::Sender<SocketAddr>,
) {
    let mut addr = Some(addr);
    let Ok(mut file) = tokio::fs::OpenOptions::new().append(true).open(&path).await else { return };
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains(" WARN ") || line.contains(" ERROR ") {
            warnings.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(rest) = line.split("listening addr=").nth(1)
            && let Some(found) = rest.split_whitespace().next().and_then(|a| a.parse().ok())
            && let Some(tx) = addr.take()
        {
            let _ = tx.send(found);
        }
        let _ = file.write_all(line.as_bytes()).await;
        let _ = file.write_all(b"\n").await;
    }
    let _ = file.flush().await;
}

#[cfg(test)]
mod tests {
    use super::Wal;

    #[test]
    fn wal_per_run_divides_the_difference_and_never_by_zero() {
        let before = Wal { lsn: 1_000.0, wal_records: 10, wal_fpi: 1 };
        let after = Wal { lsn: 21_480.0, wal_records: 110, wal_fpi: 3 };
        assert_eq!(after.per_run_since(&before, 2.0), (10_240.0, 50.0, 1.0));
        assert_eq!(after.per_run_since(&before, 0.0), (20_480.0, 100.0, 2.0));
    }
}
