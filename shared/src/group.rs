//! Group commit: callers that arrive while a statement is in flight are written together, in one
//! multi-row statement, by the next free writer. A lone caller is written at once (no timer), and
//! each caller is answered only once its own item is committed.
//!
//! Three statements use it: admissions at the API ([`crate::admission`]), claims and finishes
//! in the worker ([`crate::db::runs::Claims`], [`crate::db::runs::Finishes`]). Under load they
//! cost Postgres one statement (and one commit) per group instead of one per run.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{Error, Result};

/// A statement that can write many items at once.
pub trait Statement: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    /// Writes `items` together and returns one output per item, in their order.
    fn write(&self, items: &[Self::Item]) -> impl Future<Output = Result<Vec<Self::Output>>> + Send;

    /// How much of a group an item takes (a 100-run admission counts 100).
    fn size(_item: &Self::Item) -> usize {
        1
    }
}

/// The handle callers submit through; cheap to clone.
pub struct GroupCommit<S: Statement> {
    queue: mpsc::Sender<Pending<S>>,
    /// Items submitted and not yet answered.
    unanswered: Arc<AtomicUsize>,
}

impl<S: Statement> Clone for GroupCommit<S> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone(), unanswered: self.unanswered.clone() }
    }
}

impl<S: Statement> std::fmt::Debug for GroupCommit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

/// An item waiting to be written, and where to answer.
struct Pending<S: Statement> {
    item: S::Item,
    done: oneshot::Sender<Result<(S::Item, S::Output)>>,
}

impl<S: Statement> GroupCommit<S> {
    /// Starts `writers` concurrent writers of `statement`, each writing groups of at most
    /// `max_size`.
    pub fn start(statement: S, writers: usize, max_size: usize) -> Self {
        let (queue, waiting) = mpsc::channel(4096);
        tokio::spawn(form_groups(Arc::new(statement), waiting, writers.max(1), max_size.max(1)));
        Self { queue, unanswered: Arc::default() }
    }

    /// Writes `item` (with whatever else is waiting) and hands it back with its output once
    /// committed.
    pub async fn submit(&self, item: S::Item) -> Result<(S::Item, S::Output)> {
        self.unanswered.fetch_add(1, Ordering::Relaxed);
        let _answered = Answered(&self.unanswered);
        let (done, answer) = oneshot::channel();
        let closed = || Error::Database(sqlx::Error::PoolClosed);
        self.queue.send(Pending { item, done }).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Whether nothing is being written: an item submitted now is written at once, alone.
    pub fn idle(&self) -> bool {
        self.unanswered.load(Ordering::Relaxed) == 0
    }
}

/// Counts a submitted item as answered when dropped (its caller may give up waiting).
struct Answered<'a>(&'a AtomicUsize);

impl Drop for Answered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a writer, then everything queued by then (at least one item), and writes it.
async fn form_groups<S: Statement>(
    statement: Arc<S>,
    mut waiting: mpsc::Receiver<Pending<S>>,
    writers: usize,
    max_size: usize,
) {
    let writers = Arc::new(Semaphore::new(writers));
    loop {
        let Ok(writer) = writers.clone().acquire_owned().await else { return };
        let Some(first) = waiting.recv().await else { return };
        let mut size = S::size(&first.item);
        let mut group = vec![first];
        while size < max_size {
            let Ok(next) = waiting.try_recv() else { break };
            size += S::size(&next.item);
            group.push(next);
        }
        let statement = statement.clone();
        tokio::spawn(async move {
            write_group(&*statement, group).await;
            drop(writer);
        });
    }
}

async fn write_group<S: Statement>(statement: &S, group: Vec<Pending<S>>) {
    let (items, answers): (Vec<S::Item>, Vec<_>) = group.into_iter().map(|p| (p.item, p.done)).unzip();
    match statement.write(&items).await.and_then(|outputs| one_each(outputs, items.len())) {
        Ok(outputs) => {
            for ((item, output), done) in items.into_iter().zip(outputs).zip(answers) {
                let _ = done.send(Ok((item, output)));
            }
        }
        Err(e) if items.len() == 1 => {
            let _ = answers.into_iter().next().map(|done| done.send(Err(e)));
        }
        Err(Error::Database(e)) if crate::db::is_unavailable(&e) => {
            // Postgres is away: written one by one, each caller would wait for a connection in
            // turn (a client waited 10 s and more for its 503)
            for done in answers {
                let _ = done.send(Err(Error::Database(same_outage(&e))));
            }
        }
        Err(e) => {
            // one item's failure must not fail the others: write each on its own
            tracing::warn!(error = %e, items = items.len(), "group write failed; writing one by one");
            for (item, done) in items.into_iter().zip(answers) {
                let written = statement.write(std::slice::from_ref(&item)).await.and_then(|o| one_each(o, 1));
                let _ = done.send(written.map(|mut outputs| (item, outputs.remove(0))));
            }
        }
    }
}

/// An error telling another caller of the group what `e` told the first.
fn same_outage(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        e => sqlx::Error::Io(std::io::Error::other(e.to_string())),
    }
}

/// `outputs`, when there is one per item.
fn one_each<T>(outputs: Vec<T>, items: usize) -> Result<Vec<T>> {
    if outputs.len() == items {
        return Ok(outputs);
    }
    let message = format!("a group write of {items} items answered {}", outputs.len());
    Err(Error::Database(sqlx::Error::Protocol(message)))
}
