//! The environment of a test's services: the database and Redis prefix they share, the binaries
//! spawned for the tests that need processes, starting them and reading their logs, and small
//! waiting helpers. (In-process services are started in [`crate::service`].)

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The master key every service of a test shares.
pub const MASTER_KEY: &str = "6b9d7e0f1a2c3b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5";

fn postgres_url() -> String {
    std::env::var("RUNQ_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The Redis every test process uses (`REDIS_URL`, or the local default).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Path of a binary built from this workspace, next to the test executable's `deps/` folder.
/// A binary older than its sources is refused: the tests would test yesterday's code.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target profile dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins` (make test does)", path.display());
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).expect("binary modification time");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // what goes into the binary: a crate's own tests do not
    let sources: &[&str] = match name {
        "runq-api" => &["api/src", "api/console", "shared/src", "migrations"],
        "runq-worker" => &["worker/src", "shared/src", "migrations"],
        "runq-mock" => &["tests/mock/src"],
        "runq" => &["cli/src"],
        _ => &[],
    };
    if let Some(newer) = sources.iter().find_map(|dir| newer_file(&root.join(dir), built)) {
        panic!("{} is older than {}: run `cargo build --bins` (make test does)", path.display(), newer.display());
    }
    path
}

/// A file under `dir` (sources, not build output) modified after `than`.
fn newer_file(dir: &std::path::Path, than: std::time::SystemTime) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let skipped = path.file_name().is_some_and(|n| n == "target" || n == "node_modules");
            if let Some(found) = (!skipped).then(|| newer_file(&path, than)).flatten() {
                return Some(found);
            }
        } else if meta.modified().is_ok_and(|modified| modified > than) {
            return Some(path);
        }
    }
    None
}

/// Creates an empty database for one test and returns its URL; migrations are applied by the API.
pub async fn fresh_database() -> String {
    let name = format!("runq_test_{}", uuid::Uuid::now_v7().simple());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{}/postgres?sslmode=disable", postgres_url()))
        .await
        .expect("Postgres must be running (make test starts it)");
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}"))).execute(&admin).await.expect("create database");
    admin.close().await;
    // loopback: TLS would only cost CPU
    format!("{}/{name}?sslmode=disable", postgres_url())
}

/// Environment shared by every runq service of one test, in the test process or spawned.
#[derive(Clone, Debug)]
pub struct Env {
    pub database_url: String,
    pub redis_prefix: String,
    pub admin_key: String,
    pub extra: Vec<(String, String)>,
}

impl Env {
    pub async fn new() -> Self {
        Self {
            database_url: fresh_database().await,
            redis_prefix: format!("runq_test_{}", uuid::Uuid::now_v7().simple()),
            admin_key: format!("rq_admin_{}", uuid::Uuid::now_v7().simple()),
            extra: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// The variables every runq service of this environment reads, a spawned one from its
    /// environment and an in-process one as the flags that read them (the last value of a
    /// variable set twice wins).
    pub fn vars(&self) -> Vec<(String, String)> {
        let shared = [
            ("DATABASE_URL", self.database_url.clone()),
            ("REDIS_URL", redis_url()),
            ("RUNQ_REDIS_PREFIX", self.redis_prefix.clone()),
            ("RUNQ_MASTER_KEY", MASTER_KEY.to_owned()),
            ("RUNQ_ADMIN_KEY", self.admin_key.clone()),
            ("RUNQ_BIND", "127.0.0.1:0".to_owned()),
            // many services run at once in a suite: stay well under Postgres's 100 connections
            ("RUNQ_DB_MAX_CONNECTIONS", "4".to_owned()),
            ("RUNQ_LOG_FORMAT", "text".to_owned()),
            ("RUST_LOG", "info".to_owned()),
            // webhook receivers of the tests listen on 127.0.0.1
            ("RUNQ_ALLOW_PRIVATE_TARGETS", "true".to_owned()),
        ];
        shared.into_iter().map(|(key, value)| (key.to_owned(), value)).chain(self.extra.iter().cloned()).collect()
    }

    fn apply(&self, cmd: &mut Command) {
        // traces are exported only by the tests that ask for it
        cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT").envs(self.vars());
    }

    /// Runs a binary to completion (e.g. `runq-api bootstrap`), returning status and stdout.
    pub async fn run(&self, name: &str, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(bin(name));
        self.apply(&mut cmd);
        let out = cmd.args(args).stdin(Stdio::null()).output().await.expect("run binary");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a long-running binary and waits for its `listening addr=` line when `wait_addr`.
    pub async fn spawn(&self, name: &str, wait_addr: bool) -> (Child, Option<String>) {
        let (child, line) = self.spawn_until(name, wait_addr.then_some("listening addr=")).await;
        let addr = line.map(|line| {
            line.split("listening addr=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{name} did not report its address"))
        });
        (child, addr)
    }

    /// Starts a long-running binary; with `needle`, waits (30 s at most) for a log line holding
    /// it and returns that line. The process's log goes on to the test's stderr.
    pub async fn spawn_until(&self, name: &str, needle: Option<&str>) -> (Child, Option<String>) {
        let mut cmd = Command::new(bin(name));
        self.apply(&mut cmd);
        let mut child = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn().expect("spawn");
        let pid = child.id().unwrap_or_default();
        let label = format!("{name}:{pid}");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut found_line = None;
        if let Some(needle) = needle {
            let found = tokio::time::timeout(Duration::from_secs(30), async {
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("[{label}] {line}");
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                None
            })
            .await;
            found_line =
                Some(found.ok().flatten().unwrap_or_else(|| panic!("{name} did not log `{needle}` within 30 s")));
        }
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{label}] {line}");
            }
        });
        (child, found_line)
    }
}

impl Env {
    /// Sets `key` unless this environment already sets it.
    pub fn with_default(mut self, key: &str, value: &str) -> Self {
        if self.get(key).is_none() {
            self.extra.push((key.into(), value.into()));
        }
        self
    }

    /// The value this environment gives `key` (the last one set wins, as for the processes).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.extra.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A TCP port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Sends `signal` (`TERM`, `KILL`, …) to a child process with the `kill` command.
pub fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("the process is still running");
    let status =
        std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Waits (bounded) for a child to exit; `None` when it is still running after `timeout`.
pub async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    tokio::time::timeout(timeout, child.wait()).await.ok().and_then(Result::ok)
}

/// Calls `probe` every 50 ms until it returns `Some`, or `timeout` passes (`None`).
pub async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The mock's answer to a `[[mock tokens=N]]` directive: `tok0 tok1 … tok{N-1}`.
pub fn mock_tokens(n: usize) -> String {
    (0..n).map(|i| format!("tok{i}")).collect::<Vec<_>>().join(" ")
}

/// Every log line a process wrote so far, kept for the test to search.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Logs {
    /// The first line (already written, or written within `timeout`) that satisfies `matches`.
    pub async fn wait_for(&self, timeout: Duration, matches: impl Fn(&str) -> bool) -> Option<String> {
        eventually(timeout, || {
            let found = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|line| matches(line))
                .cloned();
            async move { found }
        })
        .await
    }
}

impl Env {
    /// Starts a long-running binary, waits (30 s at most) for its `listening` line and
    /// returns the address, and keeps every line it logs in [`Logs`] (they still go to the test's
    /// stderr).
    pub async fn spawn_logged(&self, name: &str) -> (Child, String, Logs) {
        let mut cmd = Command::new(bin(name));
        self.apply(&mut cmd);
        let mut child = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn().expect("spawn");
        let label = format!("{name}:{}", child.id().unwrap_or_default());
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let logs = Logs::default();
        let kept = logs.clone();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{label}] {line}");
                if let Some(addr) = listening_addr(&line)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr);
                }
                kept.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(30), addr_rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("{name} did not log `listening addr=` within 30 s"));
        (child, addr, logs)
    }
}

/// The address of a `listening` line, in text (`listening addr=…`) or JSON (`"addr":"…"`) format.
fn listening_addr(line: &str) -> Option<String> {
    if let Some(rest) = line.split("listening addr=").nth(1) {
        return rest.split_whitespace().next().map(str::to_owned);
    }
    let json: Value = serde_json::from_str(line).ok()?;
    let message = json["message"].as_str().or_else(|| json["fields"]["message"].as_str())?;
    if !message.ends_with("listening") {
        return None;
    }
    json["addr"].as_str().or_else(|| json["fields"]["addr"].as_str()).map(str::to_owned)
}
