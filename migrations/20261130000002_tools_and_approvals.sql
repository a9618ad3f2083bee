-- Workspace HTTP tools, human approval of tool calls, and what a paused run needs to resume.
-- A run whose tool call waits for a person is `requires_action`: no worker holds it; approving or
-- denying puts it back on the queue, and any worker continues it from its recorded progress.

create table tools (
    id                uuid primary key,
    workspace_id      uuid not null references workspaces (id) on delete cascade,
    name              text not null,
    description       text not null default '',
    -- JSON Schema of the arguments the model sends
    parameters        jsonb not null,
    url               text not null,
    method            text not null default 'POST' check (method in ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')),
    -- static request headers
    headers           jsonb not null default '{}',
    -- the auth header's name; its value is sealed like provider keys and never returned
    auth_header       text,
    auth_value_sealed bytea,
    timeout_ms        integer not null default 10000 check (timeout_ms between 100 and 120000),
    requires_approval boolean not null default false,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    constraint tools_workspace_name_key unique (workspace_id, name)
);

alter table runs drop constraint runs_status_check;
alter table runs add constraint runs_status_check
    check (status in ('queued', 'running', 'requires_action', 'completed', 'failed', 'cancelled', 'timed_out'));
-- who the run acts for (`X-End-User-ID` or the body's `user`): sent to tools
alter table runs add column end_user_id text;
-- what the run did so far that must not be done again: the tool steps since its input
-- (`{messages, usage}`), written after each tool result and when the run pauses
alter table runs add column progress jsonb;

create table approvals (
    id           uuid primary key,
    workspace_id uuid not null references workspaces (id) on delete cascade,
    run_id       uuid not null references runs (id) on delete cascade,
    tool_call_id text not null,
    tool_name    text not null,
    arguments    jsonb not null,
    -- sha256 of the canonical JSON arguments, hex (a decision may name it to prove what it saw)
    payload_hash text not null,
    status       text not null default 'pending' check (status in ('pending', 'approved', 'denied', 'expired')),
    reason       text,
    expires_at   timestamptz not null,
    decided_at   timestamptz,
    created_at   timestamptz not null default now(),
    constraint approvals_run_call_key unique (run_id, tool_call_id)
);
create index approvals_workspace on approvals (workspace_id, created_at desc);
create index approvals_pending_expiry on approvals (expires_at) where status = 'pending';
