-- Sessions and LLM models (reference 002): a session is a thread bound to an agent, with a title;
-- LLM models name a provider's model, and one of them is the workspace's default for agents that
-- are created from a system prompt alone.

alter table threads
    add column agent_id uuid references agents (id) on delete cascade,
    add column title    text;
create index threads_agent on threads (workspace_id, agent_id, created_at) where agent_id is not null;

create table llm_models (
    id             uuid primary key,
    workspace_id   uuid not null references workspaces (id) on delete cascade,
    provider_id    uuid not null references providers (id) on delete cascade,
    -- the provider's name for the model (`gpt-4o`, `claude-sonnet-4`)
    model_id       text not null,
    display_name   text not null,
    context_window integer check (context_window > 0),
    is_default     boolean not null default false,
    created_at     timestamptz not null default now(),
    constraint llm_models_provider_model_key unique (provider_id, model_id)
);
create index llm_models_workspace on llm_models (workspace_id, created_at);
-- at most one default model per workspace
create unique index llm_models_one_default on llm_models (workspace_id) where is_default;
