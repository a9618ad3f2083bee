//! What the rate-limit check adds to a request: `GET /v1/tools` (authentication and nothing else)
//! with a rate-limited key beside the same request with an unlimited key, interleaved pair by
//! pair. The limit is set far above what the bench sends, so every request is counted and none
//! is refused.

use anyhow::{Context, ensure};
use reqwest::StatusCode;
use serde_json::json;

use super::Plan;
use super::pairs::{self, Side};
use crate::report::Row;
use crate::stack::Stack;

pub async fn run(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let res = stack
        .post("/v1/api-keys")
        .json(&json!({"name": "bench-limited", "scopes": ["run"], "rate_limit_per_hour": 1_000_000_000}))
        .send()
        .await?;
    ensure!(res.status() == StatusCode::CREATED, "minting a limited key: {}", res.status());
    let limited = res.json::<serde_json::Value>().await?["key"].as_str().context("key")?.to_owned();
    let (http, tools, unlimited) = (stack.http.clone(), format!("{}/v1/tools", stack.api), stack.admin_key.clone());

    let mut rows = Vec::new();
    for (concurrency, n) in plan.sync {
        let (http, tools, limited, unlimited) = (http.clone(), tools.clone(), limited.clone(), unlimited.clone());
        let measured = pairs::interleaved(concurrency, n, move |side| {
            let key = if side == Side::Direct { &unlimited } else { &limited };
            let request = http.get(&tools).header("x-api-key", key);
            async move {
                let (elapsed, _) = pairs::time_whole(request, StatusCode::OK).await?;
                Ok(elapsed)
            }
        })
        .await;
        if let Some(added) = crate::stats::Summary::of_ms(&measured.added) {
            let metric = format!("rate-limit check added to a request c={concurrency} (p50 / p90 / p99)");
            let baseline = crate::stats::Summary::of_ms(&measured.direct)
                .map(|s| format!("unlimited key: {s}"))
                .unwrap_or_default();
            rows.push(Row::new(metric, added.to_string()).baseline(baseline));
        } else {
            rows.push(Row::na(format!("rate-limit check c={concurrency}"), "no measured pairs"));
        }
    }
    Ok(rows)
}
