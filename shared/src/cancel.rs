//! Cancelling a run, from the API (a client's request, or a client that went away with
//! `cancel_on_disconnect`).

use serde_json::json;
use sqlx::PgPool;

use crate::broker::Broker;
use crate::db::runs::{self, Cancel};
use crate::events::{self, Event, Part, RunKeys};
use crate::id::{RunId, WorkspaceId};
use crate::{Error, Result};

/// Asks `run` to stop. A queued run ends here and now (its stream is closed with an `abort`); a
/// running one is signalled to its worker, which aborts the provider call and ends the run.
pub async fn request(db: &PgPool, broker: &Broker, workspace: WorkspaceId, run: RunId) -> Result<Cancel> {
    let outcome = runs::cancel(db, workspace, run).await?;
    let mut conn = broker.conn.clone();
    match outcome {
        Cancel::Cancelled => {
            let keys = RunKeys::new(broker.prefix(), run);
            let seq = events::last_seq(&mut conn, &keys).await?;
            let closing = [
                Event::new(
                    seq + 1,
                    &Part::DataRun { data: json!({"status": runs::status::CANCELLED}), transient: false },
                ),
                Event::new(seq + 2, &Part::Abort),
            ];
            events::append(&mut conn, &keys, &closing, true).await?;
            let log: Vec<_> = events::replay(&mut conn, &keys, 0)
                .await?
                .into_iter()
                .map(|e| json!({"seq": e.seq, "data": e.data}))
                .collect();
            runs::store_events(db, run, &serde_json::Value::Array(log)).await?;
        }
        Cancel::Cancelling => {
            redis::cmd("PUBLISH")
                .arg(events::control_channel(broker.prefix()))
                .arg(format!("cancel {run}"))
                .query_async::<()>(&mut conn)
                .await
                .map_err(Error::from)?;
        }
        Cancel::Finished => {}
    }
    Ok(outcome)
}
