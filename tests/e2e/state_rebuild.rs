//! `command-service rebuild [--check]`: the command side's current-state tables folded
//! from the event log equal the ones the commands wrote, and replace them when lost.

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use synapse_tests::apps::{self, Running};
use synapse_tests::client::{post_csv, send, Reply};
use synapse_tests::plant::{as_csv, motors, pump_flag_rule, small_plant, vfd_rule};
use synapse_tests::resources::{TestDatabase, TestNats};

struct Setup {
    database: TestDatabase,
    _nats: TestNats,
    command: Running,
    http: reqwest::Client,
    pool: PgPool,
}

impl Setup {
    async fn send(&self, method: Method, path: &str, body: Value) -> anyhow::Result<Reply> {
        send(&self.http, method, &self.command.url(path), Some(&body)).await
    }

    async fn execute(&self) -> anyhow::Result<Value> {
        Ok(self
            .send(Method::POST, "/rules/execute", json!({"wait": true}))
            .await?
            .expect_status(200)
            .body)
    }

    async fn rollback(&self, batch: &Value, mode: &str) -> anyhow::Result<Value> {
        Ok(self
            .send(
                Method::POST,
                "/rules/rollback",
                json!({"correlation_id": batch, "mode": mode}),
            )
            .await?
            .expect_status(200)
            .body)
    }

    async fn asset_id(&self, tag: &str) -> anyhow::Result<uuid::Uuid> {
        Ok(sqlx::query_scalar("select id from assets where tag = $1")
            .bind(tag)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Every rebuilt table's rows, in the columns the fold determines, in key order.
    async fn state(&self) -> anyhow::Result<Vec<(String, Value)>> {
        let mut state = Vec::new();
        for (table, columns) in command_service::rebuild::tables() {
            let rows: Value = sqlx::query_scalar(&format!(
                "select coalesce(jsonb_agg(to_jsonb(t) order by t::text), '[]')
                 from (select {columns} from {table}) t"
            ))
            .fetch_one(&self.pool)
            .await?;
            state.push((table.to_owned(), rows));
        }
        Ok(state)
    }
}

/// A history that goes through every kind of batch: single changes, an import, rule
/// versions, executions making assets, cables, relationships and findings, a full
/// rollback and its redo (which reopens a finding), a deletion, a partial rollback.
async fn rich_history() -> anyhow::Result<Setup> {
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, false).await?;
    let pool = PgPool::connect(&database.url).await?;
    let setup = Setup {
        database,
        _nats: nats,
        command,
        http: synapse_tests::client::http_client(),
        pool,
    };
    let second_pump = json!({"tag": "P-102A", "asset_type": "CENTRIFUGAL_PUMP",
                             "discipline": "MECHANICAL", "area": "U200", "properties": {}});
    for asset in small_plant().into_iter().chain([second_pump]) {
        setup
            .send(Method::POST, "/assets", asset)
            .await?
            .expect_status(201);
    }
    let extra = motors(
        "M-9",
        4,
        json!({"rated_power_kw": 75, "mcc": "MCC-U100-01"}),
    );
    post_csv(
        &setup.http,
        &setup.command.url("/assets/import"),
        as_csv(&extra),
    )
    .await?
    .expect_status(201);
    setup
        .send(Method::POST, "/rules", vfd_rule())
        .await?
        .expect_status(201);
    let pumps = setup
        .send(Method::POST, "/rules", pump_flag_rule())
        .await?
        .expect_status(201);
    let mut louder = pump_flag_rule();
    louder["then"][0]["severity"] = json!("error");
    setup
        .send(
            Method::PUT,
            &format!("/rules/{}", pumps.body["id"].as_str().unwrap_or_default()),
            louder,
        )
        .await?
        .expect_status(200);

    let first = setup.execute().await?;
    let undo = setup.rollback(&first["correlation_id"], "strict").await?;
    setup.rollback(&undo["correlation_id"], "strict").await?;
    let motor = setup.asset_id("M-102").await?;
    setup
        .send(
            Method::PATCH,
            &format!("/assets/{motor}"),
            json!({"properties": {"rated_power_kw": 30, "mcc": "MCC-U100-01"}}),
        )
        .await?
        .expect_status(200);
    let pump = setup.asset_id("P-101A").await?;
    send(
        &setup.http,
        Method::DELETE,
        &setup.command.url(&format!("/assets/{pump}")),
        None,
    )
    .await?
    .expect_status(200);
    let second = setup.execute().await?;
    let changed = setup.asset_id("M-90000").await?;
    setup
        .send(
            Method::PATCH,
            &format!("/assets/{changed}"),
            json!({"name": "changed after the run"}),
        )
        .await?
        .expect_status(200);
    setup.rollback(&second["correlation_id"], "partial").await?;
    Ok(setup)
}

#[tokio::test]
async fn the_state_tables_folded_from_the_log_equal_the_written_ones_and_replace_lost_ones(
) -> anyhow::Result<()> {
    // Arrange
    let setup = rich_history().await?;
    let url = setup.database.url.clone();
    let written = setup.state().await?;

    // Act / Assert: the fold of the log equals what the commands wrote, table by table.
    let checked = command_service::rebuild::check(&url).await?;
    assert_eq!(checked.len(), written.len());
    for report in &checked {
        assert!(report.agrees(), "{report:?}");
        assert!(report.folded > 0, "{report:?}");
        assert_eq!(report.folded, report.rows, "{report:?}");
    }

    // Act: the tables lose rows and one is altered; the check sees it and changes
    // nothing, the rebuild brings back what the commands wrote.
    for (table, _) in command_service::rebuild::tables() {
        sqlx::query(&format!("delete from {table}"))
            .execute(&setup.pool)
            .await?;
    }
    let broken = command_service::rebuild::check(&url).await?;
    for report in &broken {
        assert_eq!(
            (report.rows, report.missing, report.extra),
            (0, report.folded, 0),
            "{report:?}"
        );
        assert!(!report.sample.is_empty());
    }
    assert!(setup
        .state()
        .await?
        .iter()
        .all(|(_, rows)| rows == &json!([])));
    let rebuilt = command_service::rebuild::rebuild(&url).await?;

    // Assert
    assert_eq!(rebuilt.reports, broken);
    assert_eq!(rebuilt.caught_up, 0);
    assert_eq!(setup.state().await?, written);
    assert!(command_service::rebuild::check(&url)
        .await?
        .iter()
        .all(|report| report.agrees()));
    // The service goes on from the rebuilt state: another run finds everything as the
    // rules want it, and its rollback finds the batch it rolls back.
    let again = setup.execute().await?;
    for rule in again["rules"].as_array().into_iter().flatten() {
        assert_eq!(rule["counts"]["changes"], json!(0), "{rule}");
        assert_eq!(rule["counts"]["errors"], json!(0), "{rule}");
    }
    setup.rollback(&again["correlation_id"], "strict").await?;
    setup.command.stop().await
}

#[tokio::test]
async fn a_rebuild_corrects_a_drifted_row_and_the_check_names_it() -> anyhow::Result<()> {
    // Arrange: one cable altered behind the service's back.
    let setup = rich_history().await?;
    let url = setup.database.url.clone();
    let written = setup.state().await?;
    let cable: uuid::Uuid = sqlx::query_scalar(
        "update cables set properties = '{\"cross_section_mm2\": 1}'
         where id = (select min(id::text)::uuid from cables) returning id",
    )
    .fetch_one(&setup.pool)
    .await?;

    // Act
    let checked = command_service::rebuild::check(&url).await?;
    let rebuilt = command_service::rebuild::rebuild(&url).await?;

    // Assert: only the cables differ, by that one row, and the rebuild restores it.
    for report in &checked {
        if report.table == "cables" {
            assert_eq!((report.missing, report.extra), (1, 1));
            assert_eq!(report.sample, vec![cable.to_string()]);
        } else {
            assert!(report.agrees(), "{report:?}");
        }
    }
    assert_eq!(rebuilt.reports, checked);
    assert_eq!(setup.state().await?, written);
    setup.command.stop().await
}

#[tokio::test]
async fn a_rebuild_keeps_what_commands_wrote_between_its_fold_and_its_locks() -> anyhow::Result<()>
{
    // Arrange: rows drifted behind the service's back (an asset's name and another's
    // area, a batch's status, a finding's time), then the fold, taken without locks.
    let setup = rich_history().await?;
    let url = setup.database.url.clone();
    let renamed = setup.asset_id("M-101").await?;
    let moved = setup.asset_id("M-103").await?;
    for drift in [
        "update assets set name = 'drifted' where tag = 'M-101'",
        "update assets set area = 'drifted' where tag = 'M-103'",
        "update batches set status = 'failed'
         where correlation_id = (select min(correlation_id::text)::uuid from batches)",
        "update findings set raised_at = raised_at - interval '1 day'",
    ] {
        assert_eq!(
            sqlx::query(drift)
                .execute(&setup.pool)
                .await?
                .rows_affected(),
            1,
            "{drift}"
        );
    }
    let mut folded = command_service::rebuild::Folded::fold(&url).await?;

    // Act: commands land between the fold and the rebuild's locks: the drifted asset
    // renamed, a new pump flagged by a run, a new rule version, a rollback of the run.
    setup
        .send(
            Method::PATCH,
            &format!("/assets/{renamed}"),
            json!({"name": "named after the fold"}),
        )
        .await?
        .expect_status(200);
    setup
        .send(
            Method::POST,
            "/assets",
            json!({"tag": "P-103A", "asset_type": "CENTRIFUGAL_PUMP",
                   "discipline": "MECHANICAL", "area": "U100", "properties": {}}),
        )
        .await?
        .expect_status(201);
    let rule: uuid::Uuid = sqlx::query_scalar("select id from rules where name = $1 limit 1")
        .bind(vfd_rule()["name"].as_str().unwrap_or_default())
        .fetch_one(&setup.pool)
        .await?;
    let mut disabled = vfd_rule();
    disabled["enabled"] = json!(false);
    setup
        .send(Method::PUT, &format!("/rules/{rule}"), disabled)
        .await?
        .expect_status(200);
    let run = setup.execute().await?;
    setup.rollback(&run["correlation_id"], "strict").await?;
    let redo = setup.execute().await?;
    let rebuilt = folded.replace().await?;

    // Assert: the rebuild rewrote the drifted rows and nothing the commands wrote.
    let appended: i64 =
        sqlx::query_scalar("select count(*) from workflow_events where position > $1")
            .bind(rebuilt.folded_to)
            .fetch_one(&setup.pool)
            .await?;
    assert!(appended > 0);
    assert_eq!(rebuilt.caught_up, appended);
    let name: Option<String> = sqlx::query_scalar("select name from assets where id = $1")
        .bind(renamed)
        .fetch_one(&setup.pool)
        .await?;
    assert_eq!(name.as_deref(), Some("named after the fold"));
    for report in &rebuilt.reports {
        let differed = match report.table {
            "assets" => (1, 1),
            "batches" | "findings" => (1, 1),
            _ => (0, 0),
        };
        assert_eq!((report.missing, report.extra), differed, "{report:?}");
        if report.table == "assets" {
            assert_eq!(report.sample, vec![moved.to_string()]);
        }
    }
    let after = command_service::rebuild::check(&url).await?;
    assert!(after.iter().all(|report| report.agrees()), "{after:?}");
    let open: Vec<String> = sqlx::query_scalar(
        "select a.tag from findings f join assets a on a.id = f.asset_id order by 1",
    )
    .fetch_all(&setup.pool)
    .await?;
    assert_eq!(
        open,
        ["P-102A", "P-103A"],
        "the redo flagged the new pump again"
    );
    assert_eq!(redo["status"], json!("completed"), "{redo}");
    setup.command.stop().await
}

/// `command-service rebuild --check` as an operator runs it: its output and exit status.
async fn run_rebuild(database_url: &str, check: bool) -> anyhow::Result<(i32, String)> {
    let binary = synapse_tests::process::binary(synapse_tests::process::Service::Command)?;
    let mut command = tokio::process::Command::new(binary);
    command.arg("rebuild");
    if check {
        command.arg("--check");
    }
    let output = command
        .env("DATABASE_URL", database_url)
        .env("AUTH_DISABLED", "true")
        .output()
        .await?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

#[tokio::test]
async fn the_rebuild_command_exits_with_1_while_a_table_differs_0_once_rebuilt_2_if_it_cannot_run(
) -> anyhow::Result<()> {
    // Arrange: a rule row lost.
    let setup = rich_history().await?;
    let url = setup.database.url.clone();
    let lost: uuid::Uuid = sqlx::query_scalar("delete from rules where version = 2 returning id")
        .fetch_one(&setup.pool)
        .await?;

    // Act
    let (checked, check_output) = run_rebuild(&url, true).await?;
    let (rebuilt, rebuild_output) = run_rebuild(&url, false).await?;
    let (rechecked, recheck_output) = run_rebuild(&url, true).await?;
    let nowhere = format!("{}_missing", url);
    let (unable, _) = run_rebuild(&nowhere, true).await?;

    // Assert
    assert_eq!(checked, 1, "{check_output}");
    let rules_line = check_output
        .lines()
        .find(|line| line.starts_with("rules "))
        .unwrap_or_default();
    let counts: Vec<&str> = rules_line.split_whitespace().take(5).collect();
    assert_eq!(counts, ["rules", "3", "2", "1", "0"], "{check_output}");
    assert!(
        rules_line.ends_with(&format!("e.g. {lost}")),
        "{check_output}"
    );
    assert!(check_output.contains("1 table(s) differ from the event log"));
    assert_eq!(rebuilt, 0, "{rebuild_output}");
    assert!(rebuild_output.contains("1 table(s) differed from the event log and were rebuilt"));
    assert_eq!(rechecked, 0, "{recheck_output}");
    assert_eq!(unable, 2, "a check that cannot run is not a difference");
    assert!(recheck_output.contains("every table agrees with the event log"));
    let versions: i64 = sqlx::query_scalar("select count(*) from rules where id = $1")
        .bind(lost)
        .fetch_one(&setup.pool)
        .await?;
    assert_eq!(versions, 2);
    setup.command.stop().await
}

#[tokio::test]
async fn a_rebuild_waits_for_writers_without_deadlocking_with_them() -> anyhow::Result<()> {
    // Arrange: a writer holding a cable's row lock, as a cable PATCH does before it
    // checks its ends in `assets`.
    let setup = rich_history().await?;
    let url = setup.database.url.clone();
    let mut writer = setup.pool.begin().await?;
    let cable: uuid::Uuid =
        sqlx::query_scalar("select id from cables order by id limit 1 for update")
            .fetch_one(&mut *writer)
            .await?;

    // Act: a rebuild starts; then the writer goes on to write in `assets`, and commits.
    let rebuild = tokio::spawn({
        let url = url.clone();
        async move { command_service::rebuild::rebuild(&url).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let wrote = sqlx::query("update assets set version = version where tag = 'M-101'")
        .execute(&mut *writer)
        .await;
    let committed = writer.commit().await;
    let rebuilt = rebuild.await?;

    // Assert: neither was aborted; the rebuild ran after the writer.
    assert!(wrote.is_ok(), "{wrote:?}");
    assert!(committed.is_ok(), "{committed:?}");
    let rebuilt = rebuilt?.reports;
    assert!(rebuilt.iter().all(|report| report.agrees()), "{rebuilt:?}");
    let still: i64 = sqlx::query_scalar("select count(*) from cables where id = $1")
        .bind(cable)
        .fetch_one(&setup.pool)
        .await?;
    assert_eq!(still, 1);
    setup.command.stop().await
}

#[tokio::test]
async fn a_rebuild_refuses_while_a_batch_runs_and_changes_nothing() -> anyhow::Result<()> {
    // Arrange: a batch recorded as running (its executor between two chunks).
    let setup = rich_history().await?;
    let url = setup.database.url.clone();
    let written = setup.state().await?;
    let batch = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into batches (correlation_id, kind, status, actor)
         values ($1, 'rule_execution', 'running', 'erin')",
    )
    .bind(batch)
    .execute(&setup.pool)
    .await?;

    // Act
    let refused = command_service::rebuild::rebuild(&url).await;
    sqlx::query("delete from batches where correlation_id = $1")
        .bind(batch)
        .execute(&setup.pool)
        .await?;
    let rebuilt = command_service::rebuild::rebuild(&url).await?.reports;

    // Assert
    let message = refused
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(message.contains("1 batch(es) are running"), "{message}");
    assert!(rebuilt.iter().all(|report| report.agrees()), "{rebuilt:?}");
    assert_eq!(setup.state().await?, written);
    setup.command.stop().await
}
