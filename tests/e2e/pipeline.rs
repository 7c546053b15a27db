//! The whole pipeline: command → event log → JetStream → projection → query and live feed.

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::Duration;
use synapse_tests::apps::{self, System};
use synapse_tests::client::send;
use synapse_tests::ws;

#[tokio::test]
async fn create_update_update_delete_shows_four_diffs_in_history_and_four_live_messages_in_order(
) -> anyhow::Result<()> {
    // Arrange: a live subscriber before the first command.
    let system = System::start().await?;
    let mut socket = ws::subscribe(
        system.query.port,
        json!({"type": "subscribe", "filters": {"discipline": "ELECTRICAL"}}),
    )
    .await?;
    let http = &system.http;

    // Act
    let created = send(http, Method::POST, &system.command.url("/assets"), Some(&json!({
        "tag": "M-201", "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL", "properties": {"rated_power_kw": 30}
    }))).await?.expect_status(201);
    let id = created.body["asset"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let url = system.command.url(&format!("/assets/{id}"));
    send(
        http,
        Method::PATCH,
        &url,
        Some(&json!({"expected_version": 1, "properties": {"rated_power_kw": 45}})),
    )
    .await?
    .expect_status(200);
    send(http, Method::PATCH, &url, Some(&json!({"expected_version": 2, "name": "Cooling fan motor", "properties": {"rated_power_kw": null}}))).await?.expect_status(200);
    send(
        http,
        Method::DELETE,
        &format!("{url}?expected_version=3"),
        None,
    )
    .await?
    .expect_status(200);

    // Assert: the live feed
    let live = ws::collect(&mut socket, 4, Duration::from_secs(20)).await?;
    let kinds: Vec<_> = live
        .iter()
        .map(|m| m["event"]["event_type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "ASSET_CREATED",
            "ASSET_UPDATED",
            "ASSET_UPDATED",
            "ASSET_DELETED"
        ]
    );
    assert!(live
        .iter()
        .all(|m| m["type"] == "ACTION" && m["event"]["aggregate_id"] == id.as_str()));
    let positions: Vec<i64> = live.iter().filter_map(|m| m["position"].as_i64()).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{positions:?}"
    );
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            ws::next_json(&mut socket, Duration::from_millis(300))
        )
        .await
        .map_or(true, |m| m.is_err()),
        "no fifth message"
    );

    // Assert: the history
    system.wait_for_projection().await?;
    let history = send(
        http,
        Method::GET,
        &system.query.url(&format!("/events/assets/{id}/history")),
        None,
    )
    .await?
    .expect_status(200);
    let entries: Vec<&Value> = history.body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["aggregate_type"] == "asset")
        .collect();
    let types: Vec<_> = entries
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        vec![
            "ASSET_CREATED",
            "ASSET_UPDATED",
            "ASSET_UPDATED",
            "ASSET_DELETED"
        ]
    );
    assert_eq!(entries[0]["before"], Value::Null);
    assert_eq!(entries[0]["after"]["properties"]["rated_power_kw"], 30);
    assert_eq!(
        entries[1]["diff"],
        json!([
            {"op": "replace", "path": "/properties/rated_power_kw", "value": 45},
            {"op": "replace", "path": "/version", "value": 2}
        ])
    );
    assert_eq!(
        entries[2]["diff"],
        json!([
            {"op": "replace", "path": "/name", "value": "Cooling fan motor"},
            {"op": "remove", "path": "/properties/rated_power_kw"},
            {"op": "replace", "path": "/version", "value": 3}
        ])
    );
    assert_eq!(entries[3]["after"], Value::Null);
    assert_eq!(entries[3]["before"]["name"], "Cooling fan motor");
    Ok(())
}

/// The read model of aggregates, as a fold of the log would give it.
async fn fold_of_log(pool: &PgPool) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut state = BTreeMap::new();
    for event in synapse_shared::event_log::read_after(pool, 0, 1_000_000).await? {
        if event.event_type.is_state_change() {
            state.insert(
                event.aggregate_id.to_string(),
                event.payload["after"].clone(),
            );
        }
    }
    Ok(state)
}

async fn read_model(pool: &PgPool) -> anyhow::Result<BTreeMap<String, Value>> {
    let rows: Vec<(uuid::Uuid, Option<Value>)> =
        sqlx::query_as("select aggregate_id, state from rm_aggregates")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, state)| (id.to_string(), state.unwrap_or(Value::Null)))
        .collect())
}

#[tokio::test]
async fn a_projector_killed_mid_stream_resumes_and_its_read_model_equals_a_fold_of_the_log(
) -> anyhow::Result<()> {
    // Arrange
    let system = System::start().await?;
    let pool = PgPool::connect(&system.database.url).await?;
    let http = &system.http;
    let mut ids = Vec::new();
    for index in 0..20 {
        let reply = send(http, Method::POST, &system.command.url("/assets"), Some(&json!({
            "tag": format!("FT-{index:04}"), "asset_type": "FLOW_TRANSMITTER", "discipline": "INSTRUMENTATION",
            "properties": {"range_max": index}
        }))).await?.expect_status(201);
        ids.push(
            reply.body["asset"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }

    // Act: kill the projector while events keep coming, then start a new one.
    let System {
        projection,
        database,
        nats,
        command,
        query,
        http: _,
    } = system;
    projection.kill();
    for id in &ids {
        send(
            http,
            Method::PATCH,
            &command.url(&format!("/assets/{id}")),
            Some(&json!({"properties": {"range_max": 100}})),
        )
        .await?
        .expect_status(200);
    }
    let restarted = apps::projection_service(&database, &nats.args).await?;
    apps::wait_for_projection(&database.url).await?;

    // Assert: each event once, state equals a fold of the log.
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct event_id) from rm_events")
            .fetch_one(&pool)
            .await?;
    let (logged,): (i64,) = sqlx::query_as("select count(*) from workflow_events")
        .fetch_one(&pool)
        .await?;
    assert_eq!((rows, distinct), (logged, logged));
    assert_eq!(read_model(&pool).await?, fold_of_log(&pool).await?);
    restarted.stop().await?;
    command.stop().await?;
    query.stop().await
}
