-- The runs of a thread that are still live (queued, running, or waiting for a person), by thread: what the claim asks ("has an
-- earlier run of this thread not finished yet?") and what a finishing run asks ("which run of my
-- thread waits next?"). Both name the thread, but with only `runs_thread` and
-- `runs_workspace_created` to choose from, a plan made while the table was small or had no
-- statistics (and then cached by the connection) may walk every earlier run of the workspace
-- through `runs_workspace_created` and filter by thread: a claim that costs more with every run
-- ever finished. This index holds only live runs, so either check reads a few entries
-- however long the history, and it is the cheapest path the planner sees with or without
-- statistics.
create index runs_thread_active on runs (workspace_id, thread_id, created_at)
    where status in ('queued', 'running', 'requires_action');
