-- The timeline's payloads and diffs are stored as the JSON text the projector writes
-- (`json`) instead of `jsonb`. No query looks inside them: they are written once per
-- event and read back whole on every timeline and history page. `jsonb` parsed each
-- one into its binary form on insert and printed it back to text on every read,
-- about twice the cost of `json`'s validation and plain copy in both directions.
alter table rm_events
    alter column payload type json using payload::json,
    alter column diff type json using diff::json;
