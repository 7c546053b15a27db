-- `GET /assets?tag=`: the current asset with a tag, found by an index instead of a scan
-- of every aggregate.
create index rm_aggregates_asset_tag_idx on rm_aggregates ((state ->> 'tag'))
    where aggregate_type = 'asset' and state is not null;
