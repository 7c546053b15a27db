//! How the asset-history projector marks a rolled-back batch's events in `rm_events`:
//! exactly the events the rollback undid, and for each `ROLLBACK` by a probe of its
//! aggregate's events, never by reading the whole batch it undid again (which made
//! projecting the rollback of a large batch quadratic).
//!
//! The projector runs here on a connection of its own, as the service's apply step
//! calls it, against the real Postgres.

use crate::projection::History;
use projection_service::projectors::asset_history::MARK_AGGREGATE_ROLLBACKS;
use projection_service::projectors::{AssetHistoryProjector, Projector};
use serde_json::{json, Value};
use sqlx::PgPool;
use synapse_shared::{AggregateType, EventEnvelope, EventType};
use synapse_tests::TestDatabase;
use uuid::Uuid;

/// A database with the read-model tables and nothing in them.
async fn read_models() -> anyhow::Result<(TestDatabase, PgPool)> {
    let database = TestDatabase::create().await?;
    let pool = PgPool::connect(&database.url).await?;
    synapse_shared::db::migrate_read(&pool).await?;
    Ok((database, pool))
}

/// An event of the history's current batch about the batch itself (the command service
/// makes the batch the aggregate of its lifecycle and rule outcomes).
fn batch_event(history: &mut History, event_type: EventType) -> EventEnvelope {
    let batch = history.correlation_id;
    history.event(event_type, AggregateType::Batch, batch, json!({}))
}

/// A change of `asset` in the history's current batch.
fn change(history: &mut History, event_type: EventType, asset: Uuid) -> EventEnvelope {
    let payload = json!({"before": null, "after": {"id": asset}});
    history.event(event_type, AggregateType::Asset, asset, payload)
}

/// The `ROLLBACK` of `asset`, in the history's current batch, that restores it as it
/// was before batch `target`.
fn rollback_of(history: &mut History, asset: Uuid, target: Uuid) -> EventEnvelope {
    let payload = json!({"before": {"id": asset}, "after": {"id": asset},
                         "rolled_back_correlation_id": target});
    history.event(EventType::Rollback, AggregateType::Asset, asset, payload)
}

/// Project `events` in one transaction, as the service applies one slice.
async fn project(pool: &PgPool, events: &[EventEnvelope]) -> anyhow::Result<()> {
    let slice: Vec<&EventEnvelope> = events.iter().collect();
    let mut transaction = pool.begin().await?;
    AssetHistoryProjector
        .project(&mut transaction, &slice)
        .await?;
    transaction.commit().await?;
    Ok(())
}

/// The positions `rm_events` shows as rolled back, each with the rollback that did it.
async fn rolled_back(pool: &PgPool) -> anyhow::Result<Vec<(i64, Option<Uuid>)>> {
    Ok(sqlx::query_as(
        "select position, rolled_back_by from rm_events where rolled_back order by position",
    )
    .fetch_all(pool)
    .await?)
}

#[tokio::test]
async fn a_rollback_marks_the_events_of_the_batch_it_undid_on_the_assets_it_restored_and_nothing_else(
) -> anyhow::Result<()> {
    // Arrange: an import creates three motors, an execution changes all three, a later
    // single change changes the first again.
    let (_database, pool) = read_models().await?;
    let motors = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    let mut history = History::new();
    let mut before = vec![batch_event(&mut history, EventType::BatchStarted)];
    before.extend(motors.map(|motor| change(&mut history, EventType::AssetCreated, motor)));
    history.correlation_id = Uuid::now_v7();
    let execution = history.correlation_id;
    let mut undone = vec![
        batch_event(&mut history, EventType::BatchStarted),
        batch_event(&mut history, EventType::RuleExecuted),
    ];
    let changes = motors.map(|motor| change(&mut history, EventType::AssetUpdated, motor));
    undone.extend(changes[..2].iter().cloned());
    undone.push(batch_event(&mut history, EventType::BatchCompleted));
    before.extend(undone.iter().cloned());
    before.push(changes[2].clone());
    history.correlation_id = Uuid::now_v7();
    before.push(change(&mut history, EventType::AssetUpdated, motors[0]));
    before.sort_by_key(|event| event.position);
    project(&pool, &before).await?;

    // Act: the execution is rolled back on the first two motors only, in a slice of
    // its own.
    history.correlation_id = Uuid::now_v7();
    let rollback = history.correlation_id;
    let target = json!({"target_correlation_id": execution});
    let rollback_events = [
        history.event(
            EventType::BatchStarted,
            AggregateType::Batch,
            rollback,
            target.clone(),
        ),
        rollback_of(&mut history, motors[0], execution),
        rollback_of(&mut history, motors[1], execution),
        history.event(
            EventType::BatchRolledBack,
            AggregateType::Batch,
            rollback,
            target,
        ),
        batch_event(&mut history, EventType::BatchCompleted),
    ];
    project(&pool, &rollback_events).await?;

    // Assert: the execution's own events and its changes of the first two motors; not
    // its change of the third, nor the import's, the later batch's or the rollback's.
    let mut expected: Vec<(i64, Option<Uuid>)> = undone
        .iter()
        .map(|event| (event.position, Some(rollback)))
        .collect();
    assert_eq!(rolled_back(&pool).await?, expected);

    // Act: a second rollback of the execution (the third motor, once the later change
    // is out of the way).
    history.correlation_id = Uuid::now_v7();
    let second = history.correlation_id;
    let target = json!({"target_correlation_id": execution});
    let second_events = [
        rollback_of(&mut history, motors[2], execution),
        history.event(
            EventType::BatchRolledBack,
            AggregateType::Batch,
            second,
            target,
        ),
    ];
    project(&pool, &second_events).await?;

    // Assert: the execution's change of the third motor is the second's; its own
    // events stay marked by the first, as the command side's `event_rollbacks` keeps the
    // first mark (before: the second rollback took them over in the read model).
    expected.push((changes[2].position, Some(second)));
    expected.sort();
    assert_eq!(rolled_back(&pool).await?, expected);
    Ok(())
}

/// `rm_events` shaped so that the statistics make any one batch look small while the
/// rolled-back one is large, as in a database with many single changes and one big
/// execution: 2,000 batches of 10 changes over 1,000 aggregates (20 events each), then
/// batch `target` with a change of every aggregate and 9,000 events of its own.
async fn fill_with_one_large_batch(
    pool: &PgPool,
    aggregates: &[Uuid],
    target: Uuid,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into rm_events (position, event_id, event_type, aggregate_type, aggregate_id,
             correlation_id, actor, occurred_at, payload)
         select b * 10 + k, gen_random_uuid(), 'ASSET_UPDATED', 'asset',
             ($1::uuid[])[1 + (b * 10 + k) % 1000], md5('batch ' || b)::uuid, 'engineer',
             now(), '{}'
         from generate_series(1, 2000) b, generate_series(0, 9) k",
    )
    .bind(aggregates)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into rm_events (position, event_id, event_type, aggregate_type, aggregate_id,
             correlation_id, actor, occurred_at, payload)
         select 100000 + i, gen_random_uuid(),
             case when i < 1000 then 'ASSET_UPDATED' else 'RULE_EXECUTED' end,
             case when i < 1000 then 'asset' else 'batch' end,
             case when i < 1000 then ($1::uuid[])[1 + i] else $2 end,
             $2, 'engineer', now(), '{}'
         from generate_series(0, 9999) i",
    )
    .bind(aggregates)
    .bind(target)
    .execute(pool)
    .await?;
    sqlx::query("analyze rm_events").execute(pool).await?;
    Ok(())
}

/// The indexes of `rm_events` that lead with `correlation_id`: reading one of them for a
/// batch reads every event of the batch.
async fn batch_indexes(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select i.indexrelid::regclass::text
         from pg_index i
         join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
         where i.indrelid = 'rm_events'::regclass and a.attname = 'correlation_id'",
    )
    .fetch_all(pool)
    .await?)
}

/// Every index a JSON plan reads.
fn indexes_read(plan: &Value, found: &mut Vec<String>) {
    match plan {
        Value::Object(node) => {
            if let Some(Value::String(index)) = node.get("Index Name") {
                found.push(index.clone());
            }
            node.values().for_each(|value| indexes_read(value, found));
        }
        Value::Array(values) => values.iter().for_each(|value| indexes_read(value, found)),
        _ => {}
    }
}

/// A `uuid[]` literal.
fn array(ids: impl IntoIterator<Item = Uuid>) -> String {
    let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
    format!("'{{{}}}'", ids.join(","))
}

#[tokio::test]
async fn marking_a_rollback_probes_each_aggregate_instead_of_reading_the_batch_it_undid_again(
) -> anyhow::Result<()> {
    // Arrange: one large batch among many small ones, and a slice of 50 of its
    // rollback's ROLLBACK events.
    let (_database, pool) = read_models().await?;
    let aggregates: Vec<Uuid> = (0..1000).map(|_| Uuid::now_v7()).collect();
    let (target, rollback) = (Uuid::now_v7(), Uuid::now_v7());
    fill_with_one_large_batch(&pool, &aggregates, target).await?;
    let restored = &aggregates[..50];
    let batch_indexes = batch_indexes(&pool).await?;
    assert!(!batch_indexes.is_empty(), "rm_events has no index by batch");

    // Act: plan the marking statement for the slice, as the projector's connections may
    // (custom plans for the first executions of a prepared statement, then possibly a
    // generic one).
    let mut connection = pool.acquire().await?;
    sqlx::query(&format!(
        "prepare mark(uuid[], uuid[], uuid[]) as {MARK_AGGREGATE_ROLLBACKS}"
    ))
    .execute(&mut *connection)
    .await?;
    let explain = format!(
        "explain (format json) execute mark({}, {}, {})",
        array(restored.iter().map(|_| target)),
        array(restored.iter().copied()),
        array(restored.iter().map(|_| rollback)),
    );
    for mode in ["force_custom_plan", "force_generic_plan"] {
        sqlx::query(&format!("set plan_cache_mode = {mode}"))
            .execute(&mut *connection)
            .await?;
        let plan: Value = sqlx::query_scalar(&explain)
            .fetch_one(&mut *connection)
            .await?;

        // Assert: no index by batch anywhere in the plan, so no ROLLBACK reads the
        // 10,000 events of the batch it undid.
        let mut read = Vec::new();
        indexes_read(&plan, &mut read);
        assert!(
            read.iter().all(|index| !batch_indexes.contains(index)),
            "{mode}: the plan reads {read:?}, among them an index by batch ({batch_indexes:?}):\n{plan:#}"
        );
    }
    sqlx::query("deallocate mark")
        .execute(&mut *connection)
        .await?;
    drop(connection);

    // Act and assert: projected, the slice marks exactly the target batch's change of
    // each restored aggregate.
    let mut history = History::new();
    history.next_position = 200_000;
    history.correlation_id = rollback;
    let slice: Vec<EventEnvelope> = restored
        .iter()
        .map(|aggregate| rollback_of(&mut history, *aggregate, target))
        .collect();
    project(&pool, &slice).await?;
    let marked: Vec<(Uuid, Uuid, Option<Uuid>)> = sqlx::query_as(
        "select aggregate_id, correlation_id, rolled_back_by from rm_events
         where rolled_back order by position",
    )
    .fetch_all(&pool)
    .await?;
    let expected: Vec<(Uuid, Uuid, Option<Uuid>)> = restored
        .iter()
        .map(|aggregate| (*aggregate, target, Some(rollback)))
        .collect();
    assert_eq!(marked, expected);
    Ok(())
}
