-- `GET /findings` by rule or by discipline reads that filter's own index in position
-- order instead of every open finding (by asset it uses the primary key).
create index rm_findings_rule_idx on rm_findings (rule_id, position);
create index rm_findings_discipline_idx on rm_findings (discipline, position);
