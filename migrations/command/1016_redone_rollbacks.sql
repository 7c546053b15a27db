-- A rollback of a rollback (a redo) clears the marks the rolled-back rollback put on
-- the events it undid, found by who marked them.
create index event_rollbacks_rolled_back_by_idx on event_rollbacks (rolled_back_by);
