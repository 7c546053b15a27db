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

/// A command service (relay off) on a database of its own, with `pumps` pumps without
/// a driver, running a rule that flags each in the background.
struct FlagRun {
    _database: TestDatabase,
    _nats: TestNats,
    command: apps::Running,
    pool: PgPool,
    /// The rule's id.
    rule: serde_json::Value,
    batch: uuid::Uuid,
}

async fn flag_pumps_in_the_background(pumps: usize) -> anyhow::Result<FlagRun> {
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, false).await?;
    let http = synapse_tests::client::http_client();
    let pool = PgPool::connect(&database.url).await?;
    synapse_tests::client::post_csv(
        &http,
        &command.url("/assets/import"),
        synapse_tests::plant::as_csv(&synapse_tests::plant::pumps(pumps)),
    )
    .await?
    .expect_status(201);
    let rule = send(
        &http,
        Method::POST,
        &command.url("/rules"),
        Some(&synapse_tests::plant::pump_flag_rule()),
    )
    .await?
    .expect_status(201)
    .body["id"]
        .clone();
    let started = send(
        &http,
        Method::POST,
        &command.url("/rules/execute"),
        Some(&json!({"rule_ids": [rule]})),
    )
    .await?
    .expect_status(202);
    let batch = serde_json::from_value(started.body["correlation_id"].clone())?;
    Ok(FlagRun {
        _database: database,
        _nats: nats,
        command,
        pool,
        rule,
        batch,
    })
}

/// An executor that stalled past its heartbeat (a paused process, a long GC-like stop)
/// while another replica's sweep failed its batch, and possibly rolled it back, must
/// write nothing more in the batch's name when it wakes up.
#[tokio::test]
async fn an_executor_whose_batch_another_replica_failed_writes_nothing_more() -> anyhow::Result<()>
{
    // Arrange: 10,000 pumps and a rule that flags each, run in the background (enough
    // chunks for a sweep to land between two of them on a busy machine: with 3,000, the
    // batch ended first in one full-suite run).
    let FlagRun {
        _database,
        _nats,
        command,
        pool,
        rule,
        batch,
    } = flag_pumps_in_the_background(10_000).await?;

    // Act: another replica's sweep judges it abandoned while it runs (a sweep skips a
    // batch whose row a chunk holds, so try until one lands between chunks).
    loop {
        let (landed,): (i64,) = sqlx::query_as(
            "select count(*) from workflow_events where correlation_id = $1 and event_type = 'BATCH_PROGRESS'",
        )
        .bind(batch)
        .fetch_one(&pool)
        .await?;
        if landed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut swept = false;
    while !swept && !command_service::store::batches::finished(&pool, batch).await? {
        swept = command_service::recovery::fail_abandoned(&pool, Duration::ZERO)
            .await?
            .contains(&batch);
    }
    assert!(swept, "the execution finished before a sweep landed");
    // Wait until the executor has stopped: no transaction of the service's open, and
    // the log still, for half a second.
    let quiet = async {
        let mut still = 0;
        let mut last = -1;
        while still < 10 {
            let (head, busy): (i64, i64) = sqlx::query_as(
                "select (select coalesce(max(position), 0) from workflow_events),
                        (select count(*) from pg_stat_activity
                         where datname = current_database() and pid <> pg_backend_pid()
                           and state in ('active', 'idle in transaction'))",
            )
            .fetch_one(&pool)
            .await?;
            still = if head == last && busy == 0 {
                still + 1
            } else {
                0
            };
            last = head;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), quiet).await??;

    // Assert: one closing event, the sweep's, the last of the batch; the batch's own
    // versions without a gap; its status failed (before: the executor went on, its
    // next chunk refused by the batch's version, then closed the batch again with a
    // second BATCH_FAILED at a version past a gap, and set the status back).
    let events: Vec<(String, i64, i64)> = sqlx::query_as(
        "select event_type, aggregate_version, position from workflow_events
         where correlation_id = $1 and aggregate_id = $1 order by position",
    )
    .bind(batch)
    .fetch_all(&pool)
    .await?;
    let closings: Vec<&(String, i64, i64)> = events
        .iter()
        .filter(|(event_type, ..)| event_type == "BATCH_FAILED" || event_type == "BATCH_COMPLETED")
        .collect();
    assert_eq!(closings.len(), 1, "{closings:?}");
    assert_eq!(closings[0].0, "BATCH_FAILED");
    let (last_position,): (i64,) =
        sqlx::query_as("select max(position) from workflow_events where correlation_id = $1")
            .bind(batch)
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        closings[0].2, last_position,
        "nothing of the batch after its failure"
    );
    let versions: Vec<i64> = events.iter().map(|(_, version, _)| *version).collect();
    assert_eq!(versions, (1..=events.len() as i64).collect::<Vec<_>>());
    let (status,): (String,) =
        sqlx::query_as("select status from batches where correlation_id = $1")
            .bind(batch)
            .fetch_one(&pool)
            .await?;
    assert_eq!(status, "failed");
    // The sweep's BATCH_FAILED reports what the chunks that landed did, as the log has it
    // (before: no rules and no totals, so a retried `wait` answered nulls).
    let (failure,): (serde_json::Value,) = sqlx::query_as(
        "select payload from workflow_events where correlation_id = $1 and event_type = 'BATCH_FAILED'",
    )
    .bind(batch)
    .fetch_one(&pool)
    .await?;
    let (executed, findings): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where event_type = 'RULE_EXECUTED'),
                count(*) filter (where event_type = 'FINDING_RAISED')
         from workflow_events where correlation_id = $1",
    )
    .bind(batch)
    .fetch_one(&pool)
    .await?;
    assert!(executed > 0, "a chunk landed before the sweep");
    assert_eq!(failure["rules"][0]["rule_id"], rule);
    assert_eq!(failure["rules"][0]["counts"]["executed"], executed);
    assert_eq!(failure["totals"]["executed"], executed);
    assert_eq!(failure["totals"]["findings"], findings);
    command.stop().await
}

/// A connection lost mid-chunk (an operator's `pg_terminate_backend`, a failover) costs
/// that chunk an attempt, not the batch.
#[tokio::test]
async fn an_execution_carries_on_when_its_connection_is_terminated_between_statements(
) -> anyhow::Result<()> {
    // Arrange: 5,000 pumps without a driver and a rule that flags each.
    let run = flag_pumps_in_the_background(5_000).await?;
    let (pool, batch) = (&run.pool, run.batch);

    // Act: terminate the service's connections that wait inside a transaction (a
    // chunk being planned or written), three times.
    let mut terminated = 0;
    while terminated < 3 && !command_service::store::batches::finished(pool, batch).await? {
        let (killed,): (i64,) = sqlx::query_as(
            "select count(*) filter (where pg_terminate_backend(pid)) from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid()
               and state = 'idle in transaction'",
        )
        .fetch_one(pool)
        .await?;
        terminated += killed;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while !command_service::store::batches::finished(pool, batch).await? {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Assert: the batch completed, every pump flagged once (before: failed at the
    // first terminated connection).
    assert!(terminated > 0, "no chunk was caught inside its transaction");
    let (status, error): (String, Option<String>) = sqlx::query_as(
        "select b.status, (select e.payload->>'error' from workflow_events e
                           where e.correlation_id = b.correlation_id and e.event_type = 'BATCH_FAILED')
         from batches b where b.correlation_id = $1",
    )
    .bind(batch)
    .fetch_one(pool)
    .await?;
    assert_eq!(status, "completed", "{error:?}");
    let (raised, findings): (i64, i64) = sqlx::query_as(
        "select (select count(*) from workflow_events
                 where correlation_id = $1 and event_type = 'FINDING_RAISED'),
                (select count(*) from findings)",
    )
    .bind(batch)
    .fetch_one(pool)
    .await?;
    assert_eq!((raised, findings), (5_000, 5_000));
    run.command.stop().await
}
