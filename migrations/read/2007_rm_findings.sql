-- The open findings: what each rule flags on each asset now. A FINDING_RAISED adds a
-- row, a FINDING_RESOLVED takes it away; rolling a batch back takes away what it raised
-- and reopens what it resolved. Written by the asset-history projector, in the same
-- transaction as the events they come from.
create table rm_findings (
    asset_id uuid not null,
    rule_id uuid not null,
    message text not null,
    severity text not null,
    rule_version integer,
    -- The rule's discipline.
    discipline text,
    -- The batch that raised it, when, and the position of its FINDING_RAISED: the
    -- keyset of the list.
    raised_in uuid not null,
    raised_at timestamptz not null,
    position bigint not null unique,
    primary key (asset_id, rule_id, message)
);

create index rm_findings_raised_in_idx on rm_findings (raised_in);
