//! Rebuilding read models from the event log while the old ones keep serving.

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::BTreeMap;
use synapse_tests::apps::System;
use synapse_tests::client::send;
use synapse_tests::plant::{small_plant, vfd_rule};
use synapse_tests::read_models;

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
    let live = read_models::snapshot(&pool).await?;
    let indexes = || async {
        let names: Vec<(String, String)> = sqlx::query_as(
            "select tablename, indexname from pg_indexes
             where schemaname = 'public' and tablename like 'rm\\_%' order by 1, 2",
        )
        .fetch_all(&pool)
        .await?;
        anyhow::Ok(names)
    };
    let indexes_before = indexes().await?;

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

    // Assert: the same rows in every read model; the current states equal an
    // independent fold of the log.
    let rebuilt = read_models::snapshot(&pool).await?;
    assert_eq!(
        read_models::differences(&live, &rebuilt),
        BTreeMap::new(),
        "rows differing after the rebuild"
    );
    // ...and the same indexes by the same names (before: `rm_events_aggregate_idx`
    // came back as `rm_events_aggregate_id_position_idx`, and so on).
    assert!(indexes_before.len() > 5, "{indexes_before:?}");
    assert_eq!(indexes().await?, indexes_before);
    let log = synapse_shared::event_log::read_after(&pool, 0, 1_000_000).await?;
    let mut folded = BTreeMap::new();
    for event in &log {
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
    let logged: Vec<(i64, Option<i64>, Option<i16>)> = log
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
    let states: BTreeMap<String, Value> = rebuilt["rm_aggregates"]
        .iter()
        .map(|row| {
            let id = row["aggregate_id"].as_str().unwrap_or_default().to_owned();
            (id, row["state"].clone())
        })
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

#[tokio::test]
async fn a_rebuild_clears_what_an_interrupted_one_left_and_runs_alone() -> anyhow::Result<()> {
    // Arrange: the scratch schema of a rebuild killed halfway, with a table in it, and
    // another process's rebuild of the batches under way (its claim held here).
    let system = System::start().await?;
    let pool = PgPool::connect(&system.database.url).await?;
    let leftover = format!("rebuild_batches_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("create schema {leftover}"))
        .execute(&pool)
        .await?;
    sqlx::query(&format!(
        "create table {leftover}.rm_batches (like public.rm_batches including all)"
    ))
    .execute(&pool)
    .await?;
    let mut other = pool.acquire().await?;
    sqlx::query("select pg_advisory_lock(hashtext('synapse rebuild batches'))")
        .execute(&mut *other)
        .await?;
    let url = &system.database.url;

    // Act
    let refused = projection_service::rebuild::rebuild(url, url, "batches").await;
    sqlx::query("select pg_advisory_unlock_all()")
        .execute(&mut *other)
        .await?;
    drop(other);
    let rebuilt = projection_service::rebuild::rebuild(url, url, "batches").await;

    // Assert: refused while the other ran, leaving its schema alone; then done, and no
    // scratch schema left (before: the interrupted one's stayed for good).
    let refusal = refused.err().map(|error| format!("{error:#}"));
    assert_eq!(
        refusal.as_deref(),
        Some("another rebuild of `batches` is running on this read database")
    );
    assert!(rebuilt.is_ok(), "{rebuilt:?}");
    let (scratch,): (i64,) =
        sqlx::query_as("select count(*) from pg_namespace where nspname like 'rebuild\\_%'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(scratch, 0);
    Ok(())
}
