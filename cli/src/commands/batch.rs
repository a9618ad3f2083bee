//! `runq batch AGENT FILE`: submit a JSON Lines file as one batch operation, follow its progress,
//! then write every item's result as a line, in file order. The operation lives on the server:
//! `--operation op_…` picks up one whose follower was interrupted.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::args::BatchArgs;
use crate::client::Client;
use crate::error::{Error, Exit, Result};

/// Results are read this many at a time (the API's largest page).
const PAGE: u64 = 100;
const POLL: Duration = Duration::from_millis(200);
/// In plain mode, a progress line at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

pub async fn run(client: &Client, args: BatchArgs) -> Result<Exit> {
    let operation = match (args.operation, args.agent, args.file) {
        (Some(operation), _, _) => operation,
        (None, Some(agent), Some(file)) => submit(client, &agent, &file).await?,
        _ => return Err(Error::Input("give AGENT and FILE, or --operation".into())),
    };
    let bar = !args.no_progress && std::io::stderr().is_terminal();
    let progress = tokio::select! {
        progress = follow(client, &operation, bar) => Some(progress?),
        _ = tokio::signal::ctrl_c() => None,
    };
    let Some(progress) = progress else {
        eprintln!("\ninterrupted; the batch goes on. Resume with: runq batch --operation {operation}");
        return Ok(Exit::Interrupted);
    };
    let written = write_results(client, &operation, progress.total, args.out.as_deref()).await?;
    let target = args.out.as_ref().map_or("stdout".to_owned(), |p| p.display().to_string());
    eprintln!("{} results: {} completed, {} not completed → {target}", written.total, written.completed, written.other);
    Ok(if written.other == 0 { Exit::Success } else { Exit::Failure })
}

/// Reads the queries of a JSON Lines file: each line a string (the query) or an object.
pub fn parse_queries(name: &str, text: &str) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() {
            continue;
        }
        let item = match serde_json::from_str(line) {
            Ok(Value::String(query)) => json!({ "query": query }),
            Ok(object @ Value::Object(_)) => object,
            Ok(_) => return Err(Error::Input(format!("{name}:{number}: expected a string or an object"))),
            Err(e) => return Err(Error::Input(format!("{name}:{number}: not JSON: {e}"))),
        };
        items.push(item);
    }
    if items.is_empty() {
        return Err(Error::Input(format!("{name}: no queries")));
    }
    Ok(items)
}

async fn submit(client: &Client, agent: &str, file: &Path) -> Result<String> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(&name, e))?;
    let items = parse_queries(&name, &text)?;
    let count = items.len();
    let accepted = client.post("/v1/run", &json!({"agent_id": agent, "batch": items})).await?;
    let operation = accepted["operation_id"]
        .as_str()
        .ok_or_else(|| Error::Protocol { url: client.url("/v1/run"), reason: "no operation_id".into() })?
        .to_owned();
    eprintln!("submitted {count} queries as {operation}");
    Ok(operation)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

impl Progress {
    fn of(operation: &Value) -> Self {
        let count = |key: &str| operation["progress"][key].as_u64().unwrap_or(0);
        Self { total: count("total"), completed: count("completed"), failed: count("failed") }
    }

    fn finished(&self) -> u64 {
        self.completed + self.failed
    }

    fn is_done(&self) -> bool {
        self.finished() >= self.total
    }
}

/// Polls the operation until every item has finished, showing its progress.
async fn follow(client: &Client, operation: &str, bar: bool) -> Result<Progress> {
    let path = format!("/v1/operations/{operation}");
    let mut progress = Progress::of(&client.get(&path).await?);
    let bar = bar.then(|| {
        let bar = ProgressBar::new(progress.total);
        let style = ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    });
    let mut shown: Option<(Progress, Instant)> = None;
    loop {
        if let Some(bar) = &bar {
            bar.set_position(progress.finished());
            bar.set_message(format!("{} failed", progress.failed));
        } else if shown.is_none_or(|(last, at)| last != progress && (at.elapsed() >= PLAIN_EVERY || progress.is_done()))
        {
            print_progress(operation, progress);
            shown = Some((progress, Instant::now()));
        }
        if progress.is_done() {
            break;
        }
        tokio::time::sleep(POLL).await;
        progress = Progress::of(&client.get(&path).await?);
    }
    if let Some(bar) = bar {
        // the bar gives way to the same closing line as plain mode
        bar.finish_and_clear();
        print_progress(operation, progress);
    }
    Ok(progress)
}

fn print_progress(operation: &str, progress: Progress) {
    let Progress { total, completed, failed } = progress;
    eprintln!("{operation}: {}/{total} done ({completed} completed, {failed} failed)", progress.finished());
}

#[derive(Debug, Default)]
struct Written {
    total: u64,
    completed: u64,
    other: u64,
}

/// Pages through the results and writes one JSON line per item, in item order.
async fn write_results(client: &Client, operation: &str, total: u64, out: Option<&Path>) -> Result<Written> {
    let target = out.map_or("stdout".to_owned(), |p| p.display().to_string());
    let mut sink: Box<dyn Write> = match out {
        Some(path) => Box::new(BufWriter::new(File::create(path).map_err(|e| Error::io(&target, e))?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut written = Written::default();
    for page in 1..=total.div_ceil(PAGE) {
        let list = client.get(&format!("/v1/operations/{operation}/results?page={page}&limit={PAGE}")).await?;
        for run in list["data"].as_array().into_iter().flatten() {
            let line = json!({
                "index": written.total,
                "id": run["id"],
                "status": run["status"],
                "output": run["output"],
                "error": run["error"],
                "usage": run["usage"],
                "execution_time_ms": run["execution_time_ms"],
            });
            writeln!(sink, "{line}").map_err(|e| Error::io(&target, e))?;
            written.total += 1;
            if run["status"] == "completed" {
                written.completed += 1;
            } else {
                written.other += 1;
            }
        }
    }
    sink.flush().map_err(|e| Error::io(&target, e))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_strings_or_objects_and_blank_lines_are_skipped() {
        let items = parse_queries("q.jsonl", "\"hi\"\n\n{\"query\":\"x\",\"variables\":{\"a\":\"b\"}}\n").unwrap();
        assert_eq!(items, vec![json!({"query": "hi"}), json!({"query": "x", "variables": {"a": "b"}})]);
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let error = parse_queries("q.jsonl", "\"ok\"\nnot json\n").unwrap_err().to_string();
        assert!(error.starts_with("q.jsonl:2: not JSON"), "{error}");
        let error = parse_queries("q.jsonl", "42").unwrap_err().to_string();
        assert!(error.contains("q.jsonl:1: expected a string or an object"), "{error}");
        assert!(parse_queries("q.jsonl", "\n").is_err());
    }
}
