//! runq's Redis queue as an apalis [`Backend`]: the worker's source of jobs.
//!
//! The queue stays runq's own ([`runq_shared::queue`]: one list per workspace served round-robin,
//! a blocking wake-up); this module only lets apalis drive it. apalis asks for a job when its
//! service stack has a free slot; the backend then pops as many jobs as there are free slots (one
//! round trip), hands them out one by one, and when the queue is empty parks on the blocking
//! wait, so an idle worker starts a pushed job at once rather than at its next poll.
//!
//! It never ends the worker: an empty or failed pop parks or backs off and tries again (apalis
//! stops a worker whose backend yields `None` or an error). Jobs popped but not handed out when
//! the worker stops are pushed back, a wait in flight included (it ends within a second).

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{Backend, Task, TaskBuilder, TaskId, WorkerContext};
use apalis_core::backend::BackendConfig;
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::layers::Identity;
use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use runq_shared::queue::{self, Job, QueueKeys, Wake};

/// How long one blocking wait lasts before the worker looks at its state again, in seconds.
const WAIT_TIMEOUT_SECS: f64 = 1.0;
/// Pause after a failed pop or wait (Redis away) before trying again.
const BACKOFF: Duration = Duration::from_millis(500);
/// Most jobs taken in one pop.
const POP_MAX: usize = 64;

/// The queue as a source of apalis tasks.
pub struct RedisQueue {
    /// Pops and pushes.
    conn: ConnectionManager,
    /// Blocking waits only (no response timeout; a blocking command would stall a shared one).
    waiter: ConnectionManager,
    keys: QueueKeys,
    /// The worker's concurrency: a pop takes at most the slots not taken by running jobs.
    slots: usize,
    /// Popped, not yet handed out.
    popped: VecDeque<Job>,
    fetch: Option<Fetch>,
}

/// The round trip in flight.
enum Fetch {
    /// Taking jobs: finished even when the worker stops, so no popped job is dropped.
    Pop(BoxFuture<'static, Vec<Job>>),
    /// Waiting for the bell: finished even when the worker stops, since it may bring a job.
    Wait(BoxFuture<'static, Wake>),
    /// Returning popped, unstarted jobs to the queue (the worker is stopping).
    PushBack(BoxFuture<'static, ()>),
}

impl RedisQueue {
    pub fn new(conn: ConnectionManager, waiter: ConnectionManager, keys: QueueKeys, slots: usize) -> Self {
        Self { conn, waiter, keys, slots: slots.max(1), popped: VecDeque::new(), fetch: None }
    }

    fn pop(&self, max: usize) -> Fetch {
        let (mut conn, keys) = (self.conn.clone(), self.keys.clone());
        Fetch::Pop(async move { or_back_off(queue::pop(&mut conn, &keys, max).await, "pop").await }.boxed())
    }

    fn wait(&self) -> Fetch {
        let (mut waiter, keys) = (self.waiter.clone(), self.keys.clone());
        Fetch::Wait(
            async move { or_back_off(queue::wait(&mut waiter, &keys, WAIT_TIMEOUT_SECS).await, "wait").await }.boxed(),
        )
    }
}

impl RedisQueue {
    /// Hands back what was popped but not started; the reconciler re-pushes it if this fails.
    fn push_back(&mut self) -> Fetch {
        let jobs: Vec<Job> = self.popped.drain(..).collect();
        let (mut conn, keys) = (self.conn.clone(), self.keys.clone());
        Fetch::PushBack(
            async move {
                if let Err(e) = queue::push(&mut conn, &keys, &jobs).await {
                    tracing::warn!(error = %e, "could not push back unstarted jobs; the reconciler will");
                }
            }
            .boxed(),
        )
    }
}

/// What a queue command returned; after a failure (Redis away), logged, nothing once [`BACKOFF`]
/// has passed, so the backend tries again rather than ending the worker.
async fn or_back_off<T: Default>(result: redis::RedisResult<T>, command: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!(error = %e, "queue {command} failed; retrying");
            tokio::time::sleep(BACKOFF).await;
            T::default()
        }
    }
}

/// A job as an apalis task, with an id of its own for every push (apalis expects ids unique).
fn task(job: Job) -> Task<Job> {
    let id = TaskId::from_string(format!("{}-{}", job.run, job.pushed_at_us));
    TaskBuilder::new(job).task_id(id).build()
}

impl Backend for RedisQueue {
    type Task = Task<Job>;
    type Error = std::convert::Infallible;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Task<Job>, Self::Error>>> {
        loop {
            if let Some(job) = self.popped.pop_front() {
                return Poll::Ready(Some(Ok(task(job))));
            }
            // apalis asks only when a slot is free: take what the free slots can start
            let free = self.slots.saturating_sub(worker.task_count()).clamp(1, POP_MAX);
            if self.fetch.is_none() {
                self.fetch = Some(self.pop(free));
            }
            let next = match self.fetch.as_mut().expect("a fetch was just started") {
                Fetch::Pop(popping) => match popping.poll_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(jobs) if jobs.is_empty() => Some(self.wait()),
                    Poll::Ready(jobs) => {
                        self.popped.extend(jobs);
                        None
                    }
                },
                Fetch::Wait(waiting) => match waiting.poll_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(wake) => {
                        let pops = wake.pops();
                        self.popped.extend(wake.job);
                        // a job alone: what was pushed since rang the bell behind it
                        (!pops).then(|| self.wait())
                    }
                },
                Fetch::PushBack(pushing) => match pushing.poll_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => None,
                },
            };
            self.fetch = next;
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        loop {
            match &mut self.fetch {
                Some(Fetch::Pop(popping)) => {
                    let Poll::Ready(jobs) = popping.poll_unpin(cx) else { return Poll::Pending };
                    self.popped.extend(jobs);
                    self.fetch = None;
                }
                Some(Fetch::Wait(waiting)) => {
                    let Poll::Ready(wake) = waiting.poll_unpin(cx) else { return Poll::Pending };
                    self.popped.extend(wake.job);
                    self.fetch = None;
                }
                Some(Fetch::PushBack(pushing)) => {
                    let Poll::Ready(()) = pushing.poll_unpin(cx) else { return Poll::Pending };
                    self.fetch = None;
                }
                None if self.popped.is_empty() => return Poll::Ready(Ok(())),
                None => self.fetch = Some(self.push_back()),
            }
        }
    }
}

impl BackendConfig for RedisQueue {
    type Args = Job;
    type Id = String;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Identity {
        Identity::new()
    }
}
