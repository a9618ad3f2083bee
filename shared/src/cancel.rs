//! Cancelling a run (a client's request, or a streaming client that went away with
//! `cancel_on_disconnect`), and ending the stream of a run that finished outside a worker.

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
            crate::metrics::run_finished(runs::RunStatus::Cancelled);
            close_stream(db, broker, run, &cancelled_parts()).await?;
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

/// The closing parts of a cancelled run's stream (as the worker sends them too).
pub fn cancelled_parts() -> [Part; 2] {
    [Part::DataRun { data: json!({"status": runs::RunStatus::Cancelled}), transient: false }, Part::Abort]
}

/// Ends the stream of a run that finished outside a worker (cancelled while queued, or ended by
/// the reconciler): appends and announces `parts` after the last event, then keeps the whole log
/// in Postgres.
pub async fn close_stream(db: &PgPool, broker: &Broker, run: RunId, parts: &[Part]) -> Result<()> {
    let keys = RunKeys::new(broker.prefix(), run);
    let mut conn = broker.conn.clone();
    let last = events::last_seq(&mut conn, &keys).await?;
    let closing: Vec<Event> = (last + 1..).zip(parts).map(|(seq, part)| Event::new(seq, part)).collect();
    events::append(&mut conn, &keys, &closing, &[]).await?;
    let log = events::replay(&mut conn, &keys, 0).await?;
    runs::store_events(db, run, &log).await
}
