//! What readers see of a rollback: flags on the original events, linked ROLLBACK
//! events, and a live ROLLED_BACK message.

use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use synapse_tests::apps::System;
use synapse_tests::client::send;
use synapse_tests::plant::{small_plant, vfd_rule};
use synapse_tests::ws;

#[tokio::test]
async fn history_and_timeline_show_rolled_back_events_and_the_feed_says_rolled_back(
) -> anyhow::Result<()> {
    // Arrange: a batch to roll back, and a live subscriber.
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
    let report = send(
        http,
        Method::POST,
        &system.command.url("/rules/execute"),
        Some(&json!({"rule_ids": [rule.body["id"]], "wait": true})),
    )
    .await?
    .expect_status(200);
    let batch = report.body["correlation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut socket = ws::subscribe(
        system.query.port,
        json!({"type": "subscribe", "filters": {}}),
    )
    .await?;

    // Act
    let rollback = send(
        http,
        Method::POST,
        &system.command.url("/rules/rollback"),
        Some(&json!({"correlation_id": batch})),
    )
    .await?
    .expect_status(200);
    let rollback_id = rollback.body["correlation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // Assert: the live feed announces it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut announced = None;
    while announced.is_none() && tokio::time::Instant::now() < deadline {
        let message = ws::next_json(&mut socket, Duration::from_secs(20)).await?;
        if message["type"] == "ROLLED_BACK" {
            announced = Some(message);
        }
    }
    let announced = announced.ok_or_else(|| anyhow::anyhow!("no ROLLED_BACK message"))?;
    assert_eq!(
        announced["event"]["payload"]["target_correlation_id"],
        batch.as_str()
    );
    // The timeline: every event of the batch is flagged, by the rollback.
    system.wait_for_projection().await?;
    let timeline = send(
        http,
        Method::GET,
        &system.query.url(&format!(
            "/events/timeline?correlation_id={batch}&limit=1000"
        )),
        None,
    )
    .await?
    .expect_status(200);
    let events = timeline.body["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e["rolled_back"] == true && e["rolled_back_by"] == rollback_id.as_str()),
        "{events:?}"
    );
    let hidden = send(
        http,
        Method::GET,
        &system.query.url(&format!(
            "/events/timeline?correlation_id={batch}&include_rolled_back=false"
        )),
        None,
    )
    .await?
    .expect_status(200);
    assert_eq!(hidden.body["events"].as_array().map(Vec::len), Some(0));
    // A motor's history: its update is rolled back, followed by the ROLLBACK linked to the batch.
    let motor = events
        .iter()
        .find(|e| e["event_type"] == "ASSET_UPDATED")
        .map(|e| e["aggregate_id"].clone())
        .unwrap_or(Value::Null);
    let history = send(
        http,
        Method::GET,
        &system.query.url(&format!(
            "/events/assets/{}/history",
            motor.as_str().unwrap_or("")
        )),
        None,
    )
    .await?
    .expect_status(200);
    let changes: Vec<(String, bool, Value)> = history.body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["aggregate_type"] == "asset")
        .map(|e| {
            (
                e["event_type"].as_str().unwrap_or("").to_owned(),
                e["rolled_back"] == true,
                e["payload"]["rolled_back_correlation_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("ASSET_CREATED".to_owned(), false, Value::Null),
            ("ASSET_UPDATED".to_owned(), true, Value::Null),
            ("ROLLBACK".to_owned(), false, json!(batch)),
        ]
    );
    Ok(())
}
