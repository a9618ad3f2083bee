//! The job queue's scripts against a real Redis: what a push leaves in the bell, what an idle
//! worker's wait gets, and what a pop takes. Each test works under a prefix of its own, removed
//! at the end (`REDIS_URL`, default `redis://127.0.0.1:6379`: `make test` starts Redis).

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use runq_shared::id::{RunId, WorkspaceId};
use runq_shared::queue::{self, Depth, Job, QueueKeys, Wake};

/// A wake-up by a ring alone.
const RUNG: Wake = Wake { job: None, rung: true };
/// Long enough never to end a wait that has something to take.
const WAIT_SECS: f64 = 5.0;

/// A lone job pushed to an empty queue is the wake-up itself: the worker it wakes needs no pop,
/// and nothing is left behind.
#[tokio::test]
async fn a_job_pushed_to_an_empty_queue_comes_with_the_wake_up() {
    let mut queue = Queue::new().await;
    let job = job(WorkspaceId::new());

    queue.push(std::slice::from_ref(&job)).await;
    let depth = queue.depth().await;
    assert_eq!(depth, Depth { jobs: 1, oldest_pushed_at_us: Some(job.pushed_at_us) }, "the bell's job is counted");
    assert_eq!(queue.wait(WAIT_SECS).await, Wake { job: Some(job), rung: false });
    assert_eq!(queue.wait(0.1).await, Wake::default(), "nothing was rung behind the job");
    assert_eq!(queue.depth().await, Depth::default());
    queue.remove().await;
}

/// While the bell holds a job, the next one waits in its workspace's list and rings the bell
/// behind the job: the worker that wakes gets both, and pops. A batch rings the bell instead of
/// filling it.
#[tokio::test]
async fn a_job_pushed_while_the_bell_holds_one_rings_behind_it() {
    let mut queue = Queue::new().await;
    let workspace = WorkspaceId::new();
    let (first, second) = queue.job_and_one_behind(workspace).await;
    assert_eq!(queue.depth().await.jobs, 2);
    let wake = queue.wait(WAIT_SECS).await;
    assert!(wake.pops(), "a job was queued behind the bell's");
    assert_eq!(wake, Wake { job: Some(first), rung: true });
    assert_eq!(queue.pop(10).await, [second]);

    let batch = [job(workspace), job(WorkspaceId::new())];
    queue.push(&batch).await;
    assert_eq!(queue.wait(WAIT_SECS).await, RUNG);
    assert_eq!(sorted(queue.pop(10).await), sorted(batch.to_vec()));
    queue.remove().await;
}

/// A busy worker's pop empties the bell: it takes the bell's job with the others and drops the
/// ring, so no idle worker wakes for jobs already taken.
#[tokio::test]
async fn a_pop_takes_the_bells_job_and_its_ring() {
    let mut queue = Queue::new().await;
    let (first, second) = queue.job_and_one_behind(WorkspaceId::new()).await;
    assert_eq!(queue.pop(10).await, [first, second]);
    assert_eq!(queue.wait(0.1).await, Wake::default(), "the ring went with the jobs");
    queue.remove().await;
}

/// A pop that leaves jobs behind rings again, so the next idle worker wakes too; the pop that
/// takes the last job does not, and a wait then finds nothing.
#[tokio::test]
async fn a_pop_that_leaves_jobs_wakes_the_next_idle_worker() {
    let mut queue = Queue::new().await;
    let workspace = WorkspaceId::new();
    let batch: Vec<Job> = (0..3).map(|_| job(workspace)).collect();

    queue.push(&batch).await;
    assert_eq!(queue.wait(WAIT_SECS).await, RUNG);
    assert_eq!(queue.pop(1).await, batch[..1]);
    assert_eq!(queue.wait(WAIT_SECS).await, RUNG, "jobs were left: the pop rang for the next worker");
    assert_eq!(queue.pop(10).await, batch[1..]);
    assert_eq!(queue.wait(0.1).await, Wake::default(), "the last pop left nothing to wake for");
    assert_eq!(queue.depth().await, Depth::default());
    queue.remove().await;
}

/// Workspaces are still served in turn behind the bell: one job of each ready workspace per
/// round.
#[tokio::test]
async fn workspaces_are_served_in_turn() {
    let mut queue = Queue::new().await;
    let (busy, other) = (WorkspaceId::new(), WorkspaceId::new());
    let backlog: Vec<Job> = (0..3).map(|_| job(busy)).collect();
    let single = job(other);

    queue.push(&backlog).await;
    queue.push(std::slice::from_ref(&single)).await;
    let popped = queue.pop(4).await;
    let owners: Vec<WorkspaceId> = popped.iter().map(|j| j.workspace).collect();
    assert_eq!(owners, [busy, other, busy, busy]);
    queue.remove().await;
}

struct Queue {
    conn: MultiplexedConnection,
    prefix: String,
    keys: QueueKeys,
}

impl Queue {
    async fn new() -> Self {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
        let prefix = format!("test-queue-{}", uuid::Uuid::now_v7().simple());
        Self { conn, keys: QueueKeys::new(&prefix), prefix }
    }

    async fn push(&mut self, jobs: &[Job]) {
        queue::push(&mut self.conn, &self.keys, jobs).await.unwrap();
    }

    /// Two jobs of `workspace` pushed one at a time to the empty queue: the first goes in the
    /// bell, the second behind it.
    async fn job_and_one_behind(&mut self, workspace: WorkspaceId) -> (Job, Job) {
        let (first, second) = (job(workspace), job(workspace));
        self.push(std::slice::from_ref(&first)).await;
        self.push(std::slice::from_ref(&second)).await;
        (first, second)
    }

    async fn pop(&mut self, max: usize) -> Vec<Job> {
        queue::pop(&mut self.conn, &self.keys, max).await.unwrap()
    }

    async fn wait(&mut self, timeout_secs: f64) -> Wake {
        queue::wait(&mut self.conn, &self.keys, timeout_secs).await.unwrap()
    }

    async fn depth(&mut self) -> Depth {
        queue::depth(&mut self.conn, &self.keys).await.unwrap()
    }

    async fn remove(mut self) {
        let keys: Vec<String> = self.conn.keys(format!("{}:*", self.prefix)).await.unwrap();
        if !keys.is_empty() {
            let () = self.conn.del(keys).await.unwrap();
        }
    }
}

fn job(workspace: WorkspaceId) -> Job {
    Job::new(RunId::new(), workspace, None)
}

fn sorted(mut jobs: Vec<Job>) -> Vec<Job> {
    jobs.sort_by_key(|j| j.run.to_string());
    jobs
}
