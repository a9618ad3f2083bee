//! The reconciler and the lease keeper: what makes the insert-then-push gap, a lost job, a
//! flushed Redis or a dead worker cost a delay instead of a run. Every worker runs both; the
//! queries take rows with `skip locked`, so they never fight.

use std::sync::Arc;
use std::time::Duration;

use runq_shared::cancel;
use runq_shared::db::approvals;
use runq_shared::db::runs::{self, Lost, Requeued, RunStatus};
use runq_shared::events::Part;
use runq_shared::queue::{self, Job};
use tokio_util::sync::CancellationToken;

use crate::control::Stop;
use crate::execute::Ctx;

/// Most runs one reconciler pass hands back.
const PASS_LIMIT: i64 = 1000;

/// Renews this worker's leases every third of the lease.
pub async fn keep_leases(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = runs::renew_leases(&ctx.claims, &ctx.worker_id, &ctx.registry.ids(), ctx.lease).await {
            tracing::warn!(error = %e, "lease renewal failed");
        }
        // a cancel whose signal was missed is still found here
        match runs::cancel_requested(&ctx.db, &ctx.worker_id).await {
            Ok(cancelled) => cancelled.into_iter().for_each(|run| ctx.registry.stop(run, Stop::Cancel)),
            Err(e) => tracing::warn!(error = %e, "cancel check failed"),
        }
    }
}

/// Re-pushes lost jobs and runs whose lease expired.
pub async fn reconcile(ctx: Arc<Ctx>, every: Duration, requeue_after: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = pass(&ctx, requeue_after).await {
            tracing::warn!(error = %e, "reconciler pass failed");
        }
    }
}

async fn pass(ctx: &Ctx, requeue_after: Duration) -> anyhow::Result<()> {
    for lost in runs::end_lost(&ctx.db, PASS_LIMIT).await? {
        runq_shared::metrics::run_finished(lost.status);
        close_stream(ctx, &lost).await?;
    }
    let expired = runs::requeue_expired(&ctx.claims, PASS_LIMIT).await?;
    let stale = runs::requeue_stale(&ctx.claims, requeue_after, PASS_LIMIT).await?;
    // approvals nobody decided in time count as denied; their runs go on
    let undecided = approvals::expire(&ctx.db, PASS_LIMIT).await?;
    if expired.is_empty() && stale.is_empty() && undecided.is_empty() {
        return Ok(());
    }
    tracing::info!(expired = expired.len(), stale = stale.len(), undecided = undecided.len(), "re-enqueueing runs");
    let jobs: Vec<Job> = expired
        .iter()
        .chain(&stale)
        .map(|r: &Requeued| Job::new(r.id, r.workspace_id, r.cap))
        .chain(undecided.iter().map(|r| Job::new(r.run, r.workspace, r.cap)))
        .collect();
    metrics::counter!(runq_shared::metrics::RECONCILER_REQUEUED_TOTAL).increment(jobs.len() as u64);
    queue::push(&mut ctx.broker.conn.clone(), ctx.broker.queue(), &jobs).await?;
    Ok(())
}

/// Ends the event stream of a run the reconciler ended, so its clients see why.
async fn close_stream(ctx: &Ctx, lost: &Lost) -> anyhow::Result<()> {
    tracing::warn!(run_id = %lost.id, status = lost.status.as_str(), "run ended by the reconciler");
    let message = lost.error["message"].as_str().unwrap_or("the run failed").to_owned();
    let parts = if lost.status == RunStatus::Cancelled {
        cancel::cancelled_parts().to_vec()
    } else {
        vec![Part::Error { error_text: message }]
    };
    Ok(cancel::close_stream(&ctx.db, &ctx.broker, lost.id, &parts).await?)
}
