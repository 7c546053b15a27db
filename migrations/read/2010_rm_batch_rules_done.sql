-- How far a rule run has got: the assets it has gone through so far (matched or not),
-- of `total`, from its BATCH_PROGRESS events (`done`), and at its end the runner's
-- final count (`counts.assets` of RULE_EXECUTION_COMPLETED). With `total`, what an
-- engineer polling `GET /batches/{id}` shows as a progress bar. Null for rows projected
-- before it existed, until a rebuild.
alter table rm_batch_rules add column done bigint;
