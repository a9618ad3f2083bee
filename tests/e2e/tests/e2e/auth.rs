use reqwest::{Method, StatusCode};
use runq_e2e::{Env, TestApp, assert_envelope};
use serde_json::json;

#[tokio::test]
async fn a_key_is_accepted_in_each_of_the_three_header_forms() {
    let app = TestApp::spawn().await;
    let key = app.admin_key();
    let forms =
        [("x-api-key", key.to_owned()), ("authorization", format!("Bearer {key}")), ("authorization", key.to_owned())];
    for (header, value) in forms {
        let res = app.request(Method::GET, "/v1/agents").header(header, &value).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{header}: {value}");
    }
}

#[tokio::test]
async fn a_request_without_a_key_gets_401_in_the_envelope() {
    let app = TestApp::spawn().await;
    let res = app.request(Method::GET, "/v1/agents").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_envelope(&res.json().await.unwrap(), "unauthorized");
}

#[tokio::test]
async fn an_unknown_key_gets_401() {
    let app = TestApp::spawn().await;
    let (status, body) = app.call_as("rq_thisKeyWasNeverIssued000000000", Method::GET, "/v1/agents", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_envelope(&body, "unauthorized");
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let app = TestApp::spawn().await;
    let (status, created) =
        app.call(Method::POST, "/v1/api-keys", Some(json!({"name": "ci", "scopes": ["run", "manage"]}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let key = created["key"].as_str().unwrap();
    // warm the auth cache so revocation must evict it
    assert_eq!(app.call_as(key, Method::GET, "/v1/agents", None).await.0, StatusCode::OK);

    let res = app
        .with_key(Method::DELETE, &format!("/v1/api-keys/{}", created["id"].as_str().unwrap()), app.admin_key())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let (status, body) = app.call_as(key, Method::GET, "/v1/agents", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_envelope(&body, "unauthorized");
}

#[tokio::test]
async fn a_run_only_key_gets_403_on_management_routes() {
    let app = TestApp::spawn().await;
    let key = app.create_key(&["run"]).await;
    for (method, path) in [(Method::GET, "/v1/agents"), (Method::POST, "/v1/api-keys"), (Method::GET, "/v1/providers")]
    {
        let (status, body) = app.call_as(&key, method, path, Some(json!({"name": "x"}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_envelope(&body, "forbidden");
    }
    // but it is a valid key: the tool catalogue is open to every key
    assert_eq!(app.call_as(&key, Method::GET, "/v1/tools", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn another_workspaces_agent_is_403_and_its_slug_is_not_visible() {
    let app = TestApp::spawn().await;
    let agent = app.deployed_agent(app.admin_key(), "private-bot", "openai", "http://127.0.0.1:9/v1").await;
    let other = app.bootstrap_workspace("other").await;

    let (status, body) =
        app.call_as(&other, Method::GET, &format!("/v1/agents/{}", agent["id"].as_str().unwrap()), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_envelope(&body, "forbidden");

    let (status, body) = app.call_as(&other, Method::GET, "/v1/agents/private-bot", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "agent_not_found");

    let (status, list) = app.call_as(&other, Method::GET, "/v1/agents", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["pagination"]["total"], 0);
}

#[tokio::test]
async fn bootstrap_prints_the_key_once_and_refuses_an_existing_workspace() {
    let app = TestApp::spawn().await;
    let key = app.bootstrap_workspace("acme").await;
    assert!(key.starts_with("rq_"));
    assert_eq!(app.call_as(&key, Method::GET, "/v1/agents", None).await.0, StatusCode::OK);

    let (ok, out) = app.env.run("runq-api", &["bootstrap", "--workspace", "acme"]).await;
    assert!(!ok, "a second bootstrap of the same workspace must fail, printed {out}");
    assert!(out.trim().is_empty(), "no key is printed on failure");

    let (hash_count,): (i64,) = sqlx::query_as("select count(*) from api_keys where prefix = $1")
        .bind(&key[..11])
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(hash_count, 1);
    let (stored,): (i64,) =
        sqlx::query_as("select count(*) from api_keys where encode(key_hash, 'escape') like '%' || $1 || '%'")
            .bind(&key[11..])
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(stored, 0, "the key is stored hashed, never in clear");
}

/// Spawned: the API process is killed and another one started on the same database.
#[tokio::test]
async fn the_admin_key_bootstrap_is_idempotent_across_restarts() {
    let mut app = TestApp::spawn_binary(Env::new().await).await;
    app.api.child_mut().kill().await.unwrap();
    let restarted = TestApp::spawn_binary(app.env.clone()).await;
    assert_eq!(restarted.call(Method::GET, "/v1/agents", None).await.0, StatusCode::OK);
    let (keys,): (i64,) = sqlx::query_as("select count(*) from api_keys").fetch_one(&restarted.db).await.unwrap();
    assert_eq!(keys, 1);
}
