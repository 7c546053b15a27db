-- The rule whose planning creates each thing a plan creates. An apply then knows what
-- a chunk of each rule owes: a promise it does not keep (a relationship the plan
-- created that someone else has created since, say) stops the apply, as a creation the
-- plan did not promise does. Null for plans made before: nothing is owed for those.
alter table execution_plan_creations add column rule_id uuid;
