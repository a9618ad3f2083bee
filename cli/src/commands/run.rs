//! `runq run AGENT PROMPT`: start a streamed run, show it as it happens, sum it up.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{TERMINAL, print_json};
use crate::args::RunArgs;
use crate::client::Client;
use crate::error::{Error, Exit, Result};
use crate::stream::{self, Viewer};

pub async fn run(client: &Client, args: RunArgs) -> Result<Exit> {
    let started = Instant::now();
    let variables: Map<String, Value> = args.vars.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let mut body = json!({"agent_id": args.agent, "prompt": args.prompt, "variables": variables, "stream": true});
    if let Some(thread) = args.thread {
        body["thread_id"] = json!(thread);
    }
    // the key lets Ctrl-C cancel the run even before its id is known
    let key = idempotency_key();
    let mut viewer = Viewer::new(!args.json, 0);
    let mut run_id = None;
    let follow = async {
        let request = client
            .request(Method::POST, "/v1/run")
            .header("accept", "text/event-stream")
            .header("idempotency-key", &key)
            .json(&body);
        let response = client.send(request).await?;
        let id = header(&response, "x-run-id")
            .ok_or_else(|| Error::Protocol { url: client.url("/v1/run"), reason: "no X-Run-ID header".into() })?;
        run_id = Some(id.clone());
        stream::watch(client, &id, Some(response), &mut viewer).await?;
        Ok::<_, Error>(id)
    };
    let followed = tokio::select! {
        followed = follow => Some(followed),
        _ = tokio::signal::ctrl_c() => None,
    };
    let Some(followed) = followed else {
        viewer.end_text();
        cancel(client, run_id.as_deref(), &key).await;
        return Ok(Exit::Interrupted);
    };
    let id = followed?;
    viewer.end_text();
    let run = if viewer.paused { client.get(&format!("/v1/runs/{id}")).await? } else { finished(client, &id).await? };
    if args.json {
        print_json(&run);
    }
    eprintln!("{}", summary(&run, started.elapsed()));
    if viewer.paused {
        eprintln!("{}", waiting(&id, &viewer));
    }
    Ok(Exit::of_run(&run))
}

/// What a person does about a run that waits for approval.
pub(crate) fn waiting(run: &str, viewer: &stream::Viewer) -> String {
    let asked = match viewer.approvals.len() {
        0 => "approval".to_owned(),
        1 => "an approval".to_owned(),
        n => format!("{n} approvals"),
    };
    format!(
        "the run waits for {asked} (runq approvals ls --status pending); once decided, it goes on: \
         runq runs tail {run} --after {}",
        viewer.last_seq
    )
}

/// Cancels the run on the server: by id once known, else by the request's idempotency key.
async fn cancel(client: &Client, run: Option<&str>, key: &str) {
    let request = match run {
        Some(id) => client.request(Method::POST, &format!("/v1/runs/{id}/cancel")),
        None => client.request(Method::POST, "/v1/runs/cancel").header("idempotency-key", key),
    };
    match client.json::<Value>(request).await {
        Ok(answer) => eprintln!("interrupted: run {} {}", answer["run_id"].as_str().unwrap_or("?"), answer["status"]),
        Err(Error::Api { status: 404, .. }) if run.is_none() => eprintln!("interrupted before the run was created"),
        Err(error) => eprintln!("interrupted; cancelling the run failed: {error}"),
    }
}

/// The run object once the server has recorded its end (it is written before the last event is
/// published, so this rarely waits).
async fn finished(client: &Client, id: &str) -> Result<Value> {
    let path = format!("/v1/runs/{id}");
    let mut run = client.get(&path).await?;
    for _ in 0..50 {
        if TERMINAL.contains(&run["status"].as_str().unwrap_or_default()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        run = client.get(&path).await?;
    }
    Ok(run)
}

/// `run_… completed · 12 tokens in, 5 out · 0.42 s`, plus the error of a failed run.
pub(crate) fn summary(run: &Value, elapsed: Duration) -> String {
    let usage = &run["usage"];
    let mut line = format!(
        "{} {} · {} tokens in, {} out · {:.2} s",
        run["id"].as_str().unwrap_or("?"),
        run["status"].as_str().unwrap_or("?"),
        usage["input_tokens"],
        usage["output_tokens"],
        elapsed.as_secs_f64(),
    );
    if let Some(message) = run["error"]["message"].as_str() {
        line.push_str(&format!("\nerror: {message}"));
    }
    line
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Unique per invocation; not a secret.
fn idempotency_key() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("runq-cli-{}-{nanos}", std::process::id())
}
