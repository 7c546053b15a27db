//! The batch read model: `rm_batches` (per correlation id: kind, status, who ran it and
//! who rolled it back, timings, counts) and `rm_batch_rules` (per rule of an execution:
//! counts and timings).
//!
//! A slice of events is folded in memory first ([`fold`]), then each table is written
//! with one statement (arrays bound and `unnest`ed), like the asset history. Counts are
//! added to what is stored; every row carries the position of the last event applied
//! to it, and a row already past an incoming position is left alone, so replaying a
//! slice over rows an earlier run left behind adds nothing twice.

mod fold;

pub use fold::{BatchCounts, BatchRow, Fold, RollbackMark, RuleRow};

use super::Projector;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use synapse_shared::EventEnvelope;
use uuid::Uuid;

/// Projects batch lifecycles, rule runs and rollbacks into the batch tables.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchesProjector;

/// Its checkpoint name.
pub const NAME: &str = "batches";

impl Projector for BatchesProjector {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&EventEnvelope],
    ) -> Result<(), sqlx::Error> {
        let fold = Fold::of(events);
        upsert_batches(connection, &fold).await?;
        upsert_rules(connection, &fold).await?;
        // After the upsert: a rollback in the same slice as its target finds the row.
        mark_rolled_back(connection, &fold).await
    }
}

/// Insert new batches, or fold the slice into the stored row. Status only leaves
/// `running` on an end event and never leaves a rolled-back state; start facts are kept
/// from the first time they are seen.
async fn upsert_batches(connection: &mut PgConnection, fold: &Fold) -> Result<(), sqlx::Error> {
    if fold.batches.is_empty() {
        return Ok(());
    }
    let rows: Vec<&BatchRow> = fold.batches.values().collect();
    let counts: Vec<Value> = rows
        .iter()
        // Plain integers in a derived struct: serialising cannot fail.
        .map(|row| serde_json::to_value(row.counts).unwrap_or_default())
        .collect();
    sqlx::query(
        "insert into rm_batches as b (
             correlation_id, kind, status, actor, first_position, started_at, finished_at,
             duration_ms, counts, error, last_position)
         select * from unnest(
             $1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[],
             $7::timestamptz[], $8::bigint[], $9::jsonb[], $10::text[], $11::bigint[])
         on conflict (correlation_id) do update set
             kind = coalesce(b.kind, excluded.kind),
             status = case
                 when excluded.status = 'running'
                   or b.status in ('rolled_back', 'partially_rolled_back') then b.status
                 else excluded.status end,
             first_position = least(b.first_position, excluded.first_position),
             started_at = coalesce(b.started_at, excluded.started_at),
             finished_at = coalesce(excluded.finished_at, b.finished_at),
             duration_ms = coalesce(
                 excluded.duration_ms,
                 -- Truncated like the fold's `num_milliseconds`, so slicing never changes it.
                 floor(extract(epoch from excluded.finished_at - b.started_at) * 1000)::bigint,
                 b.duration_ms),
             counts = rm_sum_counts(b.counts, excluded.counts),
             error = coalesce(excluded.error, b.error),
             last_position = excluded.last_position
         where b.last_position < excluded.last_position",
    )
    .bind(
        rows.iter()
            .map(|row| row.correlation_id)
            .collect::<Vec<Uuid>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.kind.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|row| row.status).collect::<Vec<&str>>())
    .bind(
        rows.iter()
            .map(|row| row.actor.as_str())
            .collect::<Vec<&str>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.first_position)
            .collect::<Vec<i64>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.started_at)
            .collect::<Vec<Option<DateTime<Utc>>>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.finished_at)
            .collect::<Vec<Option<DateTime<Utc>>>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.duration_ms)
            .collect::<Vec<Option<i64>>>(),
    )
    .bind(counts)
    .bind(
        rows.iter()
            .map(|row| row.error.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.last_position)
            .collect::<Vec<i64>>(),
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Insert or fold each rule run. Until the rule completes its counts are running sums;
/// its RULE_EXECUTION_COMPLETED carries the runner's final counts, which replace them.
async fn upsert_rules(connection: &mut PgConnection, fold: &Fold) -> Result<(), sqlx::Error> {
    if fold.rules.is_empty() {
        return Ok(());
    }
    let rows: Vec<&RuleRow> = fold.rules.values().collect();
    sqlx::query(
        "insert into rm_batch_rules as r (
             correlation_id, rule_id, rule_version, name, total, executed, skipped, errors,
             matched, started_at, completed_at, first_position, last_position, done)
         select * from unnest(
             $1::uuid[], $2::uuid[], $3::integer[], $4::text[], $5::bigint[], $6::bigint[],
             $7::bigint[], $8::bigint[], $9::bigint[], $10::timestamptz[], $11::timestamptz[],
             $12::bigint[], $13::bigint[], $14::bigint[])
         on conflict (correlation_id, rule_id) do update set
             rule_version = coalesce(excluded.rule_version, r.rule_version),
             name = coalesce(excluded.name, r.name),
             total = coalesce(excluded.total, r.total),
             done = greatest(r.done, excluded.done),
             executed = case when excluded.completed_at is null
                 then r.executed + excluded.executed else excluded.executed end,
             skipped = case when excluded.completed_at is null
                 then r.skipped + excluded.skipped else excluded.skipped end,
             errors = case when excluded.completed_at is null
                 then r.errors + excluded.errors else excluded.errors end,
             matched = case when excluded.completed_at is null
                 then r.matched + excluded.matched else excluded.matched end,
             started_at = coalesce(r.started_at, excluded.started_at),
             completed_at = coalesce(excluded.completed_at, r.completed_at),
             first_position = least(r.first_position, excluded.first_position),
             last_position = excluded.last_position
         where r.last_position < excluded.last_position",
    )
    .bind(
        rows.iter()
            .map(|row| row.correlation_id)
            .collect::<Vec<Uuid>>(),
    )
    .bind(rows.iter().map(|row| row.rule_id).collect::<Vec<Uuid>>())
    .bind(
        rows.iter()
            .map(|row| row.rule_version)
            .collect::<Vec<Option<i32>>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.name.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.total)
            .collect::<Vec<Option<i64>>>(),
    )
    .bind(rows.iter().map(|row| row.executed).collect::<Vec<i64>>())
    .bind(rows.iter().map(|row| row.skipped).collect::<Vec<i64>>())
    .bind(rows.iter().map(|row| row.errors).collect::<Vec<i64>>())
    .bind(rows.iter().map(|row| row.matched).collect::<Vec<i64>>())
    .bind(
        rows.iter()
            .map(|row| row.started_at)
            .collect::<Vec<Option<DateTime<Utc>>>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.completed_at)
            .collect::<Vec<Option<DateTime<Utc>>>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.first_position)
            .collect::<Vec<i64>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.last_position)
            .collect::<Vec<i64>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.done)
            .collect::<Vec<Option<i64>>>(),
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Mark each rolled-back batch with its rollback, unless a later rollback already did.
async fn mark_rolled_back(connection: &mut PgConnection, fold: &Fold) -> Result<(), sqlx::Error> {
    if fold.rollbacks.is_empty() {
        return Ok(());
    }
    let marks: Vec<&RollbackMark> = fold.rollbacks.values().collect();
    sqlx::query(
        "update rm_batches as b
         set status = m.status, rolled_back_by = m.rolled_back_by,
             rolled_back_by_actor = m.actor, rolled_back_position = m.position
         from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[])
             as m(target, rolled_back_by, actor, status, position)
         where b.correlation_id = m.target
           and coalesce(b.rolled_back_position, 0) < m.position",
    )
    .bind(marks.iter().map(|mark| mark.target).collect::<Vec<Uuid>>())
    .bind(
        marks
            .iter()
            .map(|mark| mark.rolled_back_by)
            .collect::<Vec<Uuid>>(),
    )
    .bind(
        marks
            .iter()
            .map(|mark| mark.actor.as_str())
            .collect::<Vec<&str>>(),
    )
    .bind(marks.iter().map(|mark| mark.status).collect::<Vec<&str>>())
    .bind(marks.iter().map(|mark| mark.position).collect::<Vec<i64>>())
    .execute(connection)
    .await?;
    Ok(())
}
