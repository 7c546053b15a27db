-- A plan's reads of open findings: per (asset, rule) a fingerprint of the messages open
-- when the plan was made (as `version`), so that an apply is refused if a run of the
-- rule, or its rollback, raised or resolved any of them since.
alter table execution_plan_reads
    add column finding_asset uuid,
    add column finding_rule uuid,
    drop constraint execution_plan_reads_one_thing,
    add constraint execution_plan_reads_one_thing check (
        num_nonnulls(aggregate_id, absent_asset_tag, absent_cable_tag, finding_asset) = 1
        and (finding_asset is null) = (finding_rule is null)
    );
create unique index execution_plan_reads_findings_key
    on execution_plan_reads (plan_id, finding_asset, finding_rule)
    where finding_asset is not null;
