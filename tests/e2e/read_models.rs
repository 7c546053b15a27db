//! The batch and discipline read models end to end: real commands, the relay, the
//! projectors and the query service's `/batches` and `/disciplines`; and a rebuild of
//! those read models from the same log, which must come out identical.

use projection_service::apply::{apply_batch, Delivered};
use projection_service::projectors::{BatchesProjector, DisciplinesProjector};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use synapse_shared::{EventEnvelope, EventType};
use synapse_tests::apps::System;
use synapse_tests::auth::TEST_ADMIN;
use synapse_tests::client::{post_csv, send, Reply};
use synapse_tests::plant::{pump_flag_rule, small_plant, vfd_rule};
use synapse_tests::TestDatabase;
use uuid::Uuid;

/// A GET on the query service.
async fn get(system: &System, path: &str) -> anyhow::Result<Reply> {
    send(&system.http, Method::GET, &system.query.url(path), None).await
}

/// A POST on the command service, expecting `status`.
async fn post(system: &System, path: &str, body: Value, status: u16) -> anyhow::Result<Value> {
    let reply = send(
        &system.http,
        Method::POST,
        &system.command.url(path),
        Some(&body),
    )
    .await?;
    Ok(reply.expect_status(status).body)
}

/// A string field of a JSON object (empty when missing, so assertions say what differs).
fn text(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_default().to_owned()
}

/// Import a small CSV file; its correlation id.
async fn import_csv(system: &System) -> anyhow::Result<String> {
    let file = "tag,asset_type,discipline,rated_power_kw\n\
                M-900,ELECTRIC_MOTOR,ELECTRICAL,22\n\
                P-900,CENTRIFUGAL_PUMP,MECHANICAL,\n";
    let reply = post_csv(&system.http, &system.command.url("/assets/import"), file)
        .await?
        .expect_status(201);
    Ok(text(&reply.body, "correlation_id"))
}

/// Every batch, following `next_after` with pages of two.
async fn all_batches(system: &System) -> anyhow::Result<Vec<Value>> {
    let mut batches = Vec::new();
    let mut after = 0;
    loop {
        let page = get(system, &format!("/batches?limit=2&after={after}"))
            .await?
            .expect_status(200)
            .body;
        batches.extend(page["batches"].as_array().cloned().unwrap_or_default());
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => return Ok(batches),
        }
    }
}

#[tokio::test]
async fn an_execution_its_rollback_and_an_import_show_in_batches_and_disciplines_and_a_rebuild_agrees(
) -> anyhow::Result<()> {
    // Arrange: a plant and two rules (each asset created is a single-change batch).
    let system = System::start().await?;
    for asset in small_plant() {
        post(&system, "/assets", asset, 201).await?;
    }
    let vfd = text(&post(&system, "/rules", vfd_rule(), 201).await?, "id");
    let pump = text(&post(&system, "/rules", pump_flag_rule(), 201).await?, "id");

    // Act: run both rules, roll the run back, import a file.
    let report = post(
        &system,
        "/rules/execute",
        json!({"rule_ids": [vfd, pump], "wait": true}),
        200,
    )
    .await?;
    let execution = text(&report, "correlation_id");
    let rollback = post(
        &system,
        "/rules/rollback",
        json!({"correlation_id": execution}),
        200,
    )
    .await?;
    let rollback = text(&rollback, "correlation_id");
    let import = import_csv(&system).await?;
    system.wait_for_projection().await?;

    // Assert: the list holds every batch of the log once, in start order, across pages.
    let pool = sqlx::PgPool::connect(&system.database.url).await?;
    let log = synapse_shared::event_log::read_after(&pool, 0, 100_000).await?;
    let started: Vec<String> = log
        .iter()
        .filter(|event| event.event_type == EventType::BatchStarted)
        .map(|event| event.correlation_id.to_string())
        .collect();
    let listed = all_batches(&system).await?;
    let listed_ids: Vec<String> = listed.iter().map(|b| text(b, "correlation_id")).collect();
    assert_eq!(listed_ids, started);
    assert!(listed.iter().all(|b| b["actor"] == TEST_ADMIN));

    // Assert: the execution is rolled back by the rollback, which completed.
    let executions = get(&system, "/batches?kind=rule_execution")
        .await?
        .expect_status(200)
        .body;
    assert_eq!(executions["batches"].as_array().map(Vec::len), Some(1));
    let detail = get(&system, &format!("/batches/{execution}"))
        .await?
        .expect_status(200)
        .body;
    assert_eq!(detail["status"], "rolled_back", "{detail}");
    assert_eq!(text(&detail, "rolled_back_by"), rollback);
    assert_eq!(detail["rolled_back_by_actor"], TEST_ADMIN);
    assert_eq!(detail["actor"], TEST_ADMIN);
    assert!(detail["started_at"].is_string() && detail["finished_at"].is_string());
    assert!(detail["duration_ms"].as_i64().is_some_and(|ms| ms >= 0));
    let rolled_back = get(&system, "/batches?status=rolled_back")
        .await?
        .expect_status(200)
        .body;
    assert_eq!(
        rolled_back["batches"][0]["correlation_id"],
        execution.as_str()
    );
    let rollback_detail = get(&system, &format!("/batches/{rollback}"))
        .await?
        .expect_status(200)
        .body;
    assert_eq!(rollback_detail["kind"], "rollback");
    assert_eq!(rollback_detail["status"], "completed");
    assert_eq!(rollback_detail["rolled_back_by"], Value::Null);

    // Assert: per-rule counts equal what the runner reported.
    let rules: BTreeMap<String, &Value> = detail["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| (text(rule, "rule_id"), rule))
        .collect();
    assert_eq!(rules.len(), 2, "{detail}");
    for reported in report["rules"].as_array().into_iter().flatten() {
        let projected = rules[&text(reported, "rule_id")];
        for count in ["executed", "skipped", "errors", "matched"] {
            assert_eq!(
                projected[count], reported["counts"][count],
                "{count} of {reported}"
            );
        }
        assert!(projected["completed_at"].is_string());
    }
    assert_eq!(
        rules[&vfd]["executed"], 4,
        "motors of 75, 90, 110 and 160 kW"
    );
    assert_eq!(rules[&pump]["matched"], 1, "the one pump");
    for count in ["executed", "skipped", "errors", "matched"] {
        assert_eq!(detail["counts"][count], report["totals"][count], "{count}");
    }

    // Assert: the import is a completed csv_import batch with its two changes.
    let imported = get(&system, &format!("/batches/{import}"))
        .await?
        .expect_status(200)
        .body;
    assert_eq!(imported["kind"], "csv_import");
    assert_eq!(imported["status"], "completed");
    assert_eq!(imported["counts"]["changes"], 2);
    let imports = get(&system, "/batches?kind=csv_import&actor=test-admin")
        .await?
        .expect_status(200)
        .body;
    assert_eq!(imports["batches"][0]["correlation_id"], import.as_str());

    // Assert: discipline counts equal the log's, grouped by discipline and event type.
    let mut expected: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let mut expected_batches: BTreeMap<String, BTreeSet<Uuid>> = BTreeMap::new();
    for event in &log {
        if let Some(discipline) = &event.discipline {
            *expected
                .entry(discipline.clone())
                .or_default()
                .entry(event.event_type.as_str().to_owned())
                .or_default() += 1;
            // A rule definition is no batch (before, `/disciplines` counted each).
            if event.event_type != EventType::RuleDefined {
                expected_batches
                    .entry(discipline.clone())
                    .or_default()
                    .insert(event.correlation_id);
            }
        }
    }
    assert!(log
        .iter()
        .any(|event| event.event_type == EventType::RuleDefined
            && event.discipline.as_deref() == Some("ELECTRICAL")));
    let disciplines = get(&system, "/disciplines").await?.expect_status(200).body;
    let projected: BTreeMap<String, BTreeMap<String, i64>> = disciplines["disciplines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|summary| {
            let counts = serde_json::from_value(summary["counts"].clone()).unwrap_or_default();
            (text(summary, "discipline"), counts)
        })
        .collect();
    assert_eq!(projected, expected);
    let electrical = get(&system, "/disciplines/ELECTRICAL?limit=1000")
        .await?
        .expect_status(200)
        .body;
    let recent: BTreeSet<Uuid> = electrical["recent_batches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|batch| batch["correlation_id"].as_str()?.parse().ok())
        .collect();
    assert_eq!(Some(&recent), expected_batches.get("ELECTRICAL"));
    assert_eq!(electrical["batches"], recent.len());
    assert_eq!(electrical["errors"], 0);
    assert!(recent.contains(&execution.parse()?) && recent.contains(&import.parse()?));

    // Assert: a rebuild from the log, sliced differently, gives the same rows, and
    // replaying the whole log over them (checkpoints reset) changes nothing.
    let live = read_models(&pool).await?;
    let rebuild = TestDatabase::create().await?;
    let rebuilt = sqlx::PgPool::connect(&rebuild.url).await?;
    synapse_shared::db::migrate_read(&rebuilt).await?;
    project(&rebuilt, &log, 7).await?;
    assert_eq!(read_models(&rebuilt).await?, live);
    sqlx::query("update projector_checkpoints set position = 0, stream_sequence = 0")
        .execute(&rebuilt)
        .await?;
    project(&rebuilt, &log, 3).await?;
    assert_eq!(read_models(&rebuilt).await?, live);
    Ok(())
}

/// Apply `log` with the batch and discipline projectors in slices of `slice` events, as
/// the consumer would (stream sequence = position).
async fn project(pool: &sqlx::PgPool, log: &[EventEnvelope], slice: usize) -> anyhow::Result<()> {
    for chunk in log.chunks(slice) {
        let delivered: Vec<Delivered> = chunk
            .iter()
            .map(|event| Delivered {
                stream_sequence: u64::try_from(event.position).unwrap_or_default(),
                envelope: Some(event.clone()),
            })
            .collect();
        apply_batch(pool, &BatchesProjector, &delivered).await?;
        apply_batch(pool, &DisciplinesProjector, &delivered).await?;
    }
    Ok(())
}

/// The batch and discipline tables of a snapshot (the projectors this test replays).
async fn read_models(pool: &sqlx::PgPool) -> anyhow::Result<Vec<Value>> {
    let mut snapshot = synapse_tests::read_models::snapshot(pool).await?;
    Ok([
        "rm_batches",
        "rm_batch_rules",
        "rm_disciplines",
        "rm_discipline_batches",
    ]
    .iter()
    .flat_map(|table| snapshot.remove(table).unwrap_or_default())
    .collect())
}

#[tokio::test]
async fn bad_filters_are_400_unknown_batches_and_disciplines_404_and_the_routes_are_documented(
) -> anyhow::Result<()> {
    // Arrange
    let system = System::start().await?;

    // Act + Assert: refused parameters.
    for path in [
        "/batches?status=done",
        "/batches?kind=import",
        "/batches?colour=red",
        "/batches?limit=0",
        "/batches?limit=1001",
        "/batches?after=-1",
        "/batches/not-a-uuid",
        "/disciplines/ELECTRICAL?limit=0",
        "/disciplines/ELECTRICAL?since=yesterday",
    ] {
        let reply = get(&system, path).await?;
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
        assert!(reply.is_problem(), "{path}: {reply:?}");
    }
    for path in [
        format!("/batches/{}", Uuid::now_v7()),
        "/disciplines/NOBODY".to_owned(),
    ] {
        let reply = get(&system, &path).await?;
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
        assert!(reply.is_problem(), "{path}: {reply:?}");
    }
    let empty = get(&system, "/batches").await?.expect_status(200).body;
    assert_eq!(empty, json!({"batches": [], "next_after": null}));

    let document = get(&system, "/openapi.json").await?.expect_status(200).body;
    for route in [
        "/batches",
        "/batches/{correlation_id}",
        "/disciplines",
        "/disciplines/{discipline}",
    ] {
        assert!(
            document["paths"][route]["get"].is_object(),
            "{route} is documented"
        );
    }
    Ok(())
}
