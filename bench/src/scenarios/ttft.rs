//! Added time to first token: the same streamed request straight to the mock provider (until the
//! first content delta) and through runq (`POST /v1/run` with `stream: true`, until the first
//! `text-delta` frame), interleaved pair by pair, at concurrency 1 and 64.

use serde_json::json;

use super::Plan;
use super::pairs::{self, Endpoints, Side};
use super::sse::{is_content_delta, is_text_delta};
use crate::report::{Row, Target};
use crate::stack::Stack;
use crate::stats::ms;

/// A fixed provider latency: 10 ms to the first token, then 1 ms per token.
const PROMPT: &str = "[[mock ttft=10 delay=1 tokens=5]] how are you";

pub async fn run(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (concurrency, n) in plan.ttft {
        let endpoints = Endpoints::of(stack);
        let tag = format!("ttft-c{concurrency}");
        let measured = pairs::interleaved(concurrency, n, move |side| {
            let request = match side {
                Side::Direct => endpoints.direct(PROMPT, true),
                Side::Runq => endpoints.runq(PROMPT, &tag, json!({"stream": true})),
            };
            let first = if side == Side::Direct { is_content_delta } else { is_text_delta };
            pairs::time_to_first(request, first)
        })
        .await;
        rows.push(measured.latency_row("TTFT"));
        rows.push(measured.added_row("added TTFT", 50, Target::MaxMs(1.0)));
        rows.push(measured.added_row("added TTFT", 99, Target::MaxMs(2.0)));
        rows.push(breakdown(stack, concurrency).await?);
    }
    Ok(rows)
}

/// Where runq's time goes, from the timestamps the runs keep (Postgres clock): recorded →
/// started, of which job push → worker, and started → first token (which includes the
/// provider's own 10 ms).
async fn breakdown(stack: &Stack, concurrency: usize) -> anyhow::Result<Row> {
    let (to_start, queue_wait, to_token): (Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "select percentile_cont(0.5) within group (order by extract(epoch from started_at - created_at) * 1000),
                percentile_cont(0.5) within group (order by queue_wait_us / 1000.0),
                percentile_cont(0.5) within group (order by extract(epoch from first_token_at - started_at) * 1000)
         from runs where metadata->>'bench' = $1 and status = 'completed'",
    )
    .bind(format!("ttft-c{concurrency}"))
    .fetch_one(stack.db())
    .await?;
    let show = |v: Option<f64>| v.map_or_else(|| "?".into(), ms);
    Ok(Row::new(
        format!("runq TTFT c={concurrency}, medians from the runs table"),
        format!(
            "recorded → started {} ms (push → worker {} ms); started → first token {} ms (provider: 10 ms)",
            show(to_start),
            show(queue_wait),
            show(to_token)
        ),
    ))
}
