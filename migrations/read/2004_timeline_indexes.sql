-- Indexes for timeline pages with mixed filters (query-service/src/read/scan.rs).
--
-- A page with an equality filter and an event type reads one
-- `(column, event_type, position)` range per type: exact, even when the pair never
-- occurs (a discipline without cables), where the single-column indexes would read
-- every event of the column's value to find none.
create index rm_events_correlation_type_idx on rm_events (correlation_id, event_type, position);
create index rm_events_rule_type_idx on rm_events (rule_id, event_type, position) where rule_id is not null;
create index rm_events_actor_type_idx on rm_events (actor, event_type, position);
create index rm_events_discipline_type_idx on rm_events (discipline, event_type, position);

-- The time summary (query-service/src/read/time_index.rs) reads `occurred_at` by
-- position ranges: from this index alone, without visiting the events.
create index rm_events_position_time_idx on rm_events (position, occurred_at);
