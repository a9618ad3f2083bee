-- Signed completion webhooks (Standard Webhooks). A delivery is recorded by a trigger in the same
-- transaction as the run's status change that causes it, whichever code path changes the status
-- (a worker finishing, a cancel of a queued run, the reconciler ending a lost run), so a crash
-- between the change and the send loses nothing. Workers send pending deliveries. Ids made here are
-- random (v4): Postgres 15 has no uuidv7(), and these only need to be unique.

-- endpoints a workspace registered: POST /v1/webhooks
create table webhook_endpoints (
    id            uuid primary key,
    workspace_id  uuid not null references workspaces (id) on delete cascade,
    url           text not null,
    -- run.completed, run.failed, run.cancelled, run.requires_action, operation.completed
    events        text[] not null check (cardinality(events) > 0),
    -- AES-256-GCM under RUNQ_MASTER_KEY: the `whsec_…` secret, shown once at creation
    secret_sealed bytea not null,
    -- set when the receiver answered 410 Gone; nothing more is sent to it
    disabled_at   timestamptz,
    created_at    timestamptz not null default now()
);
create index webhook_endpoints_workspace on webhook_endpoints (workspace_id, created_at);

-- the secret signing deliveries to a run's own `webhook` URL (one per workspace, made on first use)
create table webhook_secrets (
    workspace_id  uuid primary key references workspaces (id) on delete cascade,
    secret_sealed bytea not null,
    created_at    timestamptz not null default now()
);

-- the `webhook` URL of a run request
alter table runs add column webhook_url text;

create table webhook_deliveries (
    id              uuid primary key,
    workspace_id    uuid not null references workspaces (id) on delete cascade,
    -- null: the run's own `webhook` URL
    endpoint_id     uuid references webhook_endpoints (id) on delete cascade,
    url             text not null,
    -- the event (the `webhook-id` header): the same for every endpoint and every retry
    event_id        uuid not null,
    event_type      text not null,
    -- the run or operation the event is about
    subject_id      uuid not null,
    payload         jsonb not null,
    status          text not null default 'pending' check (status in ('pending', 'delivered', 'failed', 'disabled')),
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    created_at      timestamptz not null default now(),
    delivered_at    timestamptz
);
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at) where status = 'pending';
create index webhook_deliveries_endpoint on webhook_deliveries (endpoint_id, created_at);
create index webhook_deliveries_subject on webhook_deliveries (subject_id);

create table webhook_attempts (
    delivery_id   uuid not null references webhook_deliveries (id) on delete cascade,
    attempt       integer not null,
    at            timestamptz not null default now(),
    -- null when no response came (connection refused, timeout, refused address)
    status_code   integer,
    -- the first characters of the response body, or why there was no response
    response      text,
    duration_ms   integer not null,
    primary key (delivery_id, attempt)
);

create function runs_webhook_events() returns trigger language plpgsql as $$
declare
    event_type text := case new.status
        when 'completed' then 'run.completed'
        when 'failed' then 'run.failed'
        when 'timed_out' then 'run.failed'
        when 'cancelled' then 'run.cancelled'
        when 'requires_action' then 'run.requires_action' end;
    event_id uuid := gen_random_uuid();
    payload jsonb;
    progress record;
begin
    if event_type is null then
        return null;
    end if;
    payload := jsonb_build_object(
        'id', 'evt_' || replace(event_id::text, '-', ''),
        'type', event_type,
        'created_at', now(),
        'data', jsonb_strip_nulls(jsonb_build_object(
            'run_id', 'run_' || replace(new.id::text, '-', ''),
            'status', new.status,
            'agent_id', 'agt_' || replace(new.agent_id::text, '-', ''),
            'thread_id', new.thread_id,
            'operation_id', 'op_' || replace(new.operation_id::text, '-', ''),
            'error', new.error)));
    insert into webhook_deliveries (id, workspace_id, endpoint_id, url, event_id, event_type, subject_id, payload)
    select gen_random_uuid(), new.workspace_id, e.id, e.url, event_id, event_type, new.id, payload
    from webhook_endpoints e
    where e.workspace_id = new.workspace_id and e.disabled_at is null and event_type = any (e.events)
    union all
    select gen_random_uuid(), new.workspace_id, null, new.webhook_url, event_id, event_type, new.id, payload
    where new.webhook_url is not null;

    -- operation.completed, once, when the last run of an operation ends. Only workspaces that asked
    -- for it pay for the lock, which makes the last two runs to finish see each other's outcome.
    if new.operation_id is null or new.status = 'requires_action' or not exists (
        select 1 from webhook_endpoints e
        where e.workspace_id = new.workspace_id and e.disabled_at is null
          and 'operation.completed' = any (e.events)) then
        return null;
    end if;
    perform 1 from operations where id = new.operation_id for update;
    if exists (
        select 1 from runs
        where operation_id = new.operation_id and status in ('queued', 'running', 'requires_action')) or exists (
        select 1 from webhook_deliveries d
        where d.subject_id = new.operation_id and d.event_type = 'operation.completed') then
        return null;
    end if;
    select o.total,
           count(*) filter (where r.status = 'completed') as completed,
           count(*) filter (where r.status <> 'completed') as failed
    into progress
    from operations o join runs r on r.operation_id = o.id
    where o.id = new.operation_id group by o.total;
    event_id := gen_random_uuid();
    payload := jsonb_build_object(
        'id', 'evt_' || replace(event_id::text, '-', ''),
        'type', 'operation.completed',
        'created_at', now(),
        'data', jsonb_build_object(
            'operation_id', 'op_' || replace(new.operation_id::text, '-', ''),
            'status', case when progress.failed = progress.total then 'failed' else 'succeeded' end,
            'progress', jsonb_build_object(
                'total', progress.total, 'completed', progress.completed, 'failed', progress.failed)));
    insert into webhook_deliveries (id, workspace_id, endpoint_id, url, event_id, event_type, subject_id, payload)
    select gen_random_uuid(), new.workspace_id, e.id, e.url, event_id, 'operation.completed', new.operation_id, payload
    from webhook_endpoints e
    where e.workspace_id = new.workspace_id and e.disabled_at is null and 'operation.completed' = any (e.events);
    return null;
end $$;

-- claims (queued → running) never reach the function: the condition is checked first
create trigger runs_webhook_events after update of status on runs for each row
    when (old.status is distinct from new.status
          and new.status in ('completed', 'failed', 'cancelled', 'timed_out', 'requires_action'))
    execute function runs_webhook_events();
