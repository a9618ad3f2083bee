-- Claims, lease renewals, pauses and progress updates become HOT updates.
--
-- A claim rewrites a run's status, attempt, lease and start time. `status` and `lease_expires_at`
-- were columns of `runs_active` (and `status` the condition of `runs_thread_active`), so every
-- claim wrote a new entry into every index of the table. Now the live runs are the ones
-- without `finished_at`, which only the run's end sets: no index holds a column a claim, a
-- renewal, a pause or a progress update writes, and on a page with room (the fillfactor leaves
-- it) Postgres keeps the new version beside the old and writes no index entry at all. Only the
-- end of a run still touches the indexes, once.
--
-- The check makes the equivalence the queries now rely on a rule: a run is live (queued, running
-- or waiting for a person) exactly while it has no `finished_at`.
update runs set finished_at = coalesce(started_at, created_at)
    where finished_at is null and status in ('completed', 'failed', 'cancelled', 'timed_out');
update runs set finished_at = null
    where finished_at is not null and status in ('queued', 'running', 'requires_action');
alter table runs add constraint runs_live_unfinished
    check ((finished_at is null) = (status in ('queued', 'running', 'requires_action')));

-- by workspace and thread, in run order: the claim's "has an earlier run of this thread not
-- finished yet?" and a finishing run's "which run of my thread waits next?" are each one range of
-- it, in the order they ask for (`(created_at, id)`), so a planner without statistics has no
-- cheaper-looking index to walk instead; a workspace's live counts; the reconciler reads all of
-- it (live runs only, however long the history)
create index runs_live on runs (workspace_id, thread_id, created_at, id) where finished_at is null;
drop index runs_active;
drop index runs_thread_active;

-- room on each page for the versions HOT updates write: a claim writes a whole new version of a
-- row as long as the one inserted, so a page filled only halfway keeps room for a claim of each
-- of its runs (at 70, about half the claims in the bench's sustained scenario found no room and
-- wrote their index entries after all; at 50, 98 %)
alter table runs set (fillfactor = 50);
