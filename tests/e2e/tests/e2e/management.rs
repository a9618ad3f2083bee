use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use runq_e2e::{Cluster, Env, TestApp, assert_envelope};
use serde_json::{Value, json};

async fn provider(app: &TestApp, name: &str) -> Value {
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/providers",
            Some(json!({"name": name, "kind": "anthropic", "base_url": "https://api.anthropic.com/v1", "api_key": "sk-ant-very-secret-123"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn version(app: &TestApp, agent: &str, body: Value) -> (StatusCode, Value) {
    app.call(Method::POST, &format!("/v1/agents/{agent}/versions"), Some(body)).await
}

#[tokio::test]
async fn the_provider_secret_is_never_returned_and_is_sealed_at_rest() {
    let app = TestApp::spawn().await;
    let created = provider(&app, "claude").await;
    assert_eq!(created["has_api_key"], true);
    assert!(created.get("api_key").is_none());

    let (_, one) = app.call(Method::GET, "/v1/providers/claude", None).await;
    let (_, list) = app.call(Method::GET, "/v1/providers", None).await;
    for body in [&created, &one, &list] {
        assert!(!body.to_string().contains("very-secret"), "{body}");
    }
    assert_eq!(one["id"], created["id"]);

    let (sealed,): (Vec<u8>,) =
        sqlx::query_as("select api_key_sealed from providers").fetch_one(&app.db).await.unwrap();
    assert!(!sealed.is_empty());
    assert!(!sealed.windows(11).any(|w| w == b"very-secret"), "secret stored in plaintext");
}

#[tokio::test]
async fn agents_can_be_created_read_updated_and_archived() {
    let app = TestApp::spawn().await;
    let (status, agent) = app
        .call(Method::POST, "/v1/agents", Some(json!({"name": "Support Bot", "description": "helps", "tags": ["a"]})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(agent["slug"], "support-bot");
    assert!(agent["id"].as_str().unwrap().starts_with("agt_"));

    let (_, by_slug) = app.call(Method::GET, "/v1/agents/support-bot", None).await;
    let (_, by_id) = app.call(Method::GET, &format!("/v1/agents/{}", agent["id"].as_str().unwrap()), None).await;
    assert_eq!(by_slug, by_id);

    let (status, patched) = app
        .call(Method::PATCH, "/v1/agents/support-bot", Some(json!({"description": "helps more", "slug": "helper"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["description"], "helps more");
    assert_eq!(patched["name"], "Support Bot");
    assert_eq!(patched["slug"], "helper");

    let (status, archived) = app.call(Method::DELETE, "/v1/agents/helper", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(archived["archived"], true);
    let (_, listed) = app.call(Method::GET, "/v1/agents", None).await;
    assert_eq!(listed["pagination"]["total"], 0);
    let (_, listed) = app.call(Method::GET, "/v1/agents?include_archived=true", None).await;
    assert_eq!(listed["pagination"]["total"], 1);
}

#[tokio::test]
async fn a_taken_slug_is_a_409() {
    let app = TestApp::spawn().await;
    assert_eq!(app.call(Method::POST, "/v1/agents", Some(json!({"name": "bot"}))).await.0, StatusCode::CREATED);
    let (status, body) = app.call(Method::POST, "/v1/agents", Some(json!({"name": "Bot"}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_envelope(&body, "agent_slug_taken");
}

#[tokio::test]
async fn listings_paginate_with_metadata() {
    let app = TestApp::spawn().await;
    for i in 0..5 {
        app.call(Method::POST, "/v1/agents", Some(json!({"name": format!("agent {i}")}))).await;
    }
    let (status, page) = app.call(Method::GET, "/v1/agents?page=2&limit=2", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["pagination"], json!({"page": 2, "limit": 2, "total": 5, "pages": 3}));
    let names: Vec<_> = page["data"].as_array().unwrap().iter().map(|a| a["name"].clone()).collect();
    assert_eq!(names, [json!("agent 2"), json!("agent 3")]);
    let (_, last) = app.call(Method::GET, "/v1/agents?page=3&limit=2", None).await;
    assert_eq!(last["data"].as_array().unwrap().len(), 1);

    let (status, body) = app.call(Method::GET, "/v1/agents?limit=1000", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"]["field"], "limit");
}

#[tokio::test]
async fn versions_cannot_be_changed_after_creation() {
    let app = TestApp::spawn().await;
    provider(&app, "p").await;
    app.call(Method::POST, "/v1/agents", Some(json!({"name": "bot"}))).await;
    let (status, v1) =
        version(&app, "bot", json!({"provider": "p", "model": "m1", "system_prompt": "be {{tone}}"})).await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");
    assert_eq!(v1["number"], 1);

    let path = format!("/v1/agents/bot/versions/{}", v1["id"].as_str().unwrap());
    let (status, body) = app.call(Method::PATCH, &path, Some(json!({"model": "m2"}))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_envelope(&body, "method_not_allowed");

    let direct = sqlx::query("update agent_versions set model = 'm2'").execute(&app.db).await;
    assert!(direct.is_err(), "the database itself must refuse to change a version");
    let (_, unchanged) = app.call(Method::GET, &path, None).await;
    assert_eq!(unchanged["model"], "m1");
    assert_eq!(unchanged["system_prompt"], "be {{tone}}");
}

#[tokio::test]
async fn deploying_switches_the_deployed_version_and_exactly_one_is_deployed() {
    let app = TestApp::spawn().await;
    provider(&app, "p").await;
    app.call(Method::POST, "/v1/agents", Some(json!({"name": "bot"}))).await;
    let (_, v1) = version(&app, "bot", json!({"provider": "p", "model": "m1", "deploy": true})).await;
    let (_, v2) = version(&app, "bot", json!({"provider": "p", "model": "m2"})).await;
    assert_eq!(v1["deployed"], true);
    assert_eq!(v2["deployed"], false);

    let deployed = |app: &TestApp| {
        let db = app.db.clone();
        async move {
            sqlx::query_as::<_, (String,)>("select model from agent_versions where deployed")
                .fetch_all(&db)
                .await
                .unwrap()
                .into_iter()
                .map(|(m,)| m)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(deployed(&app).await, ["m1"]);

    let (status, body) = app.call(Method::POST, "/v1/agents/bot/deploy", Some(json!({"version_id": v2["id"]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(deployed(&app).await, ["m2"]);
    let (_, agent) = app.call(Method::GET, "/v1/agents/bot", None).await;
    assert_eq!(agent["deployed_version_id"], v2["id"]);

    // rollback
    app.call(Method::POST, "/v1/agents/bot/deploy", Some(json!({"version_id": v1["id"]}))).await;
    assert_eq!(deployed(&app).await, ["m1"]);

    let (_, versions) = app.call(Method::GET, "/v1/agents/bot/versions", None).await;
    assert_eq!(versions["pagination"]["total"], 2);
    assert_eq!(versions["data"][0]["number"], 2, "newest first");

    let direct = sqlx::query("update agent_versions set deployed = true").execute(&app.db).await;
    assert!(direct.is_err(), "the database refuses two deployed versions");
}

#[tokio::test]
async fn a_version_naming_an_unknown_provider_or_tool_is_refused() {
    let app = TestApp::spawn().await;
    provider(&app, "p").await;
    app.call(Method::POST, "/v1/agents", Some(json!({"name": "bot"}))).await;

    let (status, body) = version(&app, "bot", json!({"provider": "nope", "model": "m"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "provider_not_found");
    assert_eq!(body["message"], "Provider not found");

    let (status, body) = version(&app, "bot", json!({"provider": "p", "model": "m", "tools": ["rm_rf"]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"]["field"], "tools");

    let (status, body) = version(&app, "ghost", json!({"provider": "p", "model": "m"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "agent_not_found");

    let (count,): (i64,) = sqlx::query_as("select count(*) from agent_versions").fetch_one(&app.db).await.unwrap();
    assert_eq!(count, 0, "refused versions leave nothing behind");
}

#[tokio::test]
async fn keys_are_listed_by_prefix_only() {
    let app = TestApp::spawn().await;
    let key = app.create_key(&["run"]).await;
    let (status, list) = app.call(Method::GET, "/v1/api-keys", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["pagination"]["total"], 2);
    assert!(!list.to_string().contains(&key), "a listing never shows a key");
    assert!(list["data"].as_array().unwrap().iter().any(|k| key.starts_with(k["prefix"].as_str().unwrap())));
}

/// Each API caches an agent's deployed version for `RUNQ_AGENT_CACHE_TTL_MS`: a deploy (here, a
/// new version with `deploy: true`) applies at once to the runs of the replica it went through,
/// and to another replica's once its entry expires. Runs through both had cached the old version.
#[tokio::test]
async fn a_deploy_reaches_its_replica_at_once_and_another_within_the_agent_cache_ttl() {
    let ttl = Duration::from_secs(2);
    let env = Env::new().await.with("RUNQ_AGENT_CACHE_TTL_MS", &ttl.as_millis().to_string());
    let cluster = Cluster::start(2, 1, env).await;
    cluster.agent("bot", "openai", json!({})).await;
    let version_of = |api: usize| {
        let cluster = &cluster;
        async move {
            let (status, run) = cluster.run(api, json!({"agent_id": "bot", "prompt": "which version?"})).await;
            assert_eq!(status, StatusCode::OK, "{run}");
            run["version_id"].as_str().expect("version id").to_owned()
        }
    };
    let first = version_of(0).await;
    assert_eq!(version_of(1).await, first);

    let body = json!({"provider": "bot-provider", "model": "mock-model-2", "deploy": true});
    let (status, second) = cluster.call(0, Method::POST, "/v1/agents/bot/versions", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second = second["id"].as_str().expect("version id").to_owned();
    assert_ne!(second, first);
    assert_eq!(version_of(0).await, second, "the replica that took the deploy uses it at once");

    let deadline = Instant::now() + ttl + Duration::from_secs(5);
    while version_of(1).await != second {
        assert!(Instant::now() < deadline, "the other replica still runs the old version after its cache TTL");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
