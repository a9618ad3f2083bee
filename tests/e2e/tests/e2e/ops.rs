use reqwest::{Method, StatusCode};
use runq_e2e::TestApp;
use serde_json::Value;

#[tokio::test]
async fn health_reports_version_and_dependencies() {
    let app = TestApp::spawn().await;
    let res = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["postgres"], "ok");
    assert_eq!(body["redis"], "ok");
    assert!(body["version"].is_string());
    assert_eq!(app.request(Method::GET, "/ready").send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn the_openapi_document_is_generated_from_the_routes() {
    let app = TestApp::spawn().await;
    let doc: Value = app.request(Method::GET, "/openapi.json").send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/agents",
        "/v1/agents/{id}/versions",
        "/v1/agents/{id}/deploy",
        "/v1/providers",
        "/v1/api-keys",
        "/v1/tools",
    ] {
        assert!(paths.contains_key(path), "missing {path}");
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

#[tokio::test]
async fn docs_are_served_without_any_external_asset() {
    let app = TestApp::spawn().await;
    let res = app.request(Method::GET, "/docs/").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(html.contains("swagger-ui"));
    assert!(!html.contains("https://"), "the page must not load assets from a CDN");
    let res = app.request(Method::GET, "/docs/swagger-ui-bundle.js").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.bytes().await.unwrap().len() > 100_000, "the UI bundle is served locally");
}

#[tokio::test]
async fn the_tool_catalogue_lists_the_built_in_tools() {
    let app = TestApp::spawn().await;
    let (status, body) = app.call(Method::GET, "/v1/tools", None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = body["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["current_time", "noop"]);
}
