-- The batch and discipline read models (SPEC §7), owned by the projection service's
-- `batches` and `disciplines` projectors and read by the query service.

-- Adds two JSON objects of counts key by key (a key missing on one side counts as 0):
-- how a projector folds a batch's new counts into the ones already stored.
create function rm_sum_counts(a jsonb, b jsonb) returns jsonb
language sql immutable as $$
    select coalesce(
        jsonb_object_agg(key, coalesce((a ->> key)::bigint, 0) + coalesce((b ->> key)::bigint, 0)),
        '{}'::jsonb)
    from (
        select jsonb_object_keys(coalesce(a, '{}'::jsonb))
        union
        select jsonb_object_keys(coalesce(b, '{}'::jsonb))
    ) as keys(key)
$$;

-- One row per batch (execution, import, single change, rollback).
create table rm_batches (
    correlation_id uuid primary key,
    -- `rule_execution`, `csv_import`, `single_change` or `rollback`, from BATCH_STARTED;
    -- null only if an event of the batch were projected before its start (never, in
    -- position order).
    kind text,
    status text not null
        check (status in ('running', 'completed', 'failed', 'rolled_back', 'partially_rolled_back')),
    -- Who ran the batch.
    actor text not null,
    -- The rollback batch that undid this one, and who ran it.
    rolled_back_by uuid,
    rolled_back_by_actor text,
    -- Position of that rollback's BATCH_ROLLED_BACK: a later rollback of the same batch
    -- (partial, then cascade) wins, a replayed earlier one does not.
    rolled_back_position bigint,
    -- Position of the batch's first event (its BATCH_STARTED): the list's keyset.
    first_position bigint not null,
    started_at timestamptz,
    finished_at timestamptz,
    duration_ms bigint,
    -- Totals over the batch's events: `executed`, `skipped`, `errors`, `matched` (rule
    -- outcomes), `findings` (FINDING_RAISED) and `changes` (asset, cable, relationship
    -- and rollback change events).
    counts jsonb not null default '{}'::jsonb,
    -- Why the batch failed.
    error text,
    -- Position of the last event that changed this row: replays at or below it are
    -- ignored.
    last_position bigint not null
);

create index rm_batches_first_position_idx on rm_batches (first_position);
create index rm_batches_status_idx on rm_batches (status, first_position);
create index rm_batches_kind_idx on rm_batches (kind, first_position);
create index rm_batches_actor_idx on rm_batches (actor, first_position);

-- One row per rule run within an execution batch.
create table rm_batch_rules (
    correlation_id uuid not null,
    rule_id uuid not null,
    rule_version integer,
    name text,
    -- Assets the execution's filters selected for the rule (RULE_EXECUTION_STARTED).
    total bigint,
    executed bigint not null default 0,
    skipped bigint not null default 0,
    errors bigint not null default 0,
    -- Assets the rule's condition matched (executed + skipped + errors).
    matched bigint not null default 0,
    started_at timestamptz,
    completed_at timestamptz,
    -- Position of the rule's first event in the batch: the order rules ran in.
    first_position bigint not null,
    last_position bigint not null,
    primary key (correlation_id, rule_id)
);

-- Per discipline, how many events of each type.
create table rm_disciplines (
    discipline text not null,
    event_type text not null,
    count bigint not null,
    last_at timestamptz not null,
    last_position bigint not null,
    primary key (discipline, event_type)
);

-- Per discipline, its activity in each batch: the "recent activity" of a discipline.
create table rm_discipline_batches (
    discipline text not null,
    correlation_id uuid not null,
    events bigint not null,
    -- RULE_ERROR events of the discipline in the batch.
    errors bigint not null,
    last_at timestamptz not null,
    last_position bigint not null,
    primary key (discipline, correlation_id)
);

create index rm_discipline_batches_recent_idx on rm_discipline_batches (discipline, last_position desc);
