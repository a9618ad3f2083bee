use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use runq_e2e::{Env, Stack};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A minimal OTLP/HTTP collector: keeps every exported body.
async fn collector() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let sink = bodies.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut read = BufReader::new(read);
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    while read.read_line(&mut line).await.unwrap_or(0) > 0 {
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        line.clear();
                    }
                    if line.is_empty() {
                        return;
                    }
                    let mut body = vec![0; length];
                    if read.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    sink.lock().unwrap().push(body);
                    let _ = write.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                }
            });
        }
    });
    (url, bodies)
}

/// Spawned: each process exports its spans under its own service name (the tracer provider is
/// process-wide), and the trace must cross from one process to the other.
#[tokio::test]
async fn one_trace_spans_the_api_and_the_worker() {
    let (endpoint, bodies) = collector().await;
    let env = Env::new().await.with("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint).with("OTEL_BSP_SCHEDULE_DELAY", "100");
    let stack = Stack::spawn_binaries(env).await;
    stack.agent("bot", "openai", json!({})).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let res = stack
        .app
        .with_key(Method::POST, "/v1/run", stack.app.admin_key())
        .header("accept", "application/json")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"agent_id": "bot", "prompt": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let id = (0..16).map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap()).collect::<Vec<_>>();
    let exported_by = |service: &[u8]| bodies.lock().unwrap().iter().any(|b| contains(b, service) && contains(b, &id));
    for _ in 0..100 {
        if exported_by(b"runq-api") && exported_by(b"runq-worker") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the trace was not exported by both processes (api: {}, worker: {}; {} bodies)",
        exported_by(b"runq-api"),
        exported_by(b"runq-worker"),
        bodies.lock().unwrap().len()
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
