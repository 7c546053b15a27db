-- The event log: the source of truth. Append-only, enforced by the database.

create table workflow_events (
    -- Global order. Assigned while the append lock below is held, so positions become
    -- visible in commit order and a follower reading by position never skips one.
    position bigint generated always as identity primary key,
    event_id uuid not null,
    event_type text not null,
    aggregate_type text not null,
    aggregate_id uuid not null,
    aggregate_version bigint not null,
    correlation_id uuid not null,
    causation_id uuid,
    rule_id uuid,
    rule_version integer,
    discipline text,
    actor text not null,
    occurred_at timestamptz not null,
    schema_version smallint not null,
    payload jsonb not null,
    constraint workflow_events_event_id_key unique (event_id),
    -- Optimistic concurrency backstop: two writers cannot both append version N.
    constraint workflow_events_aggregate_version_key unique (aggregate_id, aggregate_version)
);

create index workflow_events_correlation_idx on workflow_events (correlation_id, position);

-- Event content is immutable: no UPDATE, DELETE or TRUNCATE, whoever asks.
create function workflow_events_refuse_change() returns trigger
language plpgsql as $$
begin
    raise exception 'workflow_events is append-only: % refused', tg_op
        using errcode = 'restrict_violation';
end
$$;

create trigger workflow_events_immutable
    before update or delete on workflow_events
    for each row execute function workflow_events_refuse_change();

create trigger workflow_events_no_truncate
    before truncate on workflow_events
    for each statement execute function workflow_events_refuse_change();

-- Serialized appends: every inserting statement first takes one transaction-scoped
-- advisory lock, held until commit. Positions are drawn under the lock, so no position
-- can become visible after a higher one (the bigserial gap problem). Writers do their
-- state changes first and append events last, keeping the locked span short.
create function workflow_events_serialize_appends() returns trigger
language plpgsql as $$
begin
    perform pg_advisory_xact_lock(7346298401);
    return null;
end
$$;

create trigger workflow_events_append_lock
    before insert on workflow_events
    for each statement execute function workflow_events_serialize_appends();

-- Wake the relay. NOTIFY is delivered at commit and only as a hint: the relay also
-- polls, because a listener that reconnects misses notifications.
create function workflow_events_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify('synapse_workflow_events', '');
    return null;
end
$$;

create trigger workflow_events_appended
    after insert on workflow_events
    for each statement execute function workflow_events_notify();

-- "Rolled back" is recorded beside the log, never by rewriting it. Only the rollback
-- command writes this table.
create table event_rollbacks (
    event_id uuid primary key references workflow_events (event_id),
    rolled_back_by uuid not null,
    rolled_back_at timestamptz not null default now()
);
