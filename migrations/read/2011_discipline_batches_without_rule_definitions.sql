-- A rule definition's correlation id is its own, no batch's: the disciplines projector
-- counted each as a batch of its discipline (and `/batches/{id}` did not know it). It
-- no longer does; the rows it wrote are removed.
delete from rm_discipline_batches d
using rm_events e
where e.correlation_id = d.correlation_id and e.event_type = 'RULE_DEFINED';
