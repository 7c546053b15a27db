-- Rollback bookkeeping on batches: who rolled a batch back. Status values are
-- running, completed, failed, rolled_back and partially_rolled_back.
alter table batches add column rolled_back_by uuid;

-- A rollback finds a batch's events by correlation and an aggregate's later events
-- by aggregate and position.
create index workflow_events_aggregate_position_idx on workflow_events (aggregate_id, position);
