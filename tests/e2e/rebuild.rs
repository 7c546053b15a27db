//! Rebuilding read models from the event log while the old ones keep serving.

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::BTreeMap;
use synapse_tests::apps::System;
use synapse_tests::client::send;
use synapse_tests::plant::{small_plant, vfd_rule};

async fn snapshot(
    pool: &PgPool,
) -> anyhow::Result<(Vec<Value>, BTreeMap<String, Value>, Vec<Value>, Vec<Value>)> {
    let events: Vec<(Value,)> =
        sqlx::query_as("select to_jsonb(e) from rm_events e order by position")
            .fetch_all(pool)
            .await?;
    let aggregates: Vec<(String, Value)> =
        sqlx::query_as("select aggregate_id::text, to_jsonb(a) from rm_aggregates a")
            .fetch_all(pool)
            .await?;
    let batches: Vec<(Value,)> =
        sqlx::query_as("select to_jsonb(b) from rm_batches b order by correlation_id")
            .fetch_all(pool)
            .await?;
    let disciplines: Vec<(Value,)> =
        sqlx::query_as("select to_jsonb(d) from rm_disciplines d order by discipline, event_type")
            .fetch_all(pool)
            .await?;
    Ok((
        events.into_iter().map(|(v,)| v).collect(),
        aggregates.into_iter().collect(),
        batches.into_iter().map(|(v,)| v).collect(),
        disciplines.into_iter().map(|(v,)| v).collect(),
    ))
}

#[tokio::test]
async fn a_rebuild_from_the_log_swaps_in_identical_read_models_while_the_service_runs(
) -> anyhow::Result<()> {
    // Arrange: a history with an execution and a rollback, fully projected.
    let system = System::start().await?;
    let http = &system.http;
    for asset in small_plant() {
        send(
            http,
            Method::POST,
            &system.command.url("/assets"),
            Some(&asset),
        )
        .await?
        .expect_status(201);
    }
    let rule = send(
        http,
        Method::POST,
        &system.command.url("/rules"),
        Some(&vfd_rule()),
    )
    .await?
    .expect_status(201);
    let run = send(
        http,
        Method::POST,
        &system.command.url("/rules/execute"),
        Some(&json!({"rule_ids": [rule.body["id"]], "wait": true})),
    )
    .await?
    .expect_status(200);
    send(
        http,
        Method::POST,
        &system.command.url("/rules/rollback"),
        Some(&json!({"correlation_id": run.body["correlation_id"]})),
    )
    .await?
    .expect_status(200);
    system.wait_for_projection().await?;
    let pool = PgPool::connect(&system.database.url).await?;
    let live = snapshot(&pool).await?;

    // Act
    for projector in projection_service::projectors::ALL {
        let rebuilt = projection_service::rebuild::rebuild(
            &system.database.url,
            &system.database.url,
            projector,
        )
        .await?;
        assert!(rebuilt.events > 0);
    }

    // Assert: the same rows; the current states equal an independent fold of the log.
    let rebuilt = snapshot(&pool).await?;
    assert_eq!(rebuilt.0, live.0, "rm_events");
    assert_eq!(rebuilt.1, live.1, "rm_aggregates");
    assert_eq!(rebuilt.2, live.2, "rm_batches");
    assert_eq!(rebuilt.3, live.3, "rm_disciplines");
    let mut folded = BTreeMap::new();
    for event in synapse_shared::event_log::read_after(&pool, 0, 1_000_000).await? {
        if event.event_type.is_state_change() {
            folded.insert(
                event.aggregate_id.to_string(),
                event.payload["after"].clone(),
            );
        }
    }
    // Every rebuilt event row carries the envelope's versions, as the log has them.
    let versions: Vec<(i64, Option<i64>, Option<i16>)> = sqlx::query_as(
        "select position, aggregate_version, schema_version from rm_events order by position",
    )
    .fetch_all(&pool)
    .await?;
    let logged: Vec<(i64, Option<i64>, Option<i16>)> =
        synapse_shared::event_log::read_after(&pool, 0, 1_000_000)
            .await?
            .iter()
            .map(|event| {
                (
                    event.position,
                    Some(event.aggregate_version),
                    Some(event.schema_version),
                )
            })
            .collect();
    assert_eq!(versions, logged);
    let states: BTreeMap<String, Value> = rebuilt
        .1
        .iter()
        .map(|(id, row)| (id.clone(), row["state"].clone()))
        .collect();
    assert_eq!(states, folded);
    // The service keeps projecting into the swapped-in tables.
    send(
        http,
        Method::POST,
        &system.command.url("/assets"),
        Some(&json!({"tag": "M-999", "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL"})),
    )
    .await?
    .expect_status(201);
    system.wait_for_projection().await?;
    let (found,): (i64,) =
        sqlx::query_as("select count(*) from rm_aggregates where state->>'tag' = 'M-999'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(found, 1);
    Ok(())
}
