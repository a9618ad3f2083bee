//! Sync `POST /v1/run` latency with a zero-latency provider and a short answer, beside the same
//! request sent straight to the mock without streaming, interleaved pair by pair, at
//! concurrency 1 and 64.

use anyhow::ensure;
use reqwest::StatusCode;
use serde_json::json;

use super::Plan;
use super::pairs::{self, Endpoints, Side};
use crate::report::Row;
use crate::stack::Stack;

const PROMPT: &str = "[[mock tokens=5]] short answer please";

pub async fn run(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (concurrency, n) in plan.sync {
        let endpoints = Endpoints::of(stack);
        let tag = format!("sync-c{concurrency}");
        let measured = pairs::interleaved(concurrency, n, move |side| {
            let request = match side {
                Side::Direct => endpoints.direct(PROMPT, false),
                Side::Runq => endpoints.runq(PROMPT, &tag, json!({})),
            };
            async move {
                let (elapsed, body) = pairs::time_whole(request, StatusCode::OK).await?;
                ensure!(side == Side::Direct || body["status"] == "completed", "run not completed: {body}");
                Ok(elapsed)
            }
        })
        .await;
        rows.push(measured.latency_row("sync run latency"));
        let added = crate::stats::Summary::of_ms(&measured.added);
        if let Some(added) = added {
            rows.push(Row::new(format!("added sync latency c={concurrency} (p50 / p90 / p99)"), added.to_string()));
        }
    }
    Ok(rows)
}
