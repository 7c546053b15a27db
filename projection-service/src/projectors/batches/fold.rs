//! What a slice of events changes in the batch tables, worked out without a database:
//! one row per batch and per (batch, rule), with counts to add, so a slice of tens of
//! thousands of rule outcomes becomes a handful of upserts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use synapse_shared::{AggregateType, EventEnvelope, EventType};
use uuid::Uuid;

/// Counts of a batch's events, added to what `rm_batches.counts` already holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchCounts {
    pub executed: i64,
    pub skipped: i64,
    pub errors: i64,
    pub matched: i64,
    pub findings: i64,
    pub findings_resolved: i64,
    pub changes: i64,
}

/// The change a slice makes to one `rm_batches` row.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRow {
    pub correlation_id: Uuid,
    pub kind: Option<String>,
    /// `running` unless the slice holds the batch's end.
    pub status: &'static str,
    pub actor: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// Counts to add.
    pub counts: BatchCounts,
    pub error: Option<String>,
    pub first_position: i64,
    pub last_position: i64,
}

/// The change a slice makes to one `rm_batch_rules` row.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleRow {
    pub correlation_id: Uuid,
    pub rule_id: Uuid,
    pub rule_version: Option<i32>,
    pub name: Option<String>,
    pub total: Option<i64>,
    /// Assets gone through so far (the last `BATCH_PROGRESS`, or the final count).
    pub done: Option<i64>,
    /// Counts to add; once `completed_at` is set, the rule's final counts instead.
    pub executed: i64,
    pub skipped: i64,
    pub errors: i64,
    pub matched: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub first_position: i64,
    pub last_position: i64,
}

/// A batch undone by a rollback (a BATCH_ROLLED_BACK event of the rollback batch).
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackMark {
    /// The batch rolled back.
    pub target: Uuid,
    /// The rollback batch.
    pub rolled_back_by: Uuid,
    pub actor: String,
    /// `rolled_back` or `partially_rolled_back`.
    pub status: &'static str,
    pub position: i64,
}

/// Everything a slice changes, keyed so each row is written once, in key order (a stable
/// order keeps two writers of the same rows from deadlocking).
#[derive(Debug, Default)]
pub struct Fold {
    pub batches: BTreeMap<Uuid, BatchRow>,
    pub rules: BTreeMap<(Uuid, Uuid), RuleRow>,
    pub rollbacks: BTreeMap<Uuid, RollbackMark>,
}

impl Fold {
    /// Fold `events` (in position order).
    pub fn of(events: &[&EventEnvelope]) -> Self {
        let mut fold = Self::default();
        for event in events {
            fold.add(event);
        }
        fold
    }

    fn add(&mut self, event: &EventEnvelope) {
        // Rule definitions are not part of any batch; everything else of a batch is
        // either a batch-level event or a change.
        if event.aggregate_type != AggregateType::Batch && !event.event_type.is_state_change() {
            return;
        }
        self.add_to_batch(event);
        // Only a rule's run makes its row: a finding event names its rule too, also in
        // a rollback or a deletion that closes or reopens findings, which runs no rule.
        let of_a_run = matches!(
            event.event_type,
            EventType::RuleExecutionStarted
                | EventType::RuleExecutionCompleted
                | EventType::BatchProgress
                | EventType::RuleExecuted
                | EventType::RuleSkipped
                | EventType::RuleError
        );
        if let Some(rule_id) = event.rule_id.filter(|_| of_a_run) {
            self.add_to_rule(event, rule_id);
        }
        if event.event_type == EventType::BatchRolledBack {
            self.mark_rolled_back(event);
        }
    }

    fn add_to_batch(&mut self, event: &EventEnvelope) {
        let row = self
            .batches
            .entry(event.correlation_id)
            .or_insert_with(|| BatchRow {
                correlation_id: event.correlation_id,
                kind: None,
                status: "running",
                actor: event.actor.clone(),
                started_at: None,
                finished_at: None,
                duration_ms: None,
                counts: BatchCounts::default(),
                error: None,
                first_position: event.position,
                last_position: event.position,
            });
        row.last_position = event.position;
        let counts = &mut row.counts;
        match event.event_type {
            EventType::BatchStarted => {
                row.kind = text(&event.payload, "kind").or(row.kind.take());
                row.started_at = Some(event.occurred_at);
            }
            EventType::BatchCompleted | EventType::BatchFailed => {
                row.status = if event.event_type == EventType::BatchCompleted {
                    "completed"
                } else {
                    "failed"
                };
                row.finished_at = Some(event.occurred_at);
                row.duration_ms = number(&event.payload, "duration_ms").or_else(|| {
                    row.started_at
                        .map(|started| (event.occurred_at - started).num_milliseconds())
                });
                row.error = text(&event.payload, "error");
                if row.kind.is_none() {
                    row.kind = text(&event.payload, "kind");
                }
            }
            EventType::RuleExecuted => {
                counts.executed += 1;
                counts.matched += i64::from(matched(event));
            }
            EventType::RuleSkipped => {
                counts.skipped += 1;
                counts.matched += 1;
            }
            EventType::RuleError => {
                counts.errors += 1;
                counts.matched += i64::from(matched(event));
            }
            EventType::FindingRaised => counts.findings += 1,
            EventType::FindingResolved => counts.findings_resolved += 1,
            change if change.is_state_change() => counts.changes += 1,
            _ => {}
        }
    }

    fn add_to_rule(&mut self, event: &EventEnvelope, rule_id: Uuid) {
        let row = self
            .rules
            .entry((event.correlation_id, rule_id))
            .or_insert_with(|| RuleRow {
                correlation_id: event.correlation_id,
                rule_id,
                rule_version: event.rule_version,
                name: None,
                total: None,
                done: None,
                executed: 0,
                skipped: 0,
                errors: 0,
                matched: 0,
                started_at: None,
                completed_at: None,
                first_position: event.position,
                last_position: event.position,
            });
        row.last_position = event.position;
        row.rule_version = event.rule_version.or(row.rule_version);
        match event.event_type {
            EventType::RuleExecutionStarted => {
                row.name = text(&event.payload, "name").or(row.name.take());
                row.total = number(&event.payload, "total");
                row.started_at = Some(event.occurred_at);
            }
            EventType::RuleExecutionCompleted => {
                row.name = text(&event.payload, "name").or(row.name.take());
                row.completed_at = Some(event.occurred_at);
                // The runner's own counts are final: they replace the running sums.
                if let Some(counts) = event.payload.get("counts") {
                    row.done = number(counts, "assets").or(row.done);
                    row.executed = number(counts, "executed").unwrap_or(row.executed);
                    row.skipped = number(counts, "skipped").unwrap_or(row.skipped);
                    row.errors = number(counts, "errors").unwrap_or(row.errors);
                    row.matched = number(counts, "matched").unwrap_or(row.matched);
                }
            }
            EventType::BatchProgress => {
                row.done = number(&event.payload, "done").max(row.done);
            }
            EventType::RuleExecuted => {
                row.executed += 1;
                row.matched += i64::from(matched(event));
            }
            EventType::RuleSkipped => {
                row.skipped += 1;
                row.matched += 1;
            }
            EventType::RuleError => {
                row.errors += 1;
                row.matched += i64::from(matched(event));
            }
            _ => {}
        }
    }

    fn mark_rolled_back(&mut self, event: &EventEnvelope) {
        let Some(target) = text(&event.payload, "target_correlation_id")
            .and_then(|target| target.parse::<Uuid>().ok())
        else {
            tracing::warn!(
                position = event.position,
                "BATCH_ROLLED_BACK without a target"
            );
            return;
        };
        // Anything but a partial rollback counts as a whole one: the table accepts only
        // the statuses it knows, and an unknown word must not stop the projection.
        let status = match text(&event.payload, "status").as_deref() {
            Some("partially_rolled_back") => "partially_rolled_back",
            _ => "rolled_back",
        };
        // A later rollback of the same batch in the slice replaces an earlier one.
        self.rollbacks.insert(
            target,
            RollbackMark {
                target,
                rolled_back_by: event.correlation_id,
                actor: event.actor.clone(),
                status,
                position: event.position,
            },
        );
    }
}

/// Whether a `RULE_EXECUTED` or `RULE_ERROR` came from an asset whose condition held:
/// one whose condition was false and whose findings the rule only resolved, or whose
/// condition could not be evaluated, says `"matched": false`.
fn matched(event: &EventEnvelope) -> bool {
    event.payload.get("matched").and_then(Value::as_bool) != Some(false)
}

/// A string field of a payload.
fn text(payload: &Value, field: &str) -> Option<String> {
    payload
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// An integer field of a payload.
fn number(payload: &Value, field: &str) -> Option<i64> {
    payload.get(field).and_then(Value::as_i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(
        position: i64,
        event_type: EventType,
        correlation_id: Uuid,
        rule_id: Option<Uuid>,
        payload: Value,
    ) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            position,
            event_type,
            aggregate_type: if event_type.is_state_change() {
                AggregateType::Asset
            } else {
                AggregateType::Batch
            },
            aggregate_id: correlation_id,
            aggregate_version: position,
            correlation_id,
            causation_id: None,
            rule_id,
            rule_version: rule_id.map(|_| 2),
            discipline: None,
            actor: "ada".to_owned(),
            occurred_at: Utc::now(),
            schema_version: 1,
            payload,
        }
    }

    #[test]
    fn a_rollback_reopening_and_closing_findings_has_no_rule_rows() {
        let batch = Uuid::now_v7();
        let rule = Uuid::now_v7();
        let finding =
            || json!({"asset_id": Uuid::now_v7(), "message": "check", "severity": "info"});
        let events = [
            event(
                1,
                EventType::BatchStarted,
                batch,
                None,
                json!({"kind": "rollback"}),
            ),
            event(2, EventType::FindingResolved, batch, Some(rule), finding()),
            event(3, EventType::FindingRaised, batch, Some(rule), finding()),
            event(4, EventType::BatchCompleted, batch, None, json!({})),
        ];

        let fold = Fold::of(&events.iter().collect::<Vec<_>>());

        assert_eq!(fold.batches[&batch].status, "completed");
        assert!(fold.rules.is_empty(), "{:?}", fold.rules.keys());
    }

    #[test]
    fn an_execution_folds_into_one_batch_row_and_one_row_per_rule() {
        let batch = Uuid::now_v7();
        let rule = Uuid::now_v7();
        let events = [
            event(
                1,
                EventType::BatchStarted,
                batch,
                None,
                json!({"kind": "rule_execution"}),
            ),
            event(
                2,
                EventType::RuleExecutionStarted,
                batch,
                Some(rule),
                json!({"name": "VFD", "total": 3}),
            ),
            event(3, EventType::RuleExecuted, batch, Some(rule), json!({})),
            event(4, EventType::AssetUpdated, batch, None, json!({})),
            event(5, EventType::RuleSkipped, batch, Some(rule), json!({})),
            event(
                6,
                EventType::RuleExecutionCompleted,
                batch,
                Some(rule),
                json!({"counts": {"executed": 1, "skipped": 1, "errors": 0, "matched": 2}}),
            ),
            event(
                7,
                EventType::BatchCompleted,
                batch,
                None,
                json!({"duration_ms": 12}),
            ),
        ];

        let fold = Fold::of(&events.iter().collect::<Vec<_>>());

        let row = &fold.batches[&batch];
        assert_eq!(row.kind.as_deref(), Some("rule_execution"));
        assert_eq!(row.status, "completed");
        assert_eq!(row.duration_ms, Some(12));
        assert_eq!((row.first_position, row.last_position), (1, 7));
        assert_eq!(
            row.counts,
            BatchCounts {
                executed: 1,
                skipped: 1,
                matched: 2,
                changes: 1,
                ..BatchCounts::default()
            }
        );
        let rule_row = &fold.rules[&(batch, rule)];
        assert_eq!(rule_row.name.as_deref(), Some("VFD"));
        assert_eq!(
            (rule_row.executed, rule_row.skipped, rule_row.matched),
            (1, 1, 2)
        );
        assert_eq!(rule_row.total, Some(3));
        assert!(rule_row.completed_at.is_some());
    }

    #[test]
    fn errors_of_conditions_that_could_not_be_evaluated_are_not_counted_as_matched() {
        let batch = Uuid::now_v7();
        let rule = Uuid::now_v7();
        let error = |position, matched| {
            event(
                position,
                EventType::RuleError,
                batch,
                Some(rule),
                json!({"error": "boom", "matched": matched}),
            )
        };
        // The first event comes from a service that did not say: it counts as matched.
        let mut unsaid = error(1, true);
        unsaid.payload = json!({"error": "boom"});
        let events = [unsaid, error(2, false), error(3, true), error(4, false)];

        let fold = Fold::of(&events.iter().collect::<Vec<_>>());

        let counts = &fold.batches[&batch].counts;
        assert_eq!((counts.errors, counts.matched), (4, 2));
        let rule_row = &fold.rules[&(batch, rule)];
        assert_eq!((rule_row.errors, rule_row.matched), (4, 2));
    }

    #[test]
    fn a_failed_batch_keeps_its_error_and_rule_definitions_are_no_batch() {
        let batch = Uuid::now_v7();
        let mut defined = event(1, EventType::RuleDefined, Uuid::now_v7(), None, json!({}));
        defined.aggregate_type = AggregateType::Rule;
        let events = [
            defined,
            event(
                2,
                EventType::BatchStarted,
                batch,
                None,
                json!({"kind": "rule_execution"}),
            ),
            event(
                3,
                EventType::BatchFailed,
                batch,
                None,
                json!({"error": "the executor stopped"}),
            ),
        ];

        let fold = Fold::of(&events.iter().collect::<Vec<_>>());

        assert_eq!(fold.batches.len(), 1);
        let row = &fold.batches[&batch];
        assert_eq!(row.status, "failed");
        assert_eq!(row.error.as_deref(), Some("the executor stopped"));
        assert!(row.duration_ms.is_some_and(|ms| ms >= 0));
    }

    #[test]
    fn a_rollback_marks_its_target_with_the_rollback_batch_and_status() {
        let target = Uuid::now_v7();
        let rollback = Uuid::now_v7();
        let events = [event(
            9,
            EventType::BatchRolledBack,
            rollback,
            None,
            json!({"target_correlation_id": target, "status": "partially_rolled_back"}),
        )];

        let fold = Fold::of(&events.iter().collect::<Vec<_>>());

        let mark = &fold.rollbacks[&target];
        assert_eq!(mark.rolled_back_by, rollback);
        assert_eq!(mark.status, "partially_rolled_back");
        assert_eq!(mark.actor, "ada");
    }
}
