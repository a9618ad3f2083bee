//! `runq keys create|ls|revoke` (a `manage` key).

use serde_json::json;

use super::{page_query, print_json};
use crate::args::KeysCommand;
use crate::client::Client;
use crate::error::{Exit, Result};
use crate::table::{self, cell};

pub async fn run(client: &Client, command: KeysCommand) -> Result<Exit> {
    match command {
        KeysCommand::Create { name, scopes } => {
            let scopes = if scopes.is_empty() { vec!["run".to_owned()] } else { scopes };
            let created = client.post("/v1/api-keys", &json!({"name": name, "scopes": scopes})).await?;
            // the key alone on stdout, so `KEY=$(runq keys create app)` works
            println!("{}", cell(&created["key"]));
            eprintln!("created {} with scopes {}; the key is shown this once", cell(&created["id"]), created["scopes"]);
        }
        KeysCommand::Ls { page, json } => {
            let page = client.get(&format!("/v1/api-keys?{}", page_query(page))).await?;
            if json {
                print_json(&page);
            } else {
                table::print_page(&page, &["ID", "NAME", "PREFIX", "SCOPES", "CREATED"], |k| {
                    let scopes = k["scopes"].as_array().into_iter().flatten().map(cell).collect::<Vec<_>>();
                    vec![cell(&k["id"]), cell(&k["name"]), cell(&k["prefix"]), scopes.join(","), cell(&k["created_at"])]
                });
            }
        }
        KeysCommand::Revoke { key } => {
            client.delete(&format!("/v1/api-keys/{key}")).await?;
            println!("revoked {key}");
        }
    }
    Ok(Exit::Success)
}
