//! The run state machine's SQL against a real Postgres (issue 11): claims, finishes, the
//! reconciler's recoveries, cancels and admission writes, checked on the rows they leave.
//!
//! Each test gets a fresh database with the migrations applied (`#[sqlx::test]`, which needs
//! `DATABASE_URL`: `make test` sets it). A database is dropped when its test passes and left for
//! inspection when it fails; `make clean-test-dbs` drops those.

use std::time::Duration;

use runq_shared::Error;
use runq_shared::admission;
use runq_shared::chat::{ChatMessage, Usage};
use runq_shared::db::runs::{self, Cancel, Claimed, Claims, Finish, Finishes, NewRun, RunStatus};
use runq_shared::db::workspaces;
use runq_shared::events::{Event, Part};
use runq_shared::group::GroupCommit;
use runq_shared::id::{RunId, WorkspaceId};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use fixtures::Tenant;

const LEASE: Duration = Duration::from_secs(60);

/// A queued run claimed twice, one call after the other and by two concurrent calls, is taken
/// exactly once: the second claim finds it no longer queued and gets `None`.
#[sqlx::test(migrations = "../migrations")]
async fn a_duplicate_claim_takes_the_run_once(db: PgPool) {
    let acme = fixtures::tenant(&db, "acme", None).await;

    let run = fixtures::queued(&db, &acme, "thr_one_after_the_other").await;
    let first = claim(&db, &acme, run, "worker-a").await.expect("a queued run is claimed");
    assert_eq!(first.attempt, 1);
    assert!(claim(&db, &acme, run, "worker-b").await.is_none(), "the duplicate claim must get nothing");
    assert_eq!(fixtures::state(&db, run).await, (RunStatus::Running, 1, Some("worker-a".to_owned())));

    let run = fixtures::queued(&db, &acme, "thr_at_once").await;
    let (a, b) = tokio::join!(claim(&db, &acme, run, "worker-a"), claim(&db, &acme, run, "worker-b"));
    let winner = match (a, b) {
        (Some(claimed), None) => (claimed, "worker-a"),
        (None, Some(claimed)) => (claimed, "worker-b"),
        (a, b) => panic!("exactly one concurrent claim must win: {:?}, {:?}", a.is_some(), b.is_some()),
    };
    assert_eq!(winner.0.attempt, 1);
    assert_eq!(fixtures::state(&db, run).await, (RunStatus::Running, 1, Some(winner.1.to_owned())));
}

/// An attempt that lost its lease (the reconciler requeued the run and another worker took it)
/// can neither finish the run nor hand it back; the attempt holding it finishes it, and the
/// thread gets its messages once.
#[sqlx::test(migrations = "../migrations")]
async fn a_superseded_attempt_changes_nothing(db: PgPool) {
    let acme = fixtures::tenant(&db, "acme", None).await;
    let run = fixtures::queued(&db, &acme, "thr_lost_lease").await;
    assert_eq!(claim(&db, &acme, run, "worker-a").await.expect("first claim").attempt, 1);

    fixtures::expire_lease(&db, run).await;
    let requeued = runs::requeue_expired(&db, 10).await.unwrap();
    assert_eq!(
        requeued.iter().map(|r| (r.id, r.workspace_id, r.cap)).collect::<Vec<_>>(),
        [(run, acme.workspace, None)]
    );
    assert_eq!(fixtures::state(&db, run).await, (RunStatus::Queued, 1, None));
    assert_eq!(claim(&db, &acme, run, "worker-b").await.expect("second claim").attempt, 2);

    let done = fixtures::completed("stale answer");
    assert_eq!(runs::finish(&db, run, 1, &done).await.unwrap(), None, "attempt 1 no longer holds the run");
    assert_eq!(fixtures::state(&db, run).await, (RunStatus::Running, 2, Some("worker-b".to_owned())));
    assert_eq!(runs::get(&db, acme.workspace, run).await.unwrap().output, None);
    assert_eq!(fixtures::thread_messages(&db, run).await, 0);
    assert!(!runs::hand_back(&db, run, 1).await.unwrap(), "attempt 1 must not hand the run back");
    assert_eq!(fixtures::state(&db, run).await, (RunStatus::Running, 2, Some("worker-b".to_owned())));

    let done = fixtures::completed("the answer");
    assert_eq!(runs::finish(&db, run, 2, &done).await.unwrap(), Some(None), "finished, nothing waits on the thread");
    let record = runs::get(&db, acme.workspace, run).await.unwrap();
    assert_eq!(
        (record.status, record.attempt, record.output.as_deref()),
        (RunStatus::Completed, 2, Some("the answer"))
    );
    assert_eq!(fixtures::state(&db, run).await, (RunStatus::Completed, 2, None));
    assert_eq!(fixtures::thread_messages(&db, run).await, done.thread_messages.len() as i64);

    assert_eq!(runs::finish(&db, run, 2, &done).await.unwrap(), None, "a finished run is not finished twice");
    assert!(!runs::hand_back(&db, run, 2).await.unwrap(), "a finished run is not handed back");
    assert_eq!(fixtures::thread_messages(&db, run).await, done.thread_messages.len() as i64);
}

/// A workspace capped at 2 never runs more than 2 runs, however many claims race; when one
/// finishes, its oldest queued run is the next to start.
#[sqlx::test(migrations = "../migrations")]
async fn the_concurrency_cap_holds_under_concurrent_claims(db: PgPool) {
    let acme = fixtures::tenant(&db, "acme", Some(2)).await;
    let queued = fixtures::five_queued(&db, &acme).await;
    let capped = |run: RunId, owner: &'static str| runs::claim(&db, run, acme.workspace, owner, LEASE, Some(2));
    let claimed = race_capped_claims(&db, &acme, queued).await;
    assert_eq!(claimed.len(), 2, "a cap of 2 lets exactly 2 of 5 racing claims through: {claimed:?}");
    assert_eq!(fixtures::running(&db, acme.workspace).await, 2);

    for &run in queued.iter().filter(|run| !claimed.contains(run)) {
        assert!(capped(run, "worker-late").await.unwrap().is_none(), "the workspace already runs 2");
    }
    assert_eq!(fixtures::running(&db, acme.workspace).await, 2);

    // the cap is the workspace's: another workspace's runs are not held back by it
    let other = fixtures::tenant(&db, "other", Some(2)).await;
    let elsewhere = fixtures::queued(&db, &other, "thr_elsewhere").await;
    assert!(runs::claim(&db, elsewhere, other.workspace, "worker-x", LEASE, Some(2)).await.unwrap().is_some());

    assert!(runs::finish(&db, claimed[0], 1, &fixtures::completed("done")).await.unwrap().is_some());
    assert_eq!(fixtures::running(&db, acme.workspace).await, 1);
    let waiting: Vec<RunId> = queued.iter().copied().filter(|run| !claimed.contains(run)).collect();
    assert_eq!(runs::next_in_workspace(&db, acme.workspace, 1).await.unwrap(), waiting[..1], "oldest queued first");
    assert_eq!(runs::next_in_workspace(&db, acme.workspace, 10).await.unwrap(), waiting, "oldest first, all of them");

    assert!(capped(waiting[0], "worker-next").await.unwrap().is_some(), "the freed slot takes the oldest run");
    assert_eq!(fixtures::running(&db, acme.workspace).await, 2);
    let (a, b) = tokio::join!(capped(waiting[1], "worker-a"), capped(waiting[2], "worker-b"));
    assert!(a.unwrap().is_none() && b.unwrap().is_none(), "the workspace is full again");
    assert_eq!(fixtures::running(&db, acme.workspace).await, 2);
}

/// Five claims racing under a cap of 2 let exactly 2 through, round after round: one round may
/// miss the race a missing lock would lose, ten rounds do not.
#[sqlx::test(migrations = "../migrations")]
async fn racing_claims_never_exceed_the_cap(db: PgPool) {
    for round in 0..10 {
        let tenant = fixtures::tenant(&db, &format!("round-{round}"), Some(2)).await;
        let queued = fixtures::five_queued(&db, &tenant).await;
        let claimed = race_capped_claims(&db, &tenant, queued).await;
        assert_eq!(claimed.len(), 2, "round {round}: 2 of 5 racing claims get through: {claimed:?}");
        assert_eq!(fixtures::running(&db, tenant.workspace).await, 2, "round {round}");
    }
}

/// Runs of one thread start one at a time, in order: the second waits while the first is queued
/// or running, and the first's finish names it as the thread's next run, with the first's turn
/// in its history.
#[sqlx::test(migrations = "../migrations")]
async fn runs_of_a_thread_start_in_order(db: PgPool) {
    let acme = fixtures::tenant(&db, "acme", None).await;
    let first = fixtures::queued(&db, &acme, "thr_conversation").await;
    let second = fixtures::queued(&db, &acme, "thr_conversation").await;

    assert!(claim(&db, &acme, second, "worker-b").await.is_none(), "the first run is still queued");
    assert_eq!(fixtures::state(&db, second).await, (RunStatus::Queued, 0, None));
    assert!(claim(&db, &acme, first, "worker-a").await.is_some());
    assert!(claim(&db, &acme, second, "worker-b").await.is_none(), "the first run is still running");
    assert_eq!(fixtures::state(&db, second).await, (RunStatus::Queued, 0, None));

    // a run of another thread does not wait for this one
    let unrelated = fixtures::queued(&db, &acme, "thr_unrelated").await;
    assert!(claim(&db, &acme, unrelated, "worker-c").await.is_some());

    let done = fixtures::completed("first answer");
    assert_eq!(runs::finish(&db, first, 1, &done).await.unwrap(), Some(Some(second)), "the thread's next run");
    let next = claim(&db, &acme, second, "worker-b").await.expect("the second run starts once the first finished");
    assert_eq!(next.attempt, 1);
    assert_eq!(next.history.0, done.thread_messages, "the second run sees the first's turn");
}

/// Claims and finishes written together: 60 concurrent claims (each run named twice, as duplicate
/// jobs would) take every run exactly once, each for its first caller; finishing them together
/// completes each once, and a stale attempt in the same group changes nothing.
#[sqlx::test(migrations = "../migrations")]
async fn grouped_claims_and_finishes_take_each_run_once(db: PgPool) {
    let acme = fixtures::tenant(&db, "acme", None).await;
    let mut queued = Vec::new();
    for i in 0..30 {
        queued.push(fixtures::queued(&db, &acme, &format!("thr_grouped_{i}")).await);
    }
    let claims = GroupCommit::start(Claims { db: db.clone(), owner: "worker-a".into(), lease: LEASE }, 2, 64);
    let mut claiming = tokio::task::JoinSet::new();
    for run in queued.iter().chain(&queued).copied() {
        let claims = claims.clone();
        claiming.spawn(async move { claims.submit(run).await.expect("claims are written").1 });
    }
    let mut claimed = Vec::new();
    while let Some(joined) = claiming.join_next().await {
        claimed.extend(joined.expect("claim task"));
    }
    let mut ids: Vec<RunId> = claimed.iter().map(|c| c.id).collect();
    ids.sort();
    let mut expected = queued.clone();
    expected.sort();
    assert_eq!(ids, expected, "every run is claimed, and only once");
    assert!(claimed.iter().all(|c| c.attempt == 1));

    let finishes = GroupCommit::start(Finishes { db: db.clone() }, 2, 64);
    let mut finishing = tokio::task::JoinSet::new();
    for (i, run) in queued.iter().copied().enumerate() {
        let (current, stale) = (finishes.clone(), finishes.clone());
        finishing.spawn(async move {
            let end = (run, 1, fixtures::completed(&format!("answer {i}")));
            (run, current.submit(end).await.expect("finishes are written").1)
        });
        // a stale attempt of the same run, in the same groups: it must change nothing
        finishing.spawn(async move { (run, stale.submit((run, 0, fixtures::completed("stale"))).await.unwrap().1) });
    }
    let mut answers = Vec::new();
    while let Some(joined) = finishing.join_next().await {
        answers.push(joined.expect("finish task"));
    }
    assert_eq!(answers.iter().filter(|(_, answer)| answer.is_some()).count(), 30, "each run finishes once");
    for run in &queued {
        assert_eq!(fixtures::state(&db, *run).await, (RunStatus::Completed, 1, None));
    }
    let stale: i64 =
        sqlx::query_scalar("select count(*) from runs where output = 'stale'").fetch_one(&db).await.unwrap();
    assert_eq!(stale, 0, "the stale attempt wrote nothing");
    let messages: i64 = sqlx::query_scalar("select count(*) from messages").fetch_one(&db).await.unwrap();
    assert_eq!(messages, 60, "each run appends its turn once");
}

/// Group commit: 200 concurrent admissions of one run each, across 2 workspaces, are all
/// written and each caller gets its own run back; `insert_many` writes 1,000 runs in one call,
/// in the threads they name.
#[sqlx::test(migrations = "../migrations")]
async fn admissions_are_written_together_and_each_answered(db: PgPool) {
    let tenants = [fixtures::tenant(&db, "acme", None).await, fixtures::tenant(&db, "globex", None).await];
    let group = admission::admissions(db.clone(), 2);
    let mut admissions = tokio::task::JoinSet::new();
    for i in 0..200 {
        let run = fixtures::run(&tenants[i % 2], &format!("thr_admission_{i}"));
        let group = group.clone();
        admissions.spawn(async move { (run.id, group.submit((None, vec![run])).await.map(|((_, runs), ())| runs)) });
    }
    let mut answered = Vec::new();
    while let Some(joined) = admissions.join_next().await {
        let (sent, written) = joined.expect("admission task");
        let written = written.expect("every admission is written");
        assert_eq!(written.iter().map(|r| r.id).collect::<Vec<_>>(), [sent], "each caller gets its own run");
        answered.push(sent);
    }
    assert_eq!(answered.len(), 200);
    for tenant in &tenants {
        assert_eq!(fixtures::run_count(&db, tenant.workspace).await, 100);
        assert_eq!(fixtures::thread_count(&db, tenant.workspace).await, 100);
    }
    let stored: Vec<RunId> =
        sqlx::query_scalar("select id from runs where id = any($1)").bind(&answered).fetch_all(&db).await.unwrap();
    assert_eq!(stored.len(), 200, "every answered run is stored");

    // 1,000 runs over 10 threads, one of them created by an earlier run
    let batch = fixtures::tenant(&db, "initech", None).await;
    fixtures::queued(&db, &batch, "thr_batch_0").await;
    let many: Vec<NewRun> = (0..1000).map(|i| fixtures::run(&batch, &format!("thr_batch_{}", i % 10))).collect();
    runs::insert_many(&db, None, &many).await.unwrap();
    assert_eq!(fixtures::run_count(&db, batch.workspace).await, 1001);
    assert_eq!(fixtures::thread_count(&db, batch.workspace).await, 10);
    let ids: Vec<RunId> = many.iter().map(|r| r.id).collect();
    let queued: i64 = sqlx::query_scalar("select count(*) from runs where id = any($1) and status = 'queued'")
        .bind(&ids)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(queued, 1000);
}

/// The admission writer says it is idle only while nothing is being written (the API pushes a
/// lone run's job before its commit only then), and a run being written has no status yet (what
/// a worker holding such a job waits for).
#[sqlx::test(migrations = "../migrations")]
async fn an_admission_being_written_makes_the_writer_busy_and_has_no_status_yet(db: PgPool) {
    let acme = fixtures::tenant(&db, "acme", None).await;
    let group = admission::admissions(db.clone(), 1);
    assert!(group.idle());

    // the runs table held by another transaction: the insert waits
    let mut holder = db.begin().await.unwrap();
    sqlx::query("lock table runs in exclusive mode").execute(&mut *holder).await.unwrap();
    let run = fixtures::run(&acme, "thr_held");
    let id = run.id;
    let writing = tokio::spawn({
        let group = group.clone();
        async move { group.submit((None, vec![run])).await.map(|_| ()) }
    });
    let mut waited = Duration::ZERO;
    while group.idle() {
        assert!(waited < Duration::from_secs(10), "the admission was submitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    assert_eq!(runs::status(&db, id).await.unwrap(), None, "not committed yet");

    holder.rollback().await.unwrap();
    writing.await.expect("admission task").expect("the admission is written");
    assert!(group.idle());
    assert_eq!(runs::status(&db, id).await.unwrap(), Some(RunStatus::Queued));
}

/// The reconciler requeues a run whose lease expired until its last allowed attempt; then it
/// ends it `failed` (`worker_lost`). A lost run whose cancel was asked for ends `cancelled`
/// instead of going back to the queue. A live lease is left alone.
#[sqlx::test(migrations = "../migrations")]
async fn lost_runs_are_requeued_then_ended(db: PgPool) {
    let acme = fixtures::tenant(&db, "acme", None).await;
    let doomed = fixtures::queued(&db, &acme, "thr_doomed").await;
    let alive = fixtures::queued(&db, &acme, "thr_alive").await;
    assert!(claim(&db, &acme, alive, "worker-alive").await.is_some());

    let max_attempts = fixtures::max_attempts(&db, doomed).await;
    for attempt in 1..=max_attempts {
        let claimed = claim(&db, &acme, doomed, "worker-dies").await.expect("requeued runs are claimed again");
        assert_eq!(claimed.attempt, attempt);
        fixtures::expire_lease(&db, doomed).await;
        if attempt < max_attempts {
            assert!(runs::end_lost(&db, 10).await.unwrap().is_empty(), "attempts are left: not ended");
            let requeued: Vec<RunId> = runs::requeue_expired(&db, 10).await.unwrap().iter().map(|r| r.id).collect();
            assert_eq!(requeued, [doomed]);
        }
    }
    assert!(runs::requeue_expired(&db, 10).await.unwrap().is_empty(), "the last attempt is not requeued");
    let lost = runs::end_lost(&db, 10).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!((lost[0].id, lost[0].status), (doomed, RunStatus::Failed));
    assert_eq!(lost[0].error.0["code"], "worker_lost");
    let record = runs::get(&db, acme.workspace, doomed).await.unwrap();
    assert_eq!((record.status, record.attempt), (RunStatus::Failed, max_attempts));
    assert_eq!(record.error.expect("an error is recorded").0["code"], "worker_lost");
    assert!(record.finished_at.is_some());
    assert_eq!(fixtures::state(&db, doomed).await, (RunStatus::Failed, max_attempts, None));

    let cancelled = fixtures::queued(&db, &acme, "thr_cancelled").await;
    assert!(claim(&db, &acme, cancelled, "worker-dies").await.is_some());
    assert_eq!(runs::cancel(&db, acme.workspace, cancelled).await.unwrap(), Cancel::Cancelling);
    fixtures::expire_lease(&db, cancelled).await;
    assert!(runs::requeue_expired(&db, 10).await.unwrap().is_empty(), "a cancelled run is not requeued");
    let lost = runs::end_lost(&db, 10).await.unwrap();
    assert_eq!(lost.iter().map(|l| (l.id, l.status)).collect::<Vec<_>>(), [(cancelled, RunStatus::Cancelled)]);
    assert_eq!(lost[0].error.0["code"], "cancelled");
    assert_eq!(fixtures::state(&db, cancelled).await, (RunStatus::Cancelled, 1, None));

    assert_eq!(fixtures::state(&db, alive).await, (RunStatus::Running, 1, Some("worker-alive".to_owned())));
}

/// A lease renewal skips a run another transaction holds (a finish being written) instead of
/// waiting for it, and renews the rest; the skipped run is renewed by the next renewal.
#[sqlx::test(migrations = "../migrations")]
async fn a_lease_renewal_skips_a_run_being_finished(db: PgPool) {
    let acme = fixtures::tenant(&db, "acme", None).await;
    let held = fixtures::queued(&db, &acme, "thr_held").await;
    let free = fixtures::queued(&db, &acme, "thr_free").await;
    for run in [held, free] {
        assert!(claim(&db, &acme, run, "worker-a").await.is_some());
        fixtures::expire_lease(&db, run).await;
    }

    let mut finishing = db.begin().await.unwrap();
    sqlx::query("select 1 from runs where id = $1 for update").bind(held).execute(&mut *finishing).await.unwrap();
    let both = [held, free];
    let renewal = runs::renew_leases(&db, "worker-a", &both, LEASE);
    let renewed = tokio::time::timeout(Duration::from_secs(10), renewal)
        .await
        .expect("the renewal must not wait for the transaction holding a run")
        .unwrap();
    assert_eq!(renewed, 1);
    assert!(fixtures::lease_expired(&db, held).await, "the held run is skipped");
    assert!(!fixtures::lease_expired(&db, free).await, "the other run is renewed");
    finishing.rollback().await.unwrap();

    assert_eq!(runs::renew_leases(&db, "worker-a", &both, LEASE).await.unwrap(), 2);
    assert!(!fixtures::lease_expired(&db, held).await, "renewed once it is no longer held");
}

/// A claim and a lease renewal rewrite only columns no index holds, so both are HOT updates:
/// Postgres writes no index entry for them. (The end of a run, which leaves the index of live
/// runs, is the one update of a run's life that does.)
#[sqlx::test(migrations = "../migrations")]
async fn claims_and_lease_renewals_are_hot_updates(db: PgPool) {
    let acme = fixtures::tenant(&db, "acme", None).await;
    let run = fixtures::queued(&db, &acme, "thr_hot").await;
    // one session, so that its statistics can be flushed and read back
    let one = PgPoolOptions::new().max_connections(1).connect_with((*db.connect_options()).clone()).await.unwrap();

    let before = fixtures::updates_of_runs(&one).await;
    assert!(claim(&one, &acme, run, "worker-a").await.is_some());
    assert_eq!(runs::renew_leases(&one, "worker-a", &[run], LEASE).await.unwrap(), 1);
    let after = fixtures::updates_of_runs(&one).await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (2, 2), "(updates, HOT updates) of runs");
}

/// A run's stored event log replays as it was written, and so does a log stored before the
/// compact form (a jsonb array); another workspace reads nothing.
#[sqlx::test(migrations = "../migrations")]
async fn stored_event_logs_replay_in_either_form(db: PgPool) {
    let acme = fixtures::tenant(&db, "acme", None).await;
    let run = fixtures::queued(&db, &acme, "thr_logged").await;
    let delta = Part::TextDelta { id: "txt_1".into(), delta: "two\nlines".into() };
    let log = [Event::new(1, &Part::StartStep), Event::new(2, &delta), Event::new(3, &Part::Abort)];
    runs::store_events(&db, run, &log).await.unwrap();
    assert_eq!(runs::stored_events(&db, acme.workspace, run).await.unwrap().as_deref(), Some(&log[..]));

    let older = fixtures::queued(&db, &acme, "thr_logged_before").await;
    sqlx::query("update runs set events = $2 where id = $1")
        .bind(older)
        .bind(sqlx::types::Json(&log))
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(runs::stored_events(&db, acme.workspace, older).await.unwrap().as_deref(), Some(&log[..]));

    let other = fixtures::tenant(&db, "other", None).await;
    assert_eq!(runs::stored_events(&db, other.workspace, run).await.unwrap(), None);
}

/// A cancel ends a queued run on the spot (nobody can claim it afterwards), only marks a running
/// one (its worker stops it), and does not reach another workspace's run.
#[sqlx::test(migrations = "../migrations")]
async fn cancel_ends_queued_runs_and_marks_running_ones(db: PgPool) {
    let acme = fixtures::tenant(&db, "acme", None).await;

    let queued = fixtures::queued(&db, &acme, "thr_queued").await;
    assert_eq!(runs::cancel(&db, acme.workspace, queued).await.unwrap(), Cancel::Cancelled);
    let record = runs::get(&db, acme.workspace, queued).await.unwrap();
    assert!(record.is_terminal());
    assert_eq!(record.status, RunStatus::Cancelled);
    assert_eq!(record.error.expect("an error is recorded").0["code"], "cancelled");
    assert!(record.finished_at.is_some());
    assert!(claim(&db, &acme, queued, "worker-a").await.is_none(), "a cancelled run is never claimed");
    assert_eq!(runs::cancel(&db, acme.workspace, queued).await.unwrap(), Cancel::Finished);

    let running = fixtures::queued(&db, &acme, "thr_running").await;
    assert!(claim(&db, &acme, running, "worker-a").await.is_some());
    assert_eq!(runs::cancel(&db, acme.workspace, running).await.unwrap(), Cancel::Cancelling);
    assert_eq!(fixtures::state(&db, running).await, (RunStatus::Running, 1, Some("worker-a".to_owned())));
    assert!(runs::get(&db, acme.workspace, running).await.unwrap().finished_at.is_none());
    assert_eq!(runs::cancel_requested(&db, "worker-a").await.unwrap(), [running], "its worker is told");

    let other = fixtures::tenant(&db, "other", None).await;
    let mine = fixtures::queued(&db, &acme, "thr_mine").await;
    match runs::cancel(&db, other.workspace, mine).await {
        Err(Error::NotFound { code: "run_not_found", .. }) => {}
        found => panic!("another workspace's run must be not found, got {found:?}"),
    }
    assert_eq!(fixtures::state(&db, mine).await, (RunStatus::Queued, 0, None));
    assert!(!fixtures::cancel_requested(&db, mine).await, "the refused cancel left no mark");
}

/// Claims `run` of `tenant` for `owner`, without a concurrency cap.
async fn claim(db: &PgPool, tenant: &Tenant, run: RunId, owner: &str) -> Option<Claimed> {
    runs::claim(db, run, tenant.workspace, owner, LEASE, None).await.unwrap()
}

/// Claims the five runs at once, under a cap of 2, and returns those claimed.
async fn race_capped_claims(db: &PgPool, tenant: &Tenant, queued: [RunId; 5]) -> Vec<RunId> {
    let capped = |run: RunId| runs::claim(db, run, tenant.workspace, "worker", LEASE, Some(2));
    let raced =
        tokio::join!(capped(queued[0]), capped(queued[1]), capped(queued[2]), capped(queued[3]), capped(queued[4]));
    [raced.0, raced.1, raced.2, raced.3, raced.4]
        .into_iter()
        .filter_map(|claimed| claimed.unwrap().map(|c| c.id))
        .collect()
}

/// Rows the tests need: one helper per fixture, and readers of what the assertions compare.
mod fixtures {
    use runq_shared::chat::Role;
    use runq_shared::config::Secret;
    use runq_shared::crypto::MasterKey;
    use runq_shared::db::agents::{self, NewAgent};
    use runq_shared::db::providers::{self, NewProvider};
    use runq_shared::db::versions::NewVersion;
    use runq_shared::db::workspaces::WorkspacePatch;
    use runq_shared::domain::{ProviderKind, ProviderRef, Slug};
    use runq_shared::id::{AgentId, ProviderId, VersionId};
    use serde_json::{Map, json};

    use super::*;

    /// A workspace with an agent whose deployed version runs on the workspace's provider.
    #[derive(Debug, Clone, Copy)]
    pub struct Tenant {
        pub workspace: WorkspaceId,
        pub agent: AgentId,
        pub version: VersionId,
    }

    pub async fn tenant(db: &PgPool, name: &str, cap: Option<i32>) -> Tenant {
        let workspace = workspace(db, name, cap).await;
        let provider = provider(db, workspace).await;
        let (agent, version) = agent(db, workspace, provider).await;
        Tenant { workspace, agent, version }
    }

    /// A workspace running at most `cap` runs at once (`None`: no cap).
    pub async fn workspace(db: &PgPool, name: &str, cap: Option<i32>) -> WorkspaceId {
        let workspace = workspaces::create(db, name).await.unwrap().id;
        let patch = WorkspacePatch { concurrency_limit: Some(cap), ..WorkspacePatch::default() };
        assert_eq!(workspaces::update(db, workspace, &patch).await.unwrap().concurrency_limit, cap);
        workspace
    }

    /// An OpenAI-compatible provider with a (sealed) key.
    pub async fn provider(db: &PgPool, workspace: WorkspaceId) -> ProviderId {
        let master_key: MasterKey = "11".repeat(32).parse().unwrap();
        let new = NewProvider {
            name: "mock".into(),
            kind: ProviderKind::Openai,
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: Some(Secret::new("sk-test".into())),
        };
        providers::create(db, &master_key, workspace, new).await.unwrap().id
    }

    /// An agent with a deployed first version on `provider`.
    pub async fn agent(db: &PgPool, workspace: WorkspaceId, provider: ProviderId) -> (AgentId, VersionId) {
        let new = NewAgent {
            name: "Writer".into(),
            slug: Slug::parse("slug", "writer").unwrap(),
            description: None,
            tags: Vec::new(),
        };
        let version = NewVersion {
            provider: ProviderRef::Id(provider),
            model: "gpt-test".into(),
            system_prompt: Some("You are terse.".into()),
            messages: Vec::new(),
            parameters: Map::new(),
            tools: Vec::new(),
            max_steps: 8,
            deploy: true,
        };
        let agent = agents::create(db, workspace, new, Some(version)).await.unwrap();
        (agent.id, agent.deployed_version_id.expect("the first version is deployed"))
    }

    /// A run of `tenant`'s agent on `thread`, as admission builds it.
    pub fn run(tenant: &Tenant, thread: &str) -> NewRun {
        NewRun {
            id: RunId::new(),
            workspace_id: tenant.workspace,
            agent_id: tenant.agent,
            version_id: tenant.version,
            thread_id: thread.to_owned(),
            prelude: vec![ChatMessage::system("You are terse.")],
            input: vec![ChatMessage::user("Hello")],
            parameters: Map::new(),
            metadata: json!({}),
            cancel_on_disconnect: false,
            timeout_ms: 60_000,
            webhook_url: None,
            end_user_id: None,
            opens_thread: false,
        }
    }

    /// A run recorded (queued) on its own.
    pub async fn queued(db: &PgPool, tenant: &Tenant, thread: &str) -> RunId {
        let run = run(tenant, thread);
        runs::insert_many(db, None, std::slice::from_ref(&run)).await.unwrap();
        run.id
    }

    /// Five runs on five threads, oldest first (one statement each, so each is older than the next).
    pub async fn five_queued(db: &PgPool, tenant: &Tenant) -> [RunId; 5] {
        let mut runs = [RunId::new(); 5];
        for (i, run) in runs.iter_mut().enumerate() {
            *run = queued(db, tenant, &format!("thr_{i}")).await;
        }
        runs
    }

    /// A successful attempt's end: the thread keeps the user's turn and the answer.
    pub fn completed(answer: &str) -> Finish {
        Finish {
            status: RunStatus::Completed,
            output: Some(answer.to_owned()),
            thread_messages: vec![ChatMessage::user("Hello"), ChatMessage::assistant(answer)],
            usage: Usage { input_tokens: 3, output_tokens: 2 },
            error: None,
            events: Vec::new(),
            first_token_at: None,
            queue_wait_us: None,
        }
    }

    /// `(updates, HOT updates)` of `runs` so far, this session's included.
    pub async fn updates_of_runs(db: &PgPool) -> (i64, i64) {
        sqlx::query("select pg_stat_force_next_flush()").execute(db).await.unwrap();
        sqlx::query_as("select n_tup_upd, n_tup_hot_upd from pg_stat_user_tables where relid = 'runs'::regclass")
            .fetch_one(db)
            .await
            .unwrap()
    }

    /// Makes `run`'s lease run out, as when its worker died.
    pub async fn expire_lease(db: &PgPool, run: RunId) {
        sqlx::query("update runs set lease_expires_at = now() - interval '1 second' where id = $1")
            .bind(run)
            .execute(db)
            .await
            .unwrap();
    }

    /// Whether the lease of `run` has run out.
    pub async fn lease_expired(db: &PgPool, run: RunId) -> bool {
        let (expired,): (bool,) = sqlx::query_as("select lease_expires_at < now() from runs where id = $1")
            .bind(run)
            .fetch_one(db)
            .await
            .unwrap();
        expired
    }

    /// Status, attempt and lease owner of `run`.
    pub async fn state(db: &PgPool, run: RunId) -> (RunStatus, i32, Option<String>) {
        sqlx::query_as("select status, attempt, lease_owner from runs where id = $1")
            .bind(run)
            .fetch_one(db)
            .await
            .unwrap()
    }

    pub async fn max_attempts(db: &PgPool, run: RunId) -> i32 {
        sqlx::query_scalar("select max_attempts from runs where id = $1").bind(run).fetch_one(db).await.unwrap()
    }

    pub async fn cancel_requested(db: &PgPool, run: RunId) -> bool {
        sqlx::query_scalar("select cancel_requested_at is not null from runs where id = $1")
            .bind(run)
            .fetch_one(db)
            .await
            .unwrap()
    }

    /// Messages `run` appended to its thread (checking the roles are the turn's).
    pub async fn thread_messages(db: &PgPool, run: RunId) -> i64 {
        let roles: Vec<String> = sqlx::query_scalar("select role from messages where run_id = $1 order by id")
            .bind(run)
            .fetch_all(db)
            .await
            .unwrap();
        if !roles.is_empty() {
            assert_eq!(roles, [Role::User.as_str(), Role::Assistant.as_str()]);
        }
        roles.len() as i64
    }

    pub async fn running(db: &PgPool, workspace: WorkspaceId) -> i64 {
        workspaces::run_counts(db, workspace).await.unwrap().running
    }

    pub async fn run_count(db: &PgPool, workspace: WorkspaceId) -> i64 {
        sqlx::query_scalar("select count(*) from runs where workspace_id = $1")
            .bind(workspace)
            .fetch_one(db)
            .await
            .unwrap()
    }

    pub async fn thread_count(db: &PgPool, workspace: WorkspaceId) -> i64 {
        sqlx::query_scalar(
            "select count(*) from (select thread_id from runs where workspace_id = $1
                                   union select id from threads where workspace_id = $1) named",
        )
        .bind(workspace)
        .fetch_one(db)
        .await
        .unwrap()
    }
}
