//! Batches prepared ahead (`apply::prepare`, then `apply::finish` once the batch before
//! committed) give exactly the read models that one batch after another gives, also
//! when a second replica applies the same batch at the same moment.

use projection_service::apply::{self, apply_batch, Delivered};
use projection_service::checkpoint::Checkpoint;
use projection_service::projectors::{AnyProjector, AssetHistoryProjector};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Duration;
use synapse_shared::EventEnvelope;
use synapse_tests::apps::System;
use synapse_tests::client::send;
use synapse_tests::plant::{small_plant, vfd_rule};
use synapse_tests::read_models::{differences, snapshot};
use synapse_tests::TestDatabase;

/// Events per batch: small, so that the log makes many batches.
const SLICE: usize = 5;

async fn post(system: &System, path: &str, body: Value) -> anyhow::Result<Value> {
    let reply = send(
        &system.http,
        reqwest::Method::POST,
        &system.command.url(path),
        Some(&body),
    )
    .await?;
    anyhow::ensure!(
        reply.status < 300,
        "{path}: {} {}",
        reply.status,
        reply.body
    );
    Ok(reply.body)
}

/// A real log: a plant, a rule run over it, and that run rolled back.
async fn real_log() -> anyhow::Result<Vec<EventEnvelope>> {
    let system = System::start().await?;
    for asset in small_plant() {
        post(&system, "/assets", asset).await?;
    }
    let rule = post(&system, "/rules", vfd_rule()).await?;
    let run = post(
        &system,
        "/rules/execute",
        json!({"rule_ids": [rule["id"]], "wait": true}),
    )
    .await?;
    post(
        &system,
        "/rules/rollback",
        json!({"correlation_id": run["correlation_id"]}),
    )
    .await?;
    let pool = PgPool::connect(&system.database.url).await?;
    Ok(synapse_shared::event_log::read_after(&pool, 0, 100_000).await?)
}

fn slices(log: &[EventEnvelope]) -> Vec<Vec<Delivered>> {
    log.chunks(SLICE)
        .map(|chunk| {
            chunk
                .iter()
                .map(|event| Delivered {
                    stream_sequence: u64::try_from(event.position).unwrap_or_default(),
                    envelope: Some(event.clone()),
                })
                .collect()
        })
        .collect()
}

async fn read_database() -> anyhow::Result<(TestDatabase, PgPool)> {
    let database = TestDatabase::create().await?;
    let pool = PgPool::connect(&database.url).await?;
    synapse_shared::db::migrate_read(&pool).await?;
    Ok((database, pool))
}

#[tokio::test]
async fn batches_prepared_ahead_project_what_batches_one_after_another_project(
) -> anyhow::Result<()> {
    // Arrange
    let log = real_log().await?;
    let batches = slices(&log);
    assert!(batches.len() > 10, "{} batches", batches.len());
    let (_one_by_one_db, one_by_one) = read_database().await?;
    let (_ahead_db, ahead) = read_database().await?;

    // Act: one after another; and each batch prepared while the one before is pending.
    for batch in &batches {
        for projector in AnyProjector::all() {
            apply_batch(&one_by_one, &projector, batch).await?;
        }
    }
    for projector in AnyProjector::all() {
        let mut expected = Checkpoint::default();
        let mut pending = None;
        for batch in &batches {
            let prepared = apply::prepare(&ahead, &projector, expected, batch).await?;
            expected = prepared.expected_after(batch);
            if let Some((before, prepared)) = pending.replace((batch, prepared)) {
                apply::finish(&ahead, &projector, prepared, before).await?;
            }
        }
        if let Some((last, prepared)) = pending {
            apply::finish(&ahead, &projector, prepared, last).await?;
        }
    }

    // Assert
    let expected = snapshot(&one_by_one).await?;
    assert_eq!(expected["rm_events"].len(), log.len());
    assert!(!expected["rm_aggregates"].is_empty());
    let found = snapshot(&ahead).await?;
    assert_eq!(differences(&expected, &found), Default::default());
    Ok(())
}

/// How many backends of the database behind `pool` wait for a lock.
async fn waiting_for_a_lock(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from pg_stat_activity
         where datname = current_database() and wait_event_type = 'Lock'",
    )
    .fetch_one(pool)
    .await?)
}

#[tokio::test]
async fn a_prepared_batch_gives_way_to_a_replica_that_applies_the_same_batch() -> anyhow::Result<()>
{
    // Arrange: the first batches applied; the next one prepared by this replica.
    let log = real_log().await?;
    let batches = slices(&log);
    let (_database, pool) = read_database().await?;
    let (done, rest) = batches.split_at(batches.len() / 2);
    for batch in done {
        apply_batch(&pool, &AssetHistoryProjector, batch).await?;
    }
    let expected: Checkpoint = sqlx::query_as(
        "select position, stream_sequence from projector_checkpoints where projector = $1",
    )
    .bind(projection_service::projectors::asset_history::NAME)
    .fetch_one(&pool)
    .await?;
    let batch = rest[0].clone();
    let prepared = apply::prepare(&pool, &AssetHistoryProjector, expected, &batch).await?;

    // Act: a second replica applies the same batch: it takes the checkpoint lock, then
    // waits for the rows prepared here. Then this replica finishes its batch.
    let replica = tokio::spawn({
        let (pool, batch) = (pool.clone(), batch.clone());
        async move { apply_batch(&pool, &AssetHistoryProjector, &batch).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while waiting_for_a_lock(&pool).await? == 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the replica never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let finished = tokio::time::timeout(
        Duration::from_secs(5),
        apply::finish(&pool, &AssetHistoryProjector, prepared, &batch),
    )
    .await??;
    let replicated = tokio::time::timeout(Duration::from_secs(5), replica).await???;

    // Assert: the replica applied the batch, this one rolled back and skipped it, and
    // the read model is that of one replica applying every batch once.
    assert_eq!(replicated.applied, batch.len());
    assert_eq!((finished.applied, finished.skipped), (0, batch.len()));
    assert_eq!(finished.checkpoint, replicated.checkpoint);
    for batch in &rest[1..] {
        apply_batch(&pool, &AssetHistoryProjector, batch).await?;
    }
    let (_alone_db, alone) = read_database().await?;
    for batch in &batches {
        apply_batch(&alone, &AssetHistoryProjector, batch).await?;
    }
    let expected = snapshot(&alone).await?;
    assert_eq!(expected["rm_events"].len(), log.len());
    assert_eq!(
        differences(&expected, &snapshot(&pool).await?),
        Default::default()
    );
    Ok(())
}

#[tokio::test]
async fn a_replay_over_rows_left_behind_by_a_checkpoint_reset_changes_nothing() -> anyhow::Result<()>
{
    // Arrange: the whole log projected, then the checkpoint reset while `rm_events`
    // keeps its rows.
    let log = real_log().await?;
    let batches = slices(&log);
    let (_database, pool) = read_database().await?;
    for batch in &batches {
        apply_batch(&pool, &AssetHistoryProjector, batch).await?;
    }
    let projected = snapshot(&pool).await?;
    sqlx::query("update projector_checkpoints set position = 0, stream_sequence = 0")
        .execute(&pool)
        .await?;

    // Act: the same log again, both ways a batch is applied.
    for (index, batch) in batches.iter().enumerate() {
        if index % 2 == 0 {
            apply_batch(&pool, &AssetHistoryProjector, batch).await?;
        } else {
            let expected: Checkpoint = sqlx::query_as(
                "select position, stream_sequence from projector_checkpoints where projector = $1",
            )
            .bind(projection_service::projectors::asset_history::NAME)
            .fetch_one(&pool)
            .await?;
            let prepared = apply::prepare(&pool, &AssetHistoryProjector, expected, batch).await?;
            apply::finish(&pool, &AssetHistoryProjector, prepared, batch).await?;
        }
    }

    // Assert: every row is as it was, none twice.
    let replayed = snapshot(&pool).await?;
    assert_eq!(replayed["rm_events"].len(), log.len());
    assert_eq!(differences(&projected, &replayed), Default::default());
    Ok(())
}
