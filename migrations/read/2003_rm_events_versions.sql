-- The envelope's `aggregate_version` and `schema_version` in `rm_events`, so a reader
-- (the timeline, a history, a live-feed replay) shows an event exactly as it was
-- published. Rows projected before this migration have neither (null) until the
-- `asset_history` read model is rebuilt (`projection-service rebuild asset_history`);
-- every row projected or rebuilt from now on has both.

alter table rm_events
    add column aggregate_version bigint,
    add column schema_version smallint;
