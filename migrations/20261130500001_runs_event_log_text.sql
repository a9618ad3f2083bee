-- A finished run's event log, stored compactly: one line per event, `<seq> <at_ms> <part JSON>`
-- (the form of a live batch on the run's channel). `events` held the same log as a jsonb array
-- of objects, each part's JSON escaped inside it: 1.4 KB for a short answer against 0.8 KB
-- here, parsed by Postgres on every finish and never queried inside. New logs go here; `events`
-- is read only for runs stored before.
alter table runs add column event_log text;
