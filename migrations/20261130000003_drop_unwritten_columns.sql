-- Columns nothing writes: an operation's progress and status are counted from its runs (so
-- finishing a run never contends on a shared counter row), and key use is not tracked per request
-- (the rate limiter counts requests in Redis).
alter table operations
    drop column status,
    drop column completed,
    drop column failed,
    drop column updated_at,
    drop column finished_at;
alter table api_keys drop column last_used_at;
