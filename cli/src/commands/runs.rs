//! `runq runs ls|get|tail|cancel`.

use std::time::Instant;

use serde_json::Value;

use super::{page_query, print_json};
use crate::args::{RunsCommand, RunsLs};
use crate::client::Client;
use crate::error::{Exit, Result};
use crate::stream::{self, Viewer};
use crate::table;

pub async fn run(client: &Client, command: RunsCommand) -> Result<Exit> {
    match command {
        RunsCommand::Ls(args) => list(client, args).await,
        RunsCommand::Get { run } => {
            print_json(&client.get(&format!("/v1/runs/{run}")).await?);
            Ok(Exit::Success)
        }
        RunsCommand::Tail { run, after } => tail(client, &run, after).await,
        RunsCommand::Cancel { run } => {
            let answer = client.post(&format!("/v1/runs/{run}/cancel"), &Value::Null).await?;
            println!("{} {}", table::cell(&answer["run_id"]), table::cell(&answer["status"]));
            Ok(Exit::Success)
        }
    }
}

async fn list(client: &Client, args: RunsLs) -> Result<Exit> {
    let mut query = page_query(args.page);
    for (name, value) in [("agent_id", &args.agent), ("status", &args.status), ("thread_id", &args.thread)] {
        if let Some(value) = value {
            query.push_str(&format!("&{name}={}", encode(value)));
        }
    }
    let page = client.get(&format!("/v1/runs?{query}")).await?;
    if args.json {
        print_json(&page);
        return Ok(Exit::Success);
    }
    table::print_page(&page, &["ID", "STATUS", "AGENT", "LATENCY", "TOKENS", "CREATED"], |run| {
        vec![
            table::cell(&run["id"]),
            table::cell(&run["status"]),
            table::cell(&run["agent_id"]),
            run["execution_time_ms"].as_i64().map_or("-".into(), |ms| format!("{ms} ms")),
            table::cell(&run["usage"]["total_tokens"]),
            table::cell(&run["created_at"]),
        ]
    });
    eprintln!(
        "page {} of {} ({} runs)",
        page["pagination"]["page"], page["pagination"]["pages"], page["pagination"]["total"]
    );
    Ok(Exit::Success)
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn tail(client: &Client, run: &str, after: u64) -> Result<Exit> {
    let started = Instant::now();
    let mut viewer = Viewer::new(true, after);
    stream::watch(client, run, None, &mut viewer).await?;
    viewer.end_text();
    let id = run;
    let run = client.get(&format!("/v1/runs/{id}")).await?;
    eprintln!("{}", super::run::summary(&run, started.elapsed()));
    if viewer.paused {
        eprintln!("{}", super::run::waiting(id, &viewer));
    }
    Ok(Exit::of_run(&run))
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(super::encode("thr_a b&c=d/é"), "thr_a%20b%26c%3Dd%2F%C3%A9");
    }
}
