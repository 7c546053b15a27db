-- The change events of cables and relationships, by the assets at their ends: what an
-- asset's history lists besides its own events ("who added a power cable to my motor,
-- by which rule and batch?"). Such an event names the assets only inside its payload
-- (`before` and `after`, each with `from_asset` and `to_asset`), so one row per asset
-- either side names, and a link whose end moved (a cable updated with another
-- `from_asset`) is in the history of its old end and of its new one.
--
-- Written by the asset-history projector with the event's `rm_events` row, in the same
-- transaction; keyed by position like it. The primary key is the index the history
-- reads: one asset's link events in position order, from any keyset.
create table rm_asset_links (
    asset_id uuid not null,
    position bigint not null,
    primary key (asset_id, position)
);

-- The rows of the link events projected before this table existed, as the projector
-- writes them (`projection-service/src/projectors/asset_history/rows.rs`, `link_ends`):
-- change events of cables and relationships, every end on either side. Ends that are
-- not UUIDs are passed over, as the projector passes them over.
insert into rm_asset_links (asset_id, position)
select distinct ends.asset_id::uuid, e.position
from rm_events e
cross join lateral (
    select e.payload -> side.name ->> end_.name
    from (values ('before'), ('after')) as side(name),
         (values ('from_asset'), ('to_asset')) as end_(name)
) as ends(asset_id)
where e.aggregate_type in ('cable', 'relationship')
  and e.event_type in ('CABLE_CREATED', 'CABLE_UPDATED', 'CABLE_DELETED',
                       'RELATIONSHIP_CREATED', 'RELATIONSHIP_DELETED', 'ROLLBACK')
  and ends.asset_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
