//! `runq approvals ls|approve|deny`: tool calls that wait for a person. Deciding the last pending
//! call of a run puts the run back on the queue; `runq runs tail` follows it on.

use serde_json::{Map, Value, json};

use super::{page_query, print_json};
use crate::args::ApprovalsCommand;
use crate::client::Client;
use crate::error::{Exit, Result};
use crate::stream::cut;
use crate::table::{self, cell};

pub async fn run(client: &Client, command: ApprovalsCommand) -> Result<Exit> {
    match command {
        ApprovalsCommand::Ls { status, page, json } => {
            let mut query = page_query(page);
            if let Some(status) = status {
                query.push_str(&format!("&status={status}"));
            }
            let page = client.get(&format!("/v1/approvals?{query}")).await?;
            if json {
                print_json(&page);
                return Ok(Exit::Success);
            }
            table::print_page(&page, &["ID", "STATUS", "TOOL", "ARGUMENTS", "RUN", "CREATED"], |a| {
                vec![
                    cell(&a["id"]),
                    cell(&a["status"]),
                    cell(&a["tool_name"]),
                    cut(&a["arguments"], 60),
                    cell(&a["run_id"]),
                    cell(&a["created_at"]),
                ]
            });
            eprintln!(
                "page {} of {} ({} approvals)",
                page["pagination"]["page"], page["pagination"]["pages"], page["pagination"]["total"]
            );
        }
        ApprovalsCommand::Approve { approval, reason, payload_hash } => {
            let decided = decide(client, &approval, "approve", reason, payload_hash).await?;
            println!("approved {approval}: tool {} {}", cell(&decided["tool_name"]), cut(&decided["arguments"], 160));
            eprintln!("the run goes on once none of its calls waits: runq runs tail {}", cell(&decided["run_id"]));
        }
        ApprovalsCommand::Deny { approval, reason } => {
            let decided = decide(client, &approval, "deny", reason, None).await?;
            let why = decided["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
            println!("denied {approval}: tool {}{why}", cell(&decided["tool_name"]));
            eprintln!("the model is told; follow the run: runq runs tail {}", cell(&decided["run_id"]));
        }
    }
    Ok(Exit::Success)
}

/// `POST /v1/approvals/{id}/approve|deny` with only the fields given.
async fn decide(
    client: &Client,
    approval: &str,
    decision: &str,
    reason: Option<String>,
    payload_hash: Option<String>,
) -> Result<Value> {
    let mut body = Map::new();
    if let Some(reason) = reason {
        body.insert("reason".into(), json!(reason));
    }
    if let Some(hash) = payload_hash {
        body.insert("payload_hash".into(), json!(hash));
    }
    client.post(&format!("/v1/approvals/{approval}/{decision}"), &Value::Object(body)).await
}
