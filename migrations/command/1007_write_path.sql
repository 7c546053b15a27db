-- Cheaper writes for executions.
--
-- An aggregate's later events are found through the unique (aggregate_id,
-- aggregate_version) index: an aggregate's versions grow with its positions, and an
-- aggregate has few events. A second index on (aggregate_id, position) only cost every
-- append one more index entry.
drop index workflow_events_aggregate_position_idx;

-- Room on each page for the new version of a row, so a rule that sets a property is a
-- HOT update (no new entry in any of the table's indexes) instead of a moved row.
alter table assets set (fillfactor = 80);
alter table cables set (fillfactor = 80);
