//! The discipline read model: `rm_disciplines` (per discipline, how many events of each
//! type) and `rm_discipline_batches` (per discipline and batch: events, errors, last
//! activity). Events without a discipline (batch lifecycle, rollback markers) are not
//! about any discipline and are passed over; a `RULE_DEFINED` counts by type but
//! belongs to no batch.
//!
//! Like the other projectors, a slice is folded in memory and each table written with
//! one statement; rows carry the last position applied and ignore anything not past it.

use super::Projector;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::BTreeMap;
use synapse_shared::{EventEnvelope, EventType};
use uuid::Uuid;

/// Projects per-discipline activity.
#[derive(Debug, Clone, Copy, Default)]
pub struct DisciplinesProjector;

/// Its checkpoint name.
pub const NAME: &str = "disciplines";

impl Projector for DisciplinesProjector {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&EventEnvelope],
    ) -> Result<(), sqlx::Error> {
        let fold = Fold::of(events);
        upsert_type_counts(connection, &fold).await?;
        upsert_batch_activity(connection, &fold).await
    }
}

/// Counts to add to one row, with the time and position of its newest event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub events: i64,
    /// RULE_ERROR events among them.
    pub errors: i64,
    pub last_at: DateTime<Utc>,
    pub last_position: i64,
}

impl Tally {
    fn new(event: &EventEnvelope) -> Self {
        Self {
            events: 0,
            errors: 0,
            last_at: event.occurred_at,
            last_position: event.position,
        }
    }

    fn add(&mut self, event: &EventEnvelope) {
        self.events += 1;
        if event.event_type == EventType::RuleError {
            self.errors += 1;
        }
        self.last_at = self.last_at.max(event.occurred_at);
        self.last_position = event.position;
    }
}

/// A slice's per-discipline tallies, in key order (a stable write order keeps two
/// writers of the same rows from deadlocking).
#[derive(Debug, Default)]
pub struct Fold {
    /// By (discipline, event type).
    pub by_type: BTreeMap<(String, &'static str), Tally>,
    /// By (discipline, correlation id).
    pub by_batch: BTreeMap<(String, Uuid), Tally>,
}

impl Fold {
    /// Fold `events` (in position order).
    pub fn of(events: &[&EventEnvelope]) -> Self {
        let mut fold = Self::default();
        for event in events {
            let Some(discipline) = event.discipline.as_deref() else {
                continue;
            };
            fold.by_type
                .entry((discipline.to_owned(), event.event_type.as_str()))
                .or_insert_with(|| Tally::new(event))
                .add(event);
            // A rule definition's correlation id is its own, no batch's.
            if event.event_type == EventType::RuleDefined {
                continue;
            }
            fold.by_batch
                .entry((discipline.to_owned(), event.correlation_id))
                .or_insert_with(|| Tally::new(event))
                .add(event);
        }
        fold
    }
}

async fn upsert_type_counts(connection: &mut PgConnection, fold: &Fold) -> Result<(), sqlx::Error> {
    if fold.by_type.is_empty() {
        return Ok(());
    }
    let (keys, tallies): (Vec<&(String, &str)>, Vec<&Tally>) = fold.by_type.iter().unzip();
    sqlx::query(
        "insert into rm_disciplines as d (discipline, event_type, count, last_at, last_position)
         select * from unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::bigint[])
         on conflict (discipline, event_type) do update set
             count = d.count + excluded.count,
             last_at = greatest(d.last_at, excluded.last_at),
             last_position = excluded.last_position
         where d.last_position < excluded.last_position",
    )
    .bind(
        keys.iter()
            .map(|(discipline, _)| discipline.as_str())
            .collect::<Vec<&str>>(),
    )
    .bind(
        keys.iter()
            .map(|(_, event_type)| *event_type)
            .collect::<Vec<&str>>(),
    )
    .bind(
        tallies
            .iter()
            .map(|tally| tally.events)
            .collect::<Vec<i64>>(),
    )
    .bind(
        tallies
            .iter()
            .map(|tally| tally.last_at)
            .collect::<Vec<DateTime<Utc>>>(),
    )
    .bind(
        tallies
            .iter()
            .map(|tally| tally.last_position)
            .collect::<Vec<i64>>(),
    )
    .execute(connection)
    .await?;
    Ok(())
}

async fn upsert_batch_activity(
    connection: &mut PgConnection,
    fold: &Fold,
) -> Result<(), sqlx::Error> {
    if fold.by_batch.is_empty() {
        return Ok(());
    }
    let (keys, tallies): (Vec<&(String, Uuid)>, Vec<&Tally>) = fold.by_batch.iter().unzip();
    sqlx::query(
        "insert into rm_discipline_batches as d (
             discipline, correlation_id, events, errors, last_at, last_position)
         select * from unnest(
             $1::text[], $2::uuid[], $3::bigint[], $4::bigint[], $5::timestamptz[], $6::bigint[])
         on conflict (discipline, correlation_id) do update set
             events = d.events + excluded.events,
             errors = d.errors + excluded.errors,
             last_at = greatest(d.last_at, excluded.last_at),
             last_position = excluded.last_position
         where d.last_position < excluded.last_position",
    )
    .bind(
        keys.iter()
            .map(|(discipline, _)| discipline.as_str())
            .collect::<Vec<&str>>(),
    )
    .bind(
        keys.iter()
            .map(|(_, correlation_id)| *correlation_id)
            .collect::<Vec<Uuid>>(),
    )
    .bind(
        tallies
            .iter()
            .map(|tally| tally.events)
            .collect::<Vec<i64>>(),
    )
    .bind(
        tallies
            .iter()
            .map(|tally| tally.errors)
            .collect::<Vec<i64>>(),
    )
    .bind(
        tallies
            .iter()
            .map(|tally| tally.last_at)
            .collect::<Vec<DateTime<Utc>>>(),
    )
    .bind(
        tallies
            .iter()
            .map(|tally| tally.last_position)
            .collect::<Vec<i64>>(),
    )
    .execute(connection)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use synapse_shared::AggregateType;

    fn event(position: i64, event_type: EventType, discipline: Option<&str>) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            position,
            event_type,
            aggregate_type: AggregateType::Batch,
            aggregate_id: Uuid::nil(),
            aggregate_version: position,
            correlation_id: Uuid::nil(),
            causation_id: None,
            rule_id: None,
            rule_version: None,
            discipline: discipline.map(str::to_owned),
            actor: "ada".to_owned(),
            occurred_at: Utc::now(),
            schema_version: 1,
            payload: json!({}),
        }
    }

    #[test]
    fn events_are_tallied_per_discipline_by_type_and_batch_and_undisciplined_ones_skipped() {
        let events = [
            event(1, EventType::BatchStarted, None),
            event(2, EventType::RuleExecuted, Some("ELECTRICAL")),
            event(3, EventType::RuleError, Some("ELECTRICAL")),
            event(4, EventType::RuleExecuted, Some("ELECTRICAL")),
        ];

        let fold = Fold::of(&events.iter().collect::<Vec<_>>());

        let executed = fold.by_type[&("ELECTRICAL".to_owned(), "RULE_EXECUTED")];
        assert_eq!((executed.events, executed.last_position), (2, 4));
        assert_eq!(fold.by_type.len(), 2);
        let batch = fold.by_batch[&("ELECTRICAL".to_owned(), Uuid::nil())];
        assert_eq!((batch.events, batch.errors), (3, 1));
    }
}
