//! Requests that hold several pooled connections at once, many at a time: they must
//! not fill the pool and wait on each other until its acquire timeout answers 503.

use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};
use synapse_tests::apps;
use synapse_tests::client::{send, Reply};
use synapse_tests::plant::{small_plant, vfd_rule};

/// As many requests as the test service's pool has connections.
const AT_ONCE: usize = 10;

async fn post_with_key(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    key: String,
) -> anyhow::Result<Reply> {
    let response = http
        .post(url)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await?;
    Reply::from(response).await
}

/// [`AT_ONCE`] posts of `body` to `url`, all at once, each with its own
/// `Idempotency-Key` (`{key}-{n}`).
async fn at_once(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    key: &str,
) -> Vec<anyhow::Result<Reply>> {
    join_all((0..AT_ONCE).map(|index| post_with_key(http, url, body, format!("{key}-{index}"))))
        .await
}

#[tokio::test]
async fn many_keyed_dry_runs_at_once_each_get_their_plan() -> anyhow::Result<()> {
    // Arrange
    let app = apps::CommandOnly::start().await?;
    for asset in small_plant() {
        send(
            &app.http,
            Method::POST,
            &app.command.url("/assets"),
            Some(&asset),
        )
        .await?
        .expect_status(201);
    }
    let rule = send(
        &app.http,
        Method::POST,
        &app.command.url("/rules"),
        Some(&vfd_rule()),
    )
    .await?
    .expect_status(201);
    let body = json!({"rule_ids": [rule.body["id"]], "dry_run": true});
    let url = app.command.url("/rules/execute");

    // Act
    let replies = at_once(&app.http, &url, &body, "dry").await;

    // Assert: every one answered with a plan of its own, and each plan is stored.
    let mut plans = Vec::new();
    for reply in replies {
        let reply = reply?;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.body["rules"][0]["counts"]["executed"], 4);
        plans.push(
            reply.body["plan_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    plans.sort();
    plans.dedup();
    assert_eq!(plans.len(), AT_ONCE);
    let stored: i64 = sqlx::query_scalar("select count(*) from execution_plans")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(stored, AT_ONCE as i64);
    app.command.stop().await
}

#[tokio::test]
async fn many_cascades_of_one_batch_at_once_roll_it_back_once_and_answer_every_one(
) -> anyhow::Result<()> {
    // Arrange: batch A creates an asset, batch B changes it: B is in A's way.
    let app = apps::CommandOnly::start().await?;
    let created = send(
        &app.http,
        Method::POST,
        &app.command.url("/assets"),
        Some(&json!({"tag": "M-1", "asset_type": "ELECTRIC_MOTOR",
                     "discipline": "ELECTRICAL", "properties": {"rated_power_kw": 75}})),
    )
    .await?
    .expect_status(201);
    let id = created.body["asset"]["id"].as_str().unwrap_or_default();
    send(
        &app.http,
        Method::PATCH,
        &app.command.url(&format!("/assets/{id}")),
        Some(&json!({"name": "changed"})),
    )
    .await?
    .expect_status(200);
    let body = json!({"correlation_id": created.body["correlation_id"], "mode": "cascade"});
    let url = app.command.url("/rules/rollback");

    // Act
    let replies = at_once(&app.http, &url, &body, "cascade").await;

    // Assert: one rolled the two batches back; the others were told it was done.
    let mut statuses = Vec::new();
    for reply in replies {
        let reply = reply?;
        if reply.status == 409 {
            assert_eq!(reply.body["type"], "/problems/already-rolled-back");
        }
        statuses.push(reply.status);
    }
    statuses.sort_unstable();
    let mut expected = vec![409; AT_ONCE - 1];
    expected.insert(0, 200);
    assert_eq!(statuses, expected);
    let rollbacks: i64 = sqlx::query_scalar(
        "select count(*) from workflow_events where event_type = 'BATCH_ROLLED_BACK'",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(rollbacks, 2);
    let assets: i64 = sqlx::query_scalar("select count(*) from assets")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(assets, 0);
    app.command.stop().await
}

#[tokio::test]
async fn many_executions_at_once_each_finish() -> anyhow::Result<()> {
    // Arrange: a plant large enough for executions of several chunks.
    let app = apps::CommandOnly::start().await?;
    let mut plant = small_plant();
    plant.extend(synapse_tests::plant::motors(
        "M-9",
        3_000,
        json!({"rated_power_kw": 75, "mcc": "MCC-U100-01"}),
    ));
    synapse_tests::client::post_csv(
        &app.http,
        &app.command.url("/assets/import"),
        synapse_tests::plant::as_csv(&plant),
    )
    .await?
    .expect_status(201);
    let mut rules = Vec::new();
    for index in 0..AT_ONCE {
        let mut rule = json!({"name": format!("stamp {index}"), "discipline": "ELECTRICAL",
            "when": "asset.asset_type == 'ELECTRIC_MOTOR'",
            "then": [{"type": "set_property", "name": format!("stamp_{index}"), "value": "true"}]});
        rule["priority"] = json!(index);
        let defined = send(
            &app.http,
            Method::POST,
            &app.command.url("/rules"),
            Some(&rule),
        )
        .await?
        .expect_status(201);
        rules.push(defined.body["id"].clone());
    }
    let url = app.command.url("/rules/execute");

    // Act: each rule in an execution of its own, all at once.
    let bodies: Vec<Value> = rules
        .iter()
        .map(|rule| json!({"rule_ids": [rule], "wait": true}))
        .collect();
    let replies = join_all(
        bodies
            .iter()
            .enumerate()
            .map(|(index, body)| post_with_key(&app.http, &url, body, format!("run-{index}"))),
    )
    .await;

    // Assert
    for reply in replies {
        let reply = reply?;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.body["status"], "completed", "{:?}", reply.body);
        assert_eq!(reply.body["rules"][0]["counts"]["changes"], 3_006);
    }
    app.command.stop().await
}

/// `service` run with `DATABASE_MAX_CONNECTIONS=connections`: its exit status and
/// what it wrote to stderr.
async fn started_with(
    service: synapse_tests::process::Service,
    connections: &str,
) -> anyhow::Result<(Option<i32>, String)> {
    let database = synapse_tests::TestDatabase::create().await?;
    let output = tokio::process::Command::new(synapse_tests::process::binary(service)?)
        .env("DATABASE_URL", &database.url)
        .env("DATABASE_MAX_CONNECTIONS", connections)
        .env("AUTH_DISABLED", "true")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("NATS_URL", "nats://127.0.0.1:1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), output).await??;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn a_pool_too_small_to_work_with_stops_a_service_at_start_with_a_message(
) -> anyhow::Result<()> {
    use synapse_tests::process::Service;
    // Act
    let none = started_with(Service::Query, "0").await?;
    let one = started_with(Service::Command, "1").await?;

    // Assert: a message, not a panic (before: `capacity must be non-zero` and status
    // 101 for 0; with 1 the command service started and answered every dry run 503).
    assert_eq!(none.0, Some(2), "{}", none.1);
    assert!(none.1.contains("DATABASE_MAX_CONNECTIONS"), "{}", none.1);
    assert!(!none.1.contains("panicked"), "{}", none.1);
    assert_ne!(one.0, Some(0));
    assert!(
        one.1
            .contains("DATABASE_MAX_CONNECTIONS is 1; the command service needs at least 2"),
        "{}",
        one.1
    );
    Ok(())
}
