use reqwest::{Method, StatusCode};
use runq_e2e::{Env, TestApp, assert_envelope};
use serde_json::json;

#[tokio::test]
async fn malformed_json_is_a_400_in_the_envelope() {
    let app = TestApp::spawn().await;
    let res = app
        .with_key(Method::POST, "/v1/agents", app.admin_key())
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body = res.json().await.unwrap();
    assert_envelope(&body, "invalid_request");
    assert_eq!(body["error"]["details"]["field"], "body");
}

#[tokio::test]
async fn a_body_without_the_json_content_type_is_415() {
    let app = TestApp::spawn().await;
    let res = app
        .with_key(Method::POST, "/v1/agents", app.admin_key())
        .header("content-type", "text/plain")
        .body("{\"name\": \"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_envelope(&res.json().await.unwrap(), "unsupported_media_type");
}

#[tokio::test]
async fn validation_failures_name_the_field_and_the_reason() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "ok", "slug": "Not A Slug"}), "slug"),
        (json!({"name": "ok", "tags": [""]}), "tags"),
    ];
    for (body, field) in cases {
        let (status, res) = app.call(Method::POST, "/v1/agents", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_envelope(&res, "invalid_request");
        assert_eq!(res["error"]["details"]["field"], field, "{body} → {res}");
        assert!(res["error"]["details"]["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }
    let (status, res) = app
        .call(Method::POST, "/v1/providers", Some(json!({"name": "p", "kind": "cohere", "base_url": "http://x"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(res["error"]["details"]["field"], "kind");
    let (count,): (i64,) = sqlx::query_as("select count(*) from agents").fetch_one(&app.db).await.unwrap();
    assert_eq!(count, 0, "nothing half-written");
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_the_envelope() {
    let app = TestApp::spawn().await;
    let res = app.request(Method::GET, "/v1/nothing-here").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_envelope(&res.json().await.unwrap(), "not_found");

    let res = app.with_key(Method::PUT, "/v1/agents", app.admin_key()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_envelope(&res.json().await.unwrap(), "method_not_allowed");
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let app = TestApp::spawn_with(Env::new().await.with("RUNQ_MAX_BODY_BYTES", "1024")).await;
    let big = json!({"name": "x".repeat(4096)});
    let (status, body) = app.call(Method::POST, "/v1/agents", Some(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_envelope(&body, "payload_too_large");
}

#[tokio::test]
async fn a_malformed_id_in_the_path_is_400() {
    let app = TestApp::spawn().await;
    let (status, body) = app.call(Method::DELETE, "/v1/api-keys/run_123", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&body, "invalid_request");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let mut seen = Vec::new();
    for path in ["/health", "/v1/agents", "/nope"] {
        let res = app.request(Method::GET, path).send().await.unwrap();
        let id = res.headers().get("x-request-id").expect(path).to_str().unwrap().to_owned();
        assert!(!id.is_empty());
        seen.push(id);
    }
    seen.dedup();
    assert_eq!(seen.len(), 3, "ids are unique per request");
    let res = app.request(Method::GET, "/health").header("x-request-id", "client-chosen-1").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "client-chosen-1", "a client's id is kept");
}
