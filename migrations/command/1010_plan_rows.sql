-- A plan's reads and creations as rows beside the plan, not as two JSON values in it.
--
-- A dry run over a million assets read about 1.5 million things and created half a
-- million; held as maps and written as one JSON value each, they made the dry run's
-- memory (and the apply's, which loaded them back) grow with the plan. As rows, a dry
-- run writes them chunk by chunk, an apply reads those of one chunk at a time, and the
-- stale check is one query.
--
-- Both tables are written only in the transaction that inserts their plan, and plans
-- are never deleted: no foreign key to `execution_plans`, whose check would cost every
-- one of a large plan's rows a lookup.

-- What a plan read, at the version it read: an asset or cable by id, or an asset tag
-- or cable tag that did not exist (version 0). Exactly one of the three is set.
create table execution_plan_reads (
    plan_id uuid not null,
    aggregate_id uuid,
    absent_asset_tag text,
    absent_cable_tag text,
    version bigint not null,
    constraint execution_plan_reads_one_thing check (
        num_nonnulls(aggregate_id, absent_asset_tag, absent_cable_tag) = 1
    )
);
-- One index entry per read: each of these covers only the rows of its kind.
create unique index execution_plan_reads_aggregate_key
    on execution_plan_reads (plan_id, aggregate_id) where aggregate_id is not null;
create unique index execution_plan_reads_asset_tag_key
    on execution_plan_reads (plan_id, absent_asset_tag) where absent_asset_tag is not null;
create unique index execution_plan_reads_cable_tag_key
    on execution_plan_reads (plan_id, absent_cable_tag) where absent_cable_tag is not null;

-- The id a plan promised for each thing it creates (key: `asset:TAG`, `cable:TAG`,
-- `relationship:KIND:FROM:TO`), and the asset whose planning created it, so an apply
-- loads the ids of one chunk's assets at a time.
create table execution_plan_creations (
    plan_id uuid not null,
    id uuid not null,
    key text not null,
    -- Null for plans made before this migration: their creations are loaded for every
    -- chunk.
    planned_for uuid,
    primary key (plan_id, id)
);
create index execution_plan_creations_planned_for_idx
    on execution_plan_creations (plan_id, planned_for);

-- Plans made before: their JSON values become rows.
insert into execution_plan_reads (plan_id, aggregate_id, absent_asset_tag, absent_cable_tag, version)
select plan_id,
       case when key not like 'tag:%' and key not like 'cable:%' then key::uuid end,
       case when key like 'tag:%' then substr(key, length('tag:') + 1) end,
       case when key like 'cable:%' then substr(key, length('cable:') + 1) end,
       value::bigint
from execution_plans, jsonb_each_text(read_versions);

insert into execution_plan_creations (plan_id, id, key)
select plan_id, value::uuid, key
from execution_plans, jsonb_each_text(created_ids);

alter table execution_plans drop column read_versions, drop column created_ids;
