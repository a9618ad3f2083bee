//! A batch of 10,000 queries: the time until `POST /v1/run` with `batch: [...]` answers 202,
//! then the drain rate until `GET /v1/operations/{id}` reports it done.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::Plan;
use crate::report::{Row, Target, thousands};
use crate::stack::{AGENT, Stack};
use crate::stats::{millis, ms};

const POLL_EVERY: Duration = Duration::from_millis(50);
const GIVE_UP_AFTER: Duration = Duration::from_secs(180);

pub async fn run(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let n = plan.batch_size;
    let items: Vec<Value> = (0..n).map(|i| json!({"prompt": format!("[[mock tokens=5]] item {i}")})).collect();
    let body = serde_json::to_vec(&json!({"agent_id": AGENT, "batch": items, "metadata": {"bench": "batch"}}))?;
    let accept_metric = format!("{} batch accepted (202)", thousands(n as f64));

    let start = Instant::now();
    let res = stack.post("/v1/run").header("content-type", "application/json").body(body).send().await?;
    let accepted_in = start.elapsed();
    let status = res.status();
    let accepted: Value = res.json().await.unwrap_or_default();
    ensure!(status == StatusCode::ACCEPTED, "batch refused: {status} {accepted}");
    let operation = accepted["operation_id"].as_str().context("no operation_id")?.to_owned();
    let accept_row = Row::new(accept_metric, format!("{} ms", ms(millis(accepted_in))))
        .judged(Target::MaxSecs(1.0), accepted_in.as_secs_f64());

    let accepted_at = Instant::now();
    let done = loop {
        let progress: Value = stack.get(&format!("/v1/operations/{operation}")).send().await?.json().await?;
        if matches!(progress["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            break Some(progress);
        }
        if accepted_at.elapsed() > GIVE_UP_AFTER {
            break None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    let drain_metric = "batch drain rate (accepted → operation done)";
    let drain_row = match done {
        Some(progress) => {
            let secs = accepted_at.elapsed().as_secs_f64();
            let failed = progress["progress"]["failed"].as_i64().unwrap_or(0);
            let outcome = match failed {
                0 => String::new(),
                _ => format!(", {failed} runs failed"),
            };
            Row::new(
                drain_metric,
                format!(
                    "{} runs/s ({secs:.1} s, status {}{outcome})",
                    thousands(n as f64 / secs),
                    progress["status"].as_str().unwrap_or("?")
                ),
            )
        }
        None => Row::na(drain_metric, format!("not done after {} s", GIVE_UP_AFTER.as_secs())),
    };
    Ok(vec![accept_row, drain_row])
}
