-- `rm_events_occurred_idx` served no query: time windows are turned into position
-- ranges (query-service/src/read/time_index.rs) and `as_of` reads an aggregate's
-- events through `rm_events_aggregate_idx`. Each of the log's indexes costs the
-- projector about as much per event as the heap row itself.
drop index if exists rm_events_occurred_idx;
