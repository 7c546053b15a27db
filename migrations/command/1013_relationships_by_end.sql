-- The relationships naming an asset, from either end: deleting an asset deletes them,
-- and a rollback that would delete an asset looks for them. The unique key starts
-- with the kind, so without these both read every relationship.
create index relationships_from_asset_idx on relationships (from_asset);
create index relationships_to_asset_idx on relationships (to_asset);
