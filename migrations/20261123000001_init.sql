-- runq schema v1: tenancy, keys, providers, agents and versions, threads, runs, operations, idempotency.
-- Postgres is the source of truth for every run; Redis only carries jobs and live events.

create table workspaces (
    id                  uuid primary key,
    name                text not null unique,
    plan                text not null default 'free' check (plan in ('free', 'pro', 'enterprise')),
    -- requests per rate-limit window for the workspace's keys, instead of the plan's default
    rate_limit_per_hour integer check (rate_limit_per_hour > 0),
    concurrency_limit   integer check (concurrency_limit > 0),
    created_at          timestamptz not null default now()
);

create table api_keys (
    id                  uuid primary key,
    workspace_id        uuid not null references workspaces (id) on delete cascade,
    name                text not null,
    -- first characters of the key, shown in listings so users can tell keys apart
    prefix              text not null,
    -- sha256 of the full key; the key itself is never stored
    key_hash            bytea not null unique,
    scopes              text[] not null,
    rate_limit_per_hour integer check (rate_limit_per_hour > 0),
    created_at          timestamptz not null default now(),
    last_used_at        timestamptz,
    revoked_at          timestamptz
);
create index api_keys_workspace on api_keys (workspace_id, created_at);

create table providers (
    id             uuid primary key,
    workspace_id   uuid not null references workspaces (id) on delete cascade,
    name           text not null,
    kind           text not null check (kind in ('openai', 'anthropic')),
    base_url       text not null,
    -- AES-256-GCM under RUNQ_MASTER_KEY: nonce || ciphertext
    api_key_sealed bytea,
    created_at     timestamptz not null default now(),
    constraint providers_workspace_name_key unique (workspace_id, name)
);

create table agents (
    id           uuid primary key,
    workspace_id uuid not null references workspaces (id) on delete cascade,
    name         text not null,
    slug         text not null,
    description  text,
    tags         text[] not null default '{}',
    archived_at  timestamptz,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    constraint agents_workspace_slug_key unique (workspace_id, slug)
);
create index agents_workspace on agents (workspace_id, created_at);

create table agent_versions (
    id            uuid primary key,
    agent_id      uuid not null references agents (id) on delete cascade,
    workspace_id  uuid not null references workspaces (id) on delete cascade,
    number        integer not null,
    provider_id   uuid not null references providers (id),
    model         text not null,
    system_prompt text,
    messages      jsonb not null default '[]',
    parameters    jsonb not null default '{}',
    tools         text[] not null default '{}',
    max_steps     integer not null default 8 check (max_steps between 1 and 64),
    deployed      boolean not null default false,
    deployed_at   timestamptz,
    created_at    timestamptz not null default now(),
    constraint agent_versions_agent_number_key unique (agent_id, number)
);
-- exactly one deployed version per agent, enforced here rather than in code
create unique index agent_versions_one_deployed on agent_versions (agent_id) where deployed;

-- versions are immutable: only the deployment flag may change
create function agent_versions_immutable() returns trigger language plpgsql as $$
begin
    if (to_jsonb(new) - 'deployed' - 'deployed_at') <> (to_jsonb(old) - 'deployed' - 'deployed_at') then
        raise exception 'agent versions are immutable' using errcode = 'check_violation',
            constraint = 'agent_versions_immutable';
    end if;
    return new;
end $$;
create trigger agent_versions_immutable before update on agent_versions
    for each row execute function agent_versions_immutable();

-- thread ids are client-nameable ("thr_docs_example"), so they are text scoped to the workspace
create table threads (
    workspace_id uuid not null references workspaces (id) on delete cascade,
    id           text not null,
    metadata     jsonb not null default '{}',
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    primary key (workspace_id, id)
);

create table operations (
    id              uuid primary key,
    workspace_id    uuid not null references workspaces (id) on delete cascade,
    kind            text not null check (kind in ('run', 'batch')),
    status          text not null default 'pending'
                    check (status in ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    total           integer not null,
    completed       integer not null default 0,
    failed          integer not null default 0,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    finished_at     timestamptz
);
create index operations_workspace on operations (workspace_id, created_at);

create table runs (
    id                   uuid primary key,
    workspace_id         uuid not null references workspaces (id) on delete cascade,
    agent_id             uuid not null references agents (id),
    version_id           uuid not null references agent_versions (id),
    thread_id            text not null,
    operation_id         uuid references operations (id) on delete cascade,
    -- position of this run inside a batch operation
    item_index           integer,
    status               text not null default 'queued'
                         check (status in ('queued', 'running', 'completed', 'failed', 'cancelled', 'timed_out')),
    attempt              integer not null default 0,
    -- attempts cut short by a lost worker before the run is failed (graceful hand-backs count too)
    max_attempts         integer not null default 5,
    lease_owner          text,
    lease_expires_at     timestamptz,
    -- rendered system prompt and version messages; the thread's history goes between these and
    -- `input` when the run starts, so it is read only once earlier runs of the thread finished
    prelude              jsonb not null default '[]',
    -- the new turn: what the client sent
    input                jsonb not null,
    parameters           jsonb not null default '{}',
    metadata             jsonb not null default '{}',
    output               text,
    transcript           jsonb,
    usage                jsonb,
    error                jsonb,
    -- compacted event log written at the end, so finished runs replay without Redis
    events               jsonb,
    cancel_requested_at  timestamptz,
    cancel_on_disconnect boolean not null default false,
    -- the run's time limit, counted from its first start; `deadline_at` is fixed then
    timeout_ms           integer not null default 600000 check (timeout_ms > 0),
    deadline_at          timestamptz,
    created_at           timestamptz not null default now(),
    -- last time a job for this run was pushed; the reconciler re-pushes runs queued long after it
    enqueued_at          timestamptz not null default now(),
    -- microseconds from the job's push to the worker taking it (last attempt)
    queue_wait_us        bigint,
    started_at           timestamptz,
    first_token_at       timestamptz,
    finished_at          timestamptz,
    constraint runs_thread_fkey foreign key (workspace_id, thread_id) references threads (workspace_id, id)
);
create index runs_workspace_created on runs (workspace_id, created_at desc);
create index runs_operation on runs (operation_id, item_index) where operation_id is not null;
create index runs_thread on runs (workspace_id, thread_id, created_at);
-- the reconciler's scans: stale queued runs and expired leases
create index runs_active on runs (status, lease_expires_at) where status in ('queued', 'running');

create table messages (
    id           uuid primary key,
    workspace_id uuid not null,
    thread_id    text not null,
    run_id       uuid references runs (id) on delete set null,
    role         text not null check (role in ('system', 'user', 'assistant', 'tool')),
    content      jsonb not null,
    created_at   timestamptz not null default now(),
    constraint messages_thread_fkey foreign key (workspace_id, thread_id)
        references threads (workspace_id, id) on delete cascade
);
create index messages_thread on messages (workspace_id, thread_id, id);

create table idempotency_keys (
    workspace_id  uuid not null references workspaces (id) on delete cascade,
    key           text not null,
    request_hash  bytea not null,
    run_id        uuid references runs (id) on delete cascade,
    operation_id  uuid references operations (id) on delete cascade,
    created_at    timestamptz not null default now(),
    primary key (workspace_id, key)
);
