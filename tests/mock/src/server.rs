//! Routing, the request pipeline shared by both protocols, and [`MockServer`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::anthropic::Anthropic;
use crate::body::{Cut, Frames, ResponseStream};
use crate::directive::Fault;
use crate::openai::OpenAi;
use crate::reply::{Collector, Plan, conversation_key};
use crate::stats::{Stats, StatsRegistry};

/// Server-wide defaults; `[[mock ...]]` directives override them per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MockConfig {
    /// Delay before the first byte of the response body.
    pub ttft: Duration,
    /// Delay between consecutive content tokens.
    pub delay: Duration,
    /// Reply with `tok0 tok1 ...` of this length instead of echoing.
    pub tokens: Option<usize>,
}

/// Shared state behind the router.
pub struct MockState {
    config: MockConfig,
    stats: Arc<StatsRegistry>,
    /// Requests seen per conversation, for `times=N` faults.
    faults: Mutex<HashMap<u64, u32>>,
    ids: AtomicU64,
    /// Releases every `hang`/`hang_stream` so shutdown is not held hostage.
    shutdown: CancellationToken,
}

impl MockState {
    pub fn new(config: MockConfig) -> Arc<MockState> {
        Arc::new(MockState {
            config,
            stats: Arc::default(),
            faults: Mutex::default(),
            ids: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
        })
    }

    pub fn config(&self) -> &MockConfig {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// Zeroes the counters and forgets which conversations already faulted.
    pub fn reset(&self) {
        self.stats.reset();
        self.faults.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Ends every stalled request (`hang`, `hang_stream`).
    pub fn release_hung(&self) {
        self.shutdown.cancel();
    }

    /// Counts one more request for this conversation; returns the new count.
    fn hit(&self, key: u64) -> u32 {
        let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        let count = faults.entry(key).or_default();
        *count = count.saturating_add(1);
        *count
    }
}

/// Conversations are small, but tool results can be big; stay well above
/// axum's 2 MB default.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The mock's routes: both provider protocols (with and without `/v1`),
/// the control API and `/health`.
pub fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(handle::<OpenAi>))
        .route("/chat/completions", post(handle::<OpenAi>))
        .route("/v1/messages", post(handle::<Anthropic>))
        .route("/messages", post(handle::<Anthropic>))
        .route("/_mock/stats", get(stats))
        .route("/_mock/reset", post(reset))
        .route("/health", get(|| async { "ok" }))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"error": {"message": "no such mock route", "type": "invalid_request_error"}})),
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn stats(State(state): State<Arc<MockState>>) -> Json<Stats> {
    Json(state.stats())
}

async fn reset(State(state): State<Arc<MockState>>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}

/// One provider wire format.
pub(crate) trait Protocol {
    /// Keeps fault counters of the two protocols apart.
    const NAME: &'static str;
    type Request: DeserializeOwned;

    fn api_key(headers: &HeaderMap) -> &str;
    fn model(req: &Self::Request) -> &str;
    fn messages(req: &Self::Request) -> &[Value];
    fn streaming(req: &Self::Request) -> bool;
    fn collect(req: &Self::Request) -> Result<Collector<'_>, String>;
    /// An error response in the protocol's own shape.
    fn error(status: StatusCode, message: &str) -> Response;
    fn stream(req: &Self::Request, plan: &Plan, id: u64, frames: &mut Frames);
    fn complete(req: &Self::Request, plan: &Plan, id: u64) -> Vec<u8>;
}

fn rejected_key(key: &str) -> bool {
    key == "bad-key" || key.starts_with("invalid")
}

async fn handle<P: Protocol>(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = P::api_key(&headers);
    let mut guard = state.stats.begin(key);
    let fail = |status: StatusCode, message: &str| P::error(status, message);

    if rejected_key(key) {
        guard.finish();
        return fail(StatusCode::UNAUTHORIZED, &format!("Incorrect API key provided: {key}."));
    }
    let req: P::Request = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => {
            guard.finish();
            return fail(StatusCode::BAD_REQUEST, &format!("invalid request body: {e}"));
        }
    };
    let plan = match P::collect(&req).and_then(|c| Plan::new(c, &state.config)) {
        Ok(plan) => plan,
        Err(message) => {
            guard.finish();
            return fail(StatusCode::BAD_REQUEST, &message);
        }
    };

    let mut cut = Cut::Full;
    if let Some(fault) = &plan.fault {
        let active = fault.times.is_none_or(|times| {
            let key = conversation_key(P::NAME, P::model(&req), P::messages(&req));
            state.hit(key) <= times
        });
        if active {
            match fault.fault {
                Fault::Status(code) => {
                    guard.finish();
                    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    return fault_response::<P>(status, fault.retry_after);
                }
                Fault::Hang => {
                    // If the client gives up, hyper drops this future and the
                    // guard records the disconnect.
                    state.shutdown.cancelled().await;
                    return fail(StatusCode::SERVICE_UNAVAILABLE, "mock server shutting down");
                }
                Fault::HangStream => cut = Cut::HangAfter(1),
                Fault::Drop => cut = Cut::DropAfter(fault.drop_after),
            }
        }
    }

    let id = state.ids.fetch_add(1, Relaxed);
    let shutdown = state.shutdown.clone();
    if P::streaming(&req) {
        let mut frames = Frames::new(plan.ttft, plan.delay, plan.output_tokens);
        P::stream(&req, &plan, id, &mut frames);
        let body = frames.into_stream(cut, guard, shutdown);
        return respond(body, "text/event-stream; charset=utf-8", true);
    }

    let latency = plan.total_latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let json = P::complete(&req, &plan, id);
    let body = match cut {
        Cut::Full => ResponseStream::whole(json, guard),
        Cut::HangAfter(_) => ResponseStream::partial(json, 0, cut, guard, shutdown),
        Cut::DropAfter(_) => {
            let half = json.len() / 2;
            ResponseStream::partial(json, half, cut, guard, shutdown)
        }
    };
    respond(body, "application/json", false)
}

fn respond(body: ResponseStream, content_type: &'static str, sse: bool) -> Response {
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if sse {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

fn fault_response<P: Protocol>(status: StatusCode, retry_after: u64) -> Response {
    let message = match status.as_u16() {
        429 => "Rate limit reached (mock fault). Please try again later.",
        500 => "The server had an error while processing your request (mock fault).",
        _ => "mock fault",
    };
    let mut response = P::error(status, message);
    if status == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
    response
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Serializes into an in-memory buffer. Our reply types cannot fail to
/// serialize, so an error here is a bug worth a log line, not a panic.
pub(crate) fn write_json(buf: &mut Vec<u8>, value: &impl Serialize) {
    if let Err(e) = serde_json::to_writer(buf, value) {
        tracing::error!(error = %e, "failed to serialize mock reply");
    }
}

/// A running mock provider. Dropping it stops the server.
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<MockState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl MockServer {
    /// Starts on an ephemeral port of 127.0.0.1.
    pub async fn start(config: MockConfig) -> io::Result<MockServer> {
        MockServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts on `addr` (port 0 picks a free port), serving in a tokio task.
    pub async fn bind(addr: SocketAddr, config: MockConfig) -> io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        // Tokens are tiny writes; Nagle would batch them and skew latency.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "failed to set TCP_NODELAY");
            }
        });
        let state = MockState::new(config);
        let app = router(Arc::clone(&state));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(MockServer { addr, state, stop: Some(stop), task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// OpenAI-style base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL without `/v1`, as Anthropic SDKs expect.
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> &Arc<MockState> {
        &self.state
    }

    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    pub fn reset(&self) {
        self.state.reset();
    }

    /// Stops accepting, releases hung requests and waits (bounded) for
    /// in-flight responses to finish.
    pub async fn shutdown(mut self) {
        self.state.release_hung();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.state.release_hung();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
