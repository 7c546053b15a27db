-- Rule versions (immutable), open findings, and dry-run plans.

create table rules (
    id uuid not null,
    version integer not null,
    name text not null,
    discipline text not null,
    priority integer not null,
    enabled boolean not null,
    -- The definition as the client sent it (condition and actions).
    definition jsonb not null,
    defined_by text not null,
    defined_at timestamptz not null default now(),
    primary key (id, version)
);

-- Findings raised by `flag` actions and not yet resolved: a rule that finds the same
-- thing again is skipped rather than raising it twice.
create table findings (
    asset_id uuid not null,
    rule_id uuid not null,
    message text not null,
    severity text not null,
    correlation_id uuid not null,
    raised_at timestamptz not null default now(),
    primary key (asset_id, rule_id, message)
);

-- A dry run's plan, so it can be applied later exactly as previewed, or refused if
-- anything it read changed since.
create table execution_plans (
    plan_id uuid primary key,
    created_by text not null,
    created_at timestamptz not null default now(),
    request jsonb not null,
    -- {"rule id": version} of the rules planned with.
    rule_versions jsonb not null,
    -- {"aggregate id": version} of everything the plan read (0: did not exist).
    read_versions jsonb not null,
    -- {"tag": id} of the assets, cables and relationships the plan creates.
    created_ids jsonb not null,
    summary jsonb not null,
    applied_by_correlation_id uuid
);
