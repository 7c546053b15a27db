-- Command-side current state, batches, snapshots, idempotency and relay progress.
-- Owned by the command service; rebuildable from workflow_events.

create table assets (
    id uuid primary key,
    tag text not null,
    asset_type text not null,
    discipline text not null,
    name text,
    area text,
    properties jsonb not null default '{}',
    version bigint not null,
    constraint assets_tag_key unique (tag)
);

create index assets_discipline_idx on assets (discipline);
create index assets_asset_type_idx on assets (asset_type);

create table cables (
    id uuid primary key,
    tag text not null,
    from_asset uuid not null,
    to_asset uuid not null,
    cable_type text not null,
    discipline text not null,
    properties jsonb not null default '{}',
    version bigint not null,
    constraint cables_tag_key unique (tag)
);

create index cables_from_asset_idx on cables (from_asset);
create index cables_to_asset_idx on cables (to_asset);

create table relationships (
    id uuid primary key,
    kind text not null,
    from_asset uuid not null,
    to_asset uuid not null,
    properties jsonb not null default '{}',
    version bigint not null,
    constraint relationships_kind_from_to_key unique (kind, from_asset, to_asset)
);

-- One row per batch: its status lets a restarted service find batches whose executor
-- died ("running" with a stale heartbeat) and mark them failed.
create table batches (
    correlation_id uuid primary key,
    kind text not null,
    status text not null,
    actor text not null,
    -- Version of the batch aggregate (its BATCH_*/RULE_* events).
    version bigint not null default 0,
    started_at timestamptz not null default now(),
    heartbeat_at timestamptz not null default now(),
    finished_at timestamptz,
    request jsonb
);

-- Pre-batch state of every aggregate a batch touched, taken at first touch, in the
-- same transaction as the change. `state` is null when the aggregate did not exist.
create table execution_snapshots (
    correlation_id uuid not null,
    aggregate_type text not null,
    aggregate_id uuid not null,
    state jsonb,
    version bigint not null,
    taken_at timestamptz not null default now(),
    primary key (correlation_id, aggregate_id)
);

create index execution_snapshots_aggregate_idx on execution_snapshots (aggregate_id);

-- A retried request with the same key returns the stored response.
create table idempotency_keys (
    actor text not null,
    key text not null,
    request_fingerprint text not null,
    status smallint not null,
    body jsonb not null,
    created_at timestamptz not null default now(),
    primary key (actor, key)
);

-- How far the relay has published; the JetStream stream itself is the authority
-- (the relay resumes from its last message), this row is for operators and metrics.
create table relay_checkpoint (
    relay text primary key,
    position bigint not null,
    updated_at timestamptz not null default now()
);
