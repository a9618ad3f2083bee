-- The rows every run writes (its run, its thread and operation, its thread messages) no longer
-- check foreign keys. Each check is a query of its own, run by a trigger for every row inserted:
-- nine per async run (the run's workspace, agent, version, operation and thread; the operation's
-- and the thread's workspace; the thread of each of its two messages), 12 % of Postgres's CPU in
-- the bench's sustained scenario (perf: `AfterTriggerEndQuery` → `SPI_execute_snapshot`).
--
-- What the keys guarded is kept by the statements that write these rows: a run's agent and
-- version come from the resolved agent of its own request, and its operation is written by the
-- same statement as the run; messages are written by the statement that finishes their run,
-- joined to the run it updated. A run no longer writes a row for its thread: a thread that a run
-- started exists through its runs (`threads::get`), so neither a run nor a message can name a
-- thread row. Nothing deletes a parent: workspaces, threads and versions are never deleted, agents
-- are archived, and the only deleted operation is that of a refused request, after its runs
-- (`runs::discard`).
alter table runs
    drop constraint runs_workspace_id_fkey,
    drop constraint runs_agent_id_fkey,
    drop constraint runs_version_id_fkey,
    drop constraint runs_operation_id_fkey,
    drop constraint runs_thread_fkey;
alter table messages drop constraint messages_thread_fkey;
alter table operations drop constraint operations_workspace_id_fkey;
alter table threads drop constraint threads_workspace_id_fkey;
