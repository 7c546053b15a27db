-- An execution asks which of its rules still have open findings (a rule version that
-- dropped its `flag` action resolves what earlier versions raised).
create index findings_rule_idx on findings (rule_id);
