-- The open findings: what each rule flags on each asset now. A FINDING_RAISED adds a
-- row, a FINDING_RESOLVED takes it away (a rollback closes what its batch raised and
-- reopens what it resolved with events of its own). Written by the asset-history
-- projector, in the same transaction as the events they come from.
create table rm_findings (
    asset_id uuid not null,
    rule_id uuid not null,
    message text not null,
    severity text not null,
    rule_version integer,
    -- The rule's discipline.
    discipline text,
    -- The batch that first raised it; when and at which position it was (re)opened:
    -- the keyset of the list.
    raised_in uuid not null,
    raised_at timestamptz not null,
    position bigint not null unique,
    primary key (asset_id, rule_id, message)
);

create index rm_findings_raised_in_idx on rm_findings (raised_in);
