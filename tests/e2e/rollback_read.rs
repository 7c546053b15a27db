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
    let page = timeline(&system, &format!("correlation_id={batch}&limit=1000")).await?;
    let events = page["events"].as_array().cloned().unwrap_or_default();
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e["rolled_back"] == true && e["rolled_back_by"] == rollback_id.as_str()),
        "{events:?}"
    );
    let hidden = timeline(
        &system,
        &format!("correlation_id={batch}&include_rolled_back=false"),
    )
    .await?;
    assert_eq!(hidden["events"].as_array().map(Vec::len), Some(0));
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

#[tokio::test]
async fn a_rollback_of_a_rollback_shows_the_change_it_brings_back_as_live_again(
) -> anyhow::Result<()> {
    // Arrange: a change D to an asset, rolled back by R1.
    let system = System::start().await?;
    let http = &system.http;
    let created = send(
        http,
        Method::POST,
        &system.command.url("/assets"),
        Some(
            &json!({"tag": "P-1", "asset_type": "PUMP", "discipline": "MECHANICAL",
                     "properties": {"p": 100}}),
        ),
    )
    .await?
    .expect_status(201);
    let asset = created.body["asset"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let change = send(
        http,
        Method::PATCH,
        &system.command.url(&format!("/assets/{asset}")),
        Some(&json!({"properties": {"z": 1}})),
    )
    .await?
    .expect_status(200);
    let url = system.command.url("/rules/rollback");
    let rollback = |batch: Value| {
        let url = url.clone();
        async move {
            send(
                http,
                Method::POST,
                &url,
                Some(&json!({"correlation_id": batch})),
            )
            .await
        }
    };
    let first = rollback(change.body["correlation_id"].clone())
        .await?
        .expect_status(200);

    // Act: R2 rolls R1 back, which brings D's change back.
    let second = rollback(first.body["correlation_id"].clone())
        .await?
        .expect_status(200);
    system.wait_for_projection().await?;

    // Assert: the read model flags exactly what the command side's log does (before:
    // D's change stayed flagged as rolled back by R1), and a read without rolled-back
    // events shows D's change.
    let pool = sqlx::PgPool::connect(&system.database.url).await?;
    assert_eq!(
        flags_differing(&pool).await?,
        vec![],
        "rm_events flags that differ from event_rollbacks"
    );
    let batch = change.body["correlation_id"].as_str().unwrap_or_default();
    let live = timeline(
        &system,
        &format!("correlation_id={batch}&include_rolled_back=false"),
    )
    .await?;
    let kinds: Vec<&str> = live["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["aggregate_id"] == asset.as_str())
        .filter_map(|event| event["event_type"].as_str())
        .collect();
    assert_eq!(kinds, vec!["ASSET_UPDATED"], "{live}");
    let first_id = first.body["correlation_id"].as_str().unwrap_or_default();
    let undone = timeline(&system, &format!("correlation_id={first_id}")).await?;
    let rollback_event = undone["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|event| event["event_type"] == "ROLLBACK")
        .cloned()
        .unwrap_or_default();
    assert_eq!(rollback_event["rolled_back"], true, "{rollback_event}");
    assert_eq!(
        rollback_event["rolled_back_by"],
        second.body["correlation_id"]
    );

    // And R3 rolls R2 back: D's change is undone again, marked by R1 as it was after
    // R1 (before: in no rollback's marks, on the command side as in the read model).
    rollback(second.body["correlation_id"].clone())
        .await?
        .expect_status(200);
    system.wait_for_projection().await?;
    assert_eq!(
        flags_differing(&pool).await?,
        vec![],
        "rm_events flags that differ from event_rollbacks"
    );
    let (update_marked_by,): (Option<uuid::Uuid>,) = sqlx::query_as(
        "select r.rolled_back_by from workflow_events e
         left join event_rollbacks r on r.event_id = e.event_id
         where e.correlation_id = $1 and e.event_type = 'ASSET_UPDATED'",
    )
    .bind(uuid::Uuid::parse_str(batch)?)
    .fetch_one(&pool)
    .await?;
    assert_eq!(
        update_marked_by.map(|id| id.to_string()).as_deref(),
        Some(first_id)
    );
    let undone_again = timeline(
        &system,
        &format!("correlation_id={batch}&include_rolled_back=false"),
    )
    .await?;
    let shown = undone_again["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["aggregate_id"] == asset.as_str())
        .count();
    assert_eq!(shown, 0, "{undone_again}");
    Ok(())
}

/// Events whose `rm_events` flags differ from the command side's `event_rollbacks`:
/// (position, marked on the command side, by which rollback).
async fn flags_differing(
    pool: &sqlx::PgPool,
) -> anyhow::Result<Vec<(i64, bool, Option<uuid::Uuid>)>> {
    Ok(sqlx::query_as(
        "select e.position, r.event_id is not null, r.rolled_back_by
         from workflow_events e
         left join event_rollbacks r on r.event_id = e.event_id
         join rm_events m on m.position = e.position
         where m.rolled_back is distinct from (r.event_id is not null)
            or m.rolled_back_by is distinct from r.rolled_back_by",
    )
    .fetch_all(pool)
    .await?)
}

/// A page of the query service's timeline, for `query` (without the `?`).
async fn timeline(system: &System, query: &str) -> anyhow::Result<Value> {
    let path = format!("/events/timeline?{query}");
    let page = send(&system.http, Method::GET, &system.query.url(&path), None).await?;
    Ok(page.expect_status(200).body)
}

#[tokio::test]
async fn a_finding_event_is_rolled_back_exactly_when_a_rollback_undid_its_finding(
) -> anyhow::Result<()> {
    // Arrange: a run B sets a property on two pumps and flags them; P-1 is changed
    // since. A partial rollback RP skips P-1 and undoes P-2; a rollback RR of RP redoes
    // P-2 (helpers, areas A and E: RP marked the raise of P-1's finding, still open, and
    // after RR both raises stayed marked while both findings were open).
    let system = System::start().await?;
    let http = &system.http;
    let service = &system.command;
    let command = |method: Method, path: String, body: Value| async move {
        send(http, method, &service.url(&path), Some(&body)).await
    };
    let mut pumps = Vec::new();
    for tag in ["P-1", "P-2"] {
        let created = command(
            Method::POST,
            "/assets".into(),
            json!({"tag": tag, "asset_type": "PUMP", "discipline": "MECHANICAL"}),
        )
        .await?
        .expect_status(201);
        pumps.push(
            created.body["asset"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let rule = command(
        Method::POST,
        "/rules".into(),
        json!({"name": "Pumps are reviewed", "discipline": "MECHANICAL",
               "when": "asset.asset_type == 'PUMP'",
               "then": [{"type": "set_property", "name": "review", "value": "'due'"},
                        {"type": "flag", "severity": "warning", "message": "review {asset.tag}"}]}),
    )
    .await?
    .expect_status(201);
    let run = command(
        Method::POST,
        "/rules/execute".into(),
        json!({"rule_ids": [rule.body["id"]], "wait": true}),
    )
    .await?
    .expect_status(200);
    let batch = run.body["correlation_id"].clone();
    command(
        Method::PATCH,
        format!("/assets/{}", pumps[0]),
        json!({"properties": {"review": "done"}}),
    )
    .await?
    .expect_status(200);

    // Act
    let partial = command(
        Method::POST,
        "/rules/rollback".into(),
        json!({"correlation_id": batch, "mode": "partial"}),
    )
    .await?
    .expect_status(200);
    let pool = sqlx::PgPool::connect(&system.database.url).await?;
    let raises_marked = || async {
        let marked: Vec<(String, Option<uuid::Uuid>)> = sqlx::query_as(
            "select e.payload ->> 'message', r.rolled_back_by from workflow_events e
             left join event_rollbacks r on r.event_id = e.event_id
             where e.correlation_id = $1::text::uuid and e.event_type = 'FINDING_RAISED'
             order by 1",
        )
        .bind(batch.as_str())
        .fetch_all(&pool)
        .await?;
        anyhow::Ok(marked)
    };
    let after_partial = raises_marked().await?;
    let redo = command(
        Method::POST,
        "/rules/rollback".into(),
        json!({"correlation_id": partial.body["correlation_id"]}),
    )
    .await?
    .expect_status(200);
    let after_redo = raises_marked().await?;
    system.wait_for_projection().await?;

    // Assert: P-1's raise (its finding open throughout) is never marked; P-2's is
    // marked by RP, then live again after RR, which marks RP's resolution instead.
    let rp = partial.body["correlation_id"]
        .as_str()
        .and_then(|id| id.parse::<uuid::Uuid>().ok());
    assert_eq!(
        after_partial,
        [
            ("review P-1".to_owned(), None),
            ("review P-2".to_owned(), rp)
        ]
    );
    assert_eq!(
        after_redo,
        [
            ("review P-1".to_owned(), None),
            ("review P-2".to_owned(), None)
        ]
    );
    let (resolution_marked_by,): (Option<uuid::Uuid>,) = sqlx::query_as(
        "select r.rolled_back_by from workflow_events e
         left join event_rollbacks r on r.event_id = e.event_id
         where e.correlation_id = $1::text::uuid and e.event_type = 'FINDING_RESOLVED'",
    )
    .bind(partial.body["correlation_id"].as_str())
    .fetch_one(&pool)
    .await?;
    assert_eq!(
        resolution_marked_by.map(|id| id.to_string()).as_deref(),
        redo.body["correlation_id"].as_str()
    );
    // The read model agrees, and a read without rolled-back events shows both raises,
    // as `/findings` shows both findings open.
    assert_eq!(
        flags_differing(&pool).await?,
        vec![],
        "rm_events flags that differ from event_rollbacks"
    );
    let live = timeline(
        &system,
        &format!(
            "correlation_id={}&event_type=FINDING_RAISED&include_rolled_back=false",
            batch.as_str().unwrap_or_default()
        ),
    )
    .await?;
    assert_eq!(live["events"].as_array().map(Vec::len), Some(2), "{live}");
    let open = send(http, Method::GET, &system.query.url("/findings"), None)
        .await?
        .expect_status(200);
    assert_eq!(
        open.body["findings"].as_array().map(Vec::len),
        Some(2),
        "{}",
        open.body
    );

    // Act + Assert: R3 rolls the redo back: P-2's finding is closed again, B's raise
    // marked by RP again (RP's resolution is live, as R3's own), the redo's raise by R3
    // (a helper, area G: B's raise stayed live beside the two resolutions).
    command(
        Method::POST,
        "/rules/rollback".into(),
        json!({"correlation_id": redo.body["correlation_id"]}),
    )
    .await?
    .expect_status(200);
    assert_eq!(
        raises_marked().await?,
        [
            ("review P-1".to_owned(), None),
            ("review P-2".to_owned(), rp)
        ]
    );
    system.wait_for_projection().await?;
    assert_eq!(
        flags_differing(&pool).await?,
        vec![],
        "rm_events flags that differ from event_rollbacks"
    );
    let p2 = format!("asset_id={}&include_rolled_back=false", pumps[1]);
    let live = timeline(&system, &p2).await?;
    let findings: Vec<&str> = live["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["event_type"].as_str())
        .filter(|kind| kind.starts_with("FINDING"))
        .collect();
    assert_eq!(findings, ["FINDING_RESOLVED", "FINDING_RESOLVED"], "{live}");
    Ok(())
}
