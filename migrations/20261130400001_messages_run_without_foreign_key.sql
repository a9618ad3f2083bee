-- A thread message names the run that wrote it without a foreign key. Messages are written only
-- by the statement that finishes their run (joined to the run it updated), and runs are deleted
-- only before they ran (a request refused after recording them) or with their workspace, whose
-- threads take their messages along. The key cost every finished run two lookups of its own row
-- (one per message), and its `on delete set null` made each deleted run scan the whole messages
-- table, which has no index on `run_id`: in the refused-request path, during an outage (with
-- 200,000 messages, deleting one queued run took 31.5 ms, 0.17 ms without the key).
alter table messages drop constraint messages_run_id_fkey;
