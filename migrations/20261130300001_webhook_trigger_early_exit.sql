-- A finished run whose workspace has no webhook endpoint and that named no `webhook` URL (nearly
-- every run) leaves the trigger before anything is built. The function of 20261130100001 built the
-- event's payload first and then found no endpoint to send it to: 40–75 µs of Postgres time per
-- finished run (EXPLAIN ANALYZE of a 32-run finish), a tenth of all a run costs it. Otherwise
-- unchanged.
create or replace function runs_webhook_events() returns trigger language plpgsql as $$
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
    if event_type is null or (new.webhook_url is null and not exists (
        select 1 from webhook_endpoints e
        where e.workspace_id = new.workspace_id and e.disabled_at is null)) then
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
