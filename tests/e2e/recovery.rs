//! A batch whose executor died is marked failed and can be rolled back.

use reqwest::Method;
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;
use synapse_shared::EventType;
use synapse_tests::apps;
use synapse_tests::client::send;
use synapse_tests::{TestDatabase, TestNats};

#[tokio::test]
async fn a_batch_whose_executor_vanished_is_marked_failed_and_can_be_rolled_back(
) -> anyhow::Result<()> {
    // Arrange: a batch that started, then lost its executor (what a crash right after
    // the 202 leaves behind: the batch row and BATCH_STARTED, committed together).
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, false).await?;
    let http = synapse_tests::client::http_client();
    let pool = PgPool::connect(&database.url).await?;
    let mut batch = command_service::store::batches::Batch::new(
        command_service::store::batches::BatchKind::RuleExecution,
        "engineer",
    );
    let mut transaction = pool.begin().await?;
    command_service::store::batches::open(&mut transaction, &batch, None).await?;
    let started = batch.event(EventType::BatchStarted, json!({"kind": "rule_execution"}));
    command_service::store::append(&mut transaction, vec![started]).await?;
    transaction.commit().await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Act: a replica's sweep.
    let failed = command_service::recovery::fail_abandoned(&pool, Duration::from_secs(1)).await?;

    // Assert
    assert_eq!(failed, vec![batch.correlation_id]);
    let (status,): (String,) =
        sqlx::query_as("select status from batches where correlation_id = $1")
            .bind(batch.correlation_id)
            .fetch_one(&pool)
            .await?;
    assert_eq!(status, "failed");
    let events = synapse_shared::event_log::read_after(&pool, 0, 1000).await?;
    let last = events
        .iter()
        .rfind(|e| e.correlation_id == batch.correlation_id)
        .map(|e| e.event_type);
    assert_eq!(last, Some(EventType::BatchFailed));
    assert!(
        command_service::recovery::fail_abandoned(&pool, Duration::from_secs(1))
            .await?
            .is_empty(),
        "swept once"
    );
    let rollback = send(
        &http,
        Method::POST,
        &command.url("/rules/rollback"),
        Some(&json!({"correlation_id": batch.correlation_id})),
    )
    .await?;
    assert_eq!(rollback.status, 200, "{rollback:?}");
    assert_eq!(rollback.body["restored"], 0);
    let (status,): (String,) =
        sqlx::query_as("select status from batches where correlation_id = $1")
            .bind(batch.correlation_id)
            .fetch_one(&pool)
            .await?;
    assert_eq!(status, "rolled_back");
    command.stop().await
}
