//! How a test's API and workers run: as tasks of the test process (the default), or as spawned
//! binaries.
//!
//! # Two tiers
//! - **In-process** ([`Env::start_api`], [`Env::start_worker`]): the API's and the worker's own
//!   `build` and `run_until_stopped`, listening on port 0, on a multi-threaded runtime of their
//!   own as in the binaries (the test's `#[tokio::test]` runtime has one thread: a busy test and
//!   its services would take turns on it). Their settings are parsed by the binaries' own flags
//!   from the test's [`Env`] (see [`settings`]), so an in-process service is configured exactly as
//!   a spawned one. Nothing to start but tasks: most tests run this way.
//! - **Spawned** ([`Env::spawn`], [`Env::spawn_logged`], [`crate::Cluster`]): the real
//!   `runq-api` and `runq-worker` binaries, for tests that kill, signal or restart a process, or
//!   read what one process logs or exports.
//!
//! # What a process shares
//! nextest runs each test in a process of its own, so the process-wide metrics recorder and
//! tracing subscriber are the test's own. In-process services install neither twice: the
//! recorder is installed once (`runq_shared::metrics::install`) and the harness installs the
//! subscriber once, with the services' runtime. But an API and a worker in one process share
//! them: a test that asserts on what one process's `/metrics` shows, on its log lines or on its
//! exported traces spawns binaries.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use runq_api::config::ApiConfig;
use runq_shared::config::TelemetryConfig;
use runq_worker::config::WorkerConfig;
use tokio::process::Child;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Env;

/// How long an in-process service may take to stop before its task is aborted.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// A runq service of a test: tasks of the test process, or a spawned binary.
pub enum Service {
    /// `build` + `run_until_stopped` in the test process; stopped (gracefully) when dropped.
    InProcess(InProcess),
    /// A spawned binary (killed when dropped), for tests that kill, signal or restart it.
    Spawned(Child),
}

/// A service running on a task of the test process (on the services' runtime).
pub struct InProcess {
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    /// Runs `serve` (a `run_until_stopped`) on a task, stopped through the token it is given.
    fn run<F>(serve: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        Self { task: Some(services().spawn(serve(shutdown.clone()))), shutdown }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Service {
    /// The spawned process (panics for an in-process service: start it with a spawning helper).
    pub fn child(&self) -> &Child {
        match self {
            Self::Spawned(child) => child,
            Self::InProcess(_) => panic!("an in-process service has no process: spawn the binary to signal it"),
        }
    }

    /// The spawned process, to kill or wait for (panics for an in-process service).
    pub fn child_mut(&mut self) -> &mut Child {
        match self {
            Self::Spawned(child) => child,
            Self::InProcess(_) => panic!("an in-process service has no process: spawn the binary to kill it"),
        }
    }

    /// Stops the service: an in-process one as on SIGTERM (it drains, then its task ends; aborted
    /// after 30 s), a spawned one with SIGKILL. Returns once it is gone.
    pub async fn stop(&mut self) {
        match self {
            Self::Spawned(child) => {
                let _ = child.kill().await;
            }
            Self::InProcess(service) => {
                service.shutdown.cancel();
                if let Some(mut task) = service.task.take() {
                    match tokio::time::timeout(STOP_WITHIN, &mut task).await {
                        Ok(ended) => ended.expect("the service's task").expect("the service stopped cleanly"),
                        Err(_) => task.abort(),
                    }
                }
            }
        }
    }
}

impl Env {
    /// Builds `runq-api` in the test process and serves it on a task (port 0); returns it and its
    /// address.
    pub async fn start_api(&self) -> (Service, SocketAddr) {
        let config: ApiConfig = settings("runq-api", &self.vars());
        let app = build(runq_api::Application::build(config)).await.expect("build the API");
        let addr = app.local_addr().expect("the API's address");
        let api = InProcess::run(|shutdown| async move {
            app.run_until_stopped(shutdown).await;
            Ok(())
        });
        (Service::InProcess(api), addr)
    }

    /// Builds `runq-worker` in the test process and runs it on a task; returns it and, when the
    /// [`Env`] sets `RUNQ_WORKER_METRICS_BIND`, the address of its `GET /metrics`.
    pub async fn start_worker(&self) -> (Service, Option<SocketAddr>) {
        let config: WorkerConfig = settings("runq-worker", &self.vars());
        let worker = build(runq_worker::Worker::build(config)).await.expect("build the worker");
        let metrics = worker.metrics_addr();
        let worker = InProcess::run(|shutdown| worker.run_until_stopped(shutdown));
        (Service::InProcess(worker), metrics)
    }
}

/// The settings a binary would read from environment variables `vars`, parsed by the binary's own
/// flags: each variable becomes the flag that reads it (`RUNQ_MAX_BATCH=5` → `--max-batch=5`),
/// the last value of a variable set twice wins, and a variable the binary has no flag for is
/// ignored, as the binary would ignore it. Nothing is read from the test process's environment.
pub fn settings<T: clap::Args + clap::FromArgMatches>(binary: &'static str, vars: &[(String, String)]) -> T {
    let command = T::augment_args(clap::Command::new(binary).no_binary_name(true));
    let vars: BTreeMap<&str, &str> = vars.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
    let flags: Vec<String> = vars
        .iter()
        .filter_map(|(key, value)| {
            let arg = command.get_arguments().find(|arg| arg.get_env().is_some_and(|name| name == *key))?;
            Some(format!("--{}={value}", arg.get_long()?))
        })
        .collect();
    let matches = command
        .mut_args(|arg| arg.env(None::<&'static str>))
        .try_get_matches_from(flags)
        .unwrap_or_else(|e| panic!("{binary}'s settings: {e}"));
    T::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{binary}'s settings: {e}"))
}

/// Runs a service's `build` on the services' runtime (the tasks it starts run there too).
async fn build<T: Send + 'static>(build: impl Future<Output = T> + Send + 'static) -> T {
    services().spawn(build).await.expect("the build task")
}

/// The runtime in-process services run on, made once per test process with what a runq binary
/// sets up for its whole process before it builds anything: a multi-threaded runtime (as
/// `#[tokio::main]` makes), the TLS crypto provider, and the log subscriber (text to stderr,
/// filtered by `RUST_LOG`, like a spawned binary's log; no trace export).
fn services() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        runq_shared::telemetry::install_crypto_provider();
        let telemetry: TelemetryConfig = settings("runq-e2e", &[]);
        // without trace export the guard holds nothing to flush; a subscriber the test installed
        // itself stays
        if let Ok(guard) = runq_shared::telemetry::init("runq-e2e", &telemetry) {
            drop(guard);
        }
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("runq-services")
            .build()
            .expect("the services' runtime")
    })
}
