//! Input Postgres cannot store, and bodies too large to read, are refused at the edge in the
//! envelope: never a 500, never a server that reads 16 MiB before saying no.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use runq_e2e::{Env, TestApp, assert_envelope};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `body` as it is (a JSON text with `\u0000` escapes) and returns status and JSON answer.
async fn post_raw(app: &TestApp, path: &str, body: &str) -> (StatusCode, Value) {
    let res = app
        .with_key(Method::POST, path, app.admin_key())
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

fn assert_nul_refused(status: StatusCode, body: &Value, field: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
    assert_envelope(body, "invalid_request");
    assert_eq!(body["error"]["details"]["field"], field, "{body}");
    assert!(body["error"]["details"]["reason"].as_str().is_some_and(|r| r.contains("NUL")), "{body}");
}

#[tokio::test]
async fn a_nul_character_in_a_json_body_is_a_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let cases = [
        ("/v1/agents", r#"{"name": "ok", "description": "a\u0000b"}"#, "description"),
        ("/v1/agents", r#"{"name": "ok", "tags": ["x", "\u0000"]}"#, "tags[1]"),
        ("/v1/threads", r#"{"metadata": {"k": "v\u0000"}}"#, "metadata.k"),
        ("/v1/threads", r#"{"metadata": {"list": [{"deep": "\u0000"}]}}"#, "metadata.list[0].deep"),
        ("/v1/threads", r#"{"metadata": {"k\u0000": 1}}"#, r"metadata.k\u0000"),
        ("/v1/api-keys", r#"{"name": "\u0000", "scopes": ["run"]}"#, "name"),
    ];
    for (path, body, field) in cases {
        let (status, answer) = post_raw(&app, path, body).await;
        assert_nul_refused(status, &answer, field);
    }
    for table in ["agents", "threads"] {
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(n, 0, "nothing of those requests was written to {table}");
    }

    // an escaped backslash followed by `u0000` is six ordinary characters
    let (status, agent) = post_raw(&app, "/v1/agents", r#"{"name": "ok", "description": "a\\u0000"}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    assert_eq!(agent["description"], r"a\u0000");
}

#[tokio::test]
async fn a_nul_character_in_a_query_string_or_a_path_segment_is_a_400_naming_it() {
    let app = TestApp::spawn().await;
    let cases = [
        ("/v1/runs?status=a%00b", "status"),
        ("/v1/runs?page=1&thread_id=a%00b", "thread_id"),
        ("/v1/providers/a%00b", "id"),
        ("/v1/llm-providers/a%00b/models", "id"),
        ("/v1/agents/a%00b", "id"),
        // a handler reading the raw query string gets the same treatment
        ("/v1/agents/bot/stream?query=hi%00", "query"),
    ];
    for (path, field) in cases {
        let (status, body) = app.call(Method::GET, path, None).await;
        assert_nul_refused(status, &body, field);
    }
}

#[tokio::test]
async fn numbers_near_the_float_limits_round_trip_through_jsonb() {
    let app = TestApp::spawn().await;
    // Postgres renders these in plain digits (309 of them for the first); they must read back
    let metadata = json!({"max": -1.7976931348623155e308, "big": 4.244241610180035e146, "tiny": 5e-324});
    let (status, thread) = app.call(Method::POST, "/v1/threads", Some(json!({"metadata": metadata}))).await;
    assert_eq!(status, StatusCode::CREATED, "{thread}");
    assert_eq!(thread["metadata"], metadata);
    let (status, again) = app.call(Method::GET, &format!("/v1/threads/{}", thread["id"].as_str().unwrap()), None).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["metadata"], metadata);
}

#[tokio::test]
async fn a_body_announced_over_the_body_limit_is_refused_with_413_before_it_is_read() {
    let app = TestApp::spawn_with(Env::new().await.with("RUNQ_MAX_BODY_BYTES", "1024")).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    // 100 MB announced, 2 bytes sent: a server that waited for the body would never answer
    let head = format!(
        "POST /v1/agents HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {}\r\ncontent-type: application/json\r\n\
         content-length: 104857600\r\n\r\n{{}}",
        app.admin_key()
    );
    tcp.write_all(head.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = tcp.read(&mut buf).await.expect("read");
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if n == 0 || text.split_once("\r\n\r\n").is_some_and(|(_, body)| body.ends_with('}')) {
                return;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server answered while the body was still announced (got {answer:?})");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    assert!(head.to_ascii_lowercase().contains("x-request-id:"), "{head}");
    assert_envelope(&serde_json::from_str(body).expect("a JSON body"), "payload_too_large");

    // a body within the limit still goes through
    let (status, body) = app.call(Method::POST, "/v1/agents", Some(json!({"name": "small"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
