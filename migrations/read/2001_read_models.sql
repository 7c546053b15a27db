-- Read models, owned by the projection service and read by the query service.
-- Filled only from JetStream (or, for a rebuild, from the event log).

create table projector_checkpoints (
    projector text primary key,
    -- Last event position applied.
    position bigint not null,
    -- JetStream sequence of that event: where the projector resumes.
    stream_sequence bigint not null,
    updated_at timestamptz not null default now()
);

-- Every event, with what a reader filters on as columns: the timeline and histories.
create table rm_events (
    position bigint primary key,
    event_id uuid not null unique,
    event_type text not null,
    aggregate_type text not null,
    aggregate_id uuid not null,
    -- The asset this event is about (the aggregate for asset events, the target asset
    -- for rule outcomes, both ends are listed in `payload` for cables).
    asset_id uuid,
    correlation_id uuid not null,
    causation_id uuid,
    rule_id uuid,
    rule_version integer,
    discipline text,
    actor text not null,
    occurred_at timestamptz not null,
    payload jsonb not null,
    -- RFC 6902 patch from `before` to `after` for change events.
    diff jsonb,
    rolled_back boolean not null default false,
    rolled_back_by uuid
);

create index rm_events_asset_idx on rm_events (asset_id, position) where asset_id is not null;
create index rm_events_aggregate_idx on rm_events (aggregate_id, position);
create index rm_events_correlation_idx on rm_events (correlation_id, position);
create index rm_events_type_idx on rm_events (event_type, position);
create index rm_events_rule_idx on rm_events (rule_id, position) where rule_id is not null;
create index rm_events_discipline_idx on rm_events (discipline, position);
create index rm_events_actor_idx on rm_events (actor, position);
create index rm_events_occurred_idx on rm_events (occurred_at);

-- Current state of every asset, cable and relationship.
create table rm_aggregates (
    aggregate_id uuid primary key,
    aggregate_type text not null,
    -- Null once deleted.
    state jsonb,
    version bigint not null,
    last_position bigint not null
);
