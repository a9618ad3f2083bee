-- A thread's messages are found by their thread, never by id alone: every read (a thread's or
-- session's messages, a claim's history) names the workspace and the thread. They were indexed
-- twice, by id (the primary key) and by thread (`messages_thread`), so each message a finished run
-- appends wrote two index entries. The primary key is now the thread's index: one entry per
-- message, and ids stay unique within their thread (a turn's first message has its run's id, the
-- rest fresh v7 ids). Bench, sustained scenario: 23-24 WAL records per completed run before,
-- 20-21 after.
alter table messages drop constraint messages_pkey;
drop index messages_thread;
alter table messages add primary key (workspace_id, thread_id, id);
