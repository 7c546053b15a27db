-- Cheaper pre-batch snapshots: an execution writes one per aggregate it touches.
--
-- Nothing looks up snapshots by aggregate alone: rollback reads a batch's snapshots
-- through the primary key (correlation_id, aggregate_id). The second index only cost
-- every snapshot one more index entry.
drop index execution_snapshots_aggregate_idx;

-- A snapshot is written once and read whole by rollback, never queried inside: `json`
-- keeps the text as given, where `jsonb` parses it into its binary form on every write.
alter table execution_snapshots alter column state type json using state::json;
