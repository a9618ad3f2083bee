//! `runq agents ls|create|versions|deploy` (a `manage` key).

use serde_json::json;

use super::{page_query, print_json};
use crate::args::{AgentCreate, AgentsCommand};
use crate::client::Client;
use crate::error::{Exit, Result};
use crate::table::{self, cell};

pub async fn run(client: &Client, command: AgentsCommand) -> Result<Exit> {
    match command {
        AgentsCommand::Ls { page, json } => {
            let page = client.get(&format!("/v1/agents?{}", page_query(page))).await?;
            if json {
                print_json(&page);
            } else {
                table::print_page(&page, &["ID", "SLUG", "NAME", "DEPLOYED"], |a| {
                    vec![cell(&a["id"]), cell(&a["slug"]), cell(&a["name"]), cell(&a["deployed_version_id"])]
                });
            }
        }
        AgentsCommand::Create(args) => create(client, args).await?,
        AgentsCommand::Versions { agent, page } => {
            let page = client.get(&format!("/v1/agents/{agent}/versions?{}", page_query(page))).await?;
            table::print_page(&page, &["ID", "NUMBER", "MODEL", "DEPLOYED", "CREATED"], |v| {
                let deployed = if v["deployed"] == true { "yes" } else { "" };
                vec![cell(&v["id"]), cell(&v["number"]), cell(&v["model"]), deployed.into(), cell(&v["created_at"])]
            });
        }
        AgentsCommand::Deploy { agent, version } => {
            let deployed = client.post(&format!("/v1/agents/{agent}/deploy"), &json!({"version_id": version})).await?;
            println!("deployed {} (version {}) of {agent}", cell(&deployed["id"]), cell(&deployed["number"]));
        }
    }
    Ok(Exit::Success)
}

async fn create(client: &Client, args: AgentCreate) -> Result<()> {
    let agent = client
        .post("/v1/agents", &json!({"name": args.name, "slug": args.slug, "description": args.description}))
        .await?;
    println!("created agent {} ({})", cell(&agent["id"]), cell(&agent["slug"]));
    if let (Some(provider), Some(model)) = (args.provider, args.model) {
        let body = json!({
            "provider": provider, "model": model, "system_prompt": args.system_prompt,
            "tools": args.tools, "deploy": args.deploy,
        });
        let version = client.post(&format!("/v1/agents/{}/versions", cell(&agent["id"])), &body).await?;
        let state = if version["deployed"] == true { "deployed" } else { "not deployed" };
        println!("created version {} ({state})", cell(&version["id"]));
    }
    Ok(())
}
