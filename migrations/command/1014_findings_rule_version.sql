-- The rule version that raised each open finding, so that a FINDING_RESOLVED written
-- when the asset is deleted names it (and a rollback of the deletion reopens the
-- finding with it). Findings raised before this migration have none.
alter table findings add column rule_version integer;
