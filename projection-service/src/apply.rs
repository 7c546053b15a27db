//! One batch of messages, one transaction: the exactly-once effect of the projection.
//!
//! The checkpoint row is locked, envelopes at or below its position are skipped (a
//! redelivery, a duplicate in the stream, or a second replica that got there first),
//! the rest are projected and the checkpoint advances, all before one commit.
//!
//! A batch can also be applied in two steps that let it overlap with the batch before
//! it: [`prepare`] opens the transaction and writes what the projector can write ahead,
//! against the checkpoint the previous batch is expected to leave; [`finish`], called
//! once that batch has committed, locks the checkpoint and, if it is the one expected,
//! does the rest and commits. If another replica moved the checkpoint meanwhile, the
//! prepared transaction is rolled back and the batch applied again from the checkpoint
//! found, so the outcome is always that of [`apply_batch`].

use crate::checkpoint::{self, Checkpoint};
use crate::projectors::Projector;
use sqlx::{PgPool, Postgres, Transaction};
use synapse_shared::EventEnvelope;

/// A message taken from the stream.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Its JetStream sequence: where a restart resumes once it is applied.
    pub stream_sequence: u64,
    /// The event it carries; `None` when the body was not an event envelope (reported
    /// when received, then passed over so one bad message cannot halt the projection).
    pub envelope: Option<EventEnvelope>,
}

/// What applying a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The checkpoint after the batch.
    pub checkpoint: Checkpoint,
    /// Events projected.
    pub applied: usize,
    /// Envelopes passed over because their position was already applied.
    pub skipped: usize,
}

/// Apply `batch` (in stream order) with `projector` in one transaction.
pub async fn apply_batch<P: Projector>(
    pool: &PgPool,
    projector: &P,
    batch: &[Delivered],
) -> Result<Applied, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let before = checkpoint::lock(&mut tx, projector.name()).await?;
    let fresh = fresh_events(before.position, batch);
    if !fresh.is_empty() {
        projector.project(&mut tx, &fresh).await?;
    }
    complete(tx, projector, before, &fresh, batch).await
}

/// A batch's transaction for one projector, with the rows written ahead of the lock.
pub struct Prepared {
    /// Open only when the projector wrote something ahead.
    transaction: Option<Transaction<'static, Postgres>>,
    /// The checkpoint the batch was prepared against.
    expected: Checkpoint,
}

impl Prepared {
    /// The checkpoint the batch leaves when it is applied against the expected one: what
    /// the next batch is prepared against.
    pub fn expected_after(&self, batch: &[Delivered]) -> Checkpoint {
        advance(
            self.expected,
            &fresh_events(self.expected.position, batch),
            batch,
        )
    }
}

/// The first step of applying `batch` with `projector`, assuming the checkpoint will be
/// `expected` when the batch is finished: the projector's
/// [`write_ahead`](Projector::write_ahead) part, in a transaction left open.
pub async fn prepare<P: Projector>(
    pool: &PgPool,
    projector: &P,
    expected: Checkpoint,
    batch: &[Delivered],
) -> Result<Prepared, sqlx::Error> {
    let fresh = fresh_events(expected.position, batch);
    let transaction = if projector.writes_ahead() && !fresh.is_empty() {
        let mut tx = pool.begin().await?;
        projector.write_ahead(&mut tx, &fresh).await?;
        Some(tx)
    } else {
        None
    };
    Ok(Prepared {
        transaction,
        expected,
    })
}

/// The second step: lock the checkpoint and, when it is the expected one, apply the
/// rest and commit. Call it only once the batch before has committed, never after it
/// failed: a prepared batch assumes its predecessor landed.
pub async fn finish<P: Projector>(
    pool: &PgPool,
    projector: &P,
    prepared: Prepared,
    batch: &[Delivered],
) -> Result<Applied, sqlx::Error> {
    let Prepared {
        transaction,
        expected,
    } = prepared;
    let Some(mut tx) = transaction else {
        // Nothing was written ahead: the plain path, against whatever checkpoint is found.
        return apply_batch(pool, projector, batch).await;
    };
    match checkpoint::try_lock(&mut tx, projector.name()).await? {
        Some(before) if before.position == expected.position => {
            let fresh = fresh_events(before.position, batch);
            projector.apply(&mut tx, &fresh).await?;
            complete(tx, projector, before, &fresh, batch).await
        }
        found => {
            // Another replica holds the checkpoint or applied past the expected one (or
            // it was reset): what was written ahead may not be what is fresh now, and
            // waiting here could deadlock with a replica waiting for those rows.
            tracing::debug!(
                projector = projector.name(),
                expected = expected.position,
                found = ?found.map(|checkpoint| checkpoint.position),
                "the checkpoint is not the one expected; applying the batch again from it"
            );
            tx.rollback().await?;
            apply_batch(pool, projector, batch).await
        }
    }
}

/// Advance the checkpoint past `batch` and commit.
async fn complete<P: Projector>(
    mut tx: Transaction<'static, Postgres>,
    projector: &P,
    before: Checkpoint,
    fresh: &[&EventEnvelope],
    batch: &[Delivered],
) -> Result<Applied, sqlx::Error> {
    let after = advance(before, fresh, batch);
    if after != before {
        checkpoint::store(&mut tx, projector.name(), after).await?;
    }
    tx.commit().await?;
    let decoded = batch
        .iter()
        .filter(|message| message.envelope.is_some())
        .count();
    Ok(Applied {
        checkpoint: after,
        applied: fresh.len(),
        skipped: decoded - fresh.len(),
    })
}

/// The envelopes past `applied_position`, each position once, in order. Positions only
/// grow along the stream, so anything not above the highest seen so far is a repeat.
pub fn fresh_events(applied_position: i64, batch: &[Delivered]) -> Vec<&EventEnvelope> {
    let mut highest = applied_position;
    batch
        .iter()
        .filter_map(|message| message.envelope.as_ref())
        .filter(|envelope| {
            let fresh = envelope.position > highest;
            highest = highest.max(envelope.position);
            fresh
        })
        .collect()
}

/// The checkpoint after a batch. When the batch applied something, its stream sequence
/// is where to resume, even if lower than before (the stream was recreated and replayed).
/// When it applied nothing (all repeats), the sequence only moves forward, so a replica
/// that lags behind another never drags the shared checkpoint back.
fn advance(before: Checkpoint, fresh: &[&EventEnvelope], batch: &[Delivered]) -> Checkpoint {
    let Some(last) = batch.last() else {
        return before;
    };
    // A JetStream sequence beyond i64::MAX would take centuries at any real rate.
    let last_sequence = i64::try_from(last.stream_sequence).unwrap_or(i64::MAX);
    match fresh.last() {
        Some(newest) => Checkpoint {
            position: newest.position,
            stream_sequence: last_sequence,
        },
        None => Checkpoint {
            position: before.position,
            stream_sequence: before.stream_sequence.max(last_sequence),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use synapse_shared::{AggregateType, EventType};
    use uuid::Uuid;

    fn delivered(stream_sequence: u64, position: i64) -> Delivered {
        Delivered {
            stream_sequence,
            envelope: Some(EventEnvelope {
                event_id: Uuid::now_v7(),
                position,
                event_type: EventType::BatchStarted,
                aggregate_type: AggregateType::Batch,
                aggregate_id: Uuid::now_v7(),
                aggregate_version: 1,
                correlation_id: Uuid::now_v7(),
                causation_id: None,
                rule_id: None,
                rule_version: None,
                discipline: None,
                actor: "tester".to_owned(),
                occurred_at: Utc::now(),
                schema_version: 1,
                payload: json!({}),
            }),
        }
    }

    fn positions(events: &[&EventEnvelope]) -> Vec<i64> {
        events.iter().map(|event| event.position).collect()
    }

    #[test]
    fn events_at_or_below_the_checkpoint_and_repeats_within_a_batch_are_not_fresh() {
        let batch = [
            delivered(1, 4),
            delivered(2, 5),
            delivered(3, 6),
            delivered(4, 6),
            delivered(5, 3),
            delivered(6, 9),
        ];

        let fresh = fresh_events(5, &batch);

        assert_eq!(positions(&fresh), [6, 9]);
    }

    #[test]
    fn a_batch_of_repeats_never_moves_the_stream_sequence_back() {
        let before = Checkpoint {
            position: 10,
            stream_sequence: 10,
        };
        let batch = [delivered(3, 3), delivered(4, 4)];

        let after = advance(before, &fresh_events(before.position, &batch), &batch);

        assert_eq!(after, before);
    }

    #[test]
    fn an_undecodable_message_still_moves_the_stream_sequence_forward() {
        let before = Checkpoint {
            position: 10,
            stream_sequence: 10,
        };
        let batch = [Delivered {
            stream_sequence: 11,
            envelope: None,
        }];

        let after = advance(before, &fresh_events(before.position, &batch), &batch);

        assert_eq!(after.position, 10);
        assert_eq!(after.stream_sequence, 11);
    }
}
