//! A query-service replica that reads a Postgres read replica (SPEC §10): started with
//! `RUN_MIGRATIONS=false` it does not try to write the schema and serves what the
//! primary's projection service wrote; without that setting it cannot start there.
//!
//! The read replica is the test's own database switched to read-only for every new
//! session (`default_transaction_read_only`), which refuses writes exactly as a hot
//! standby does ("cannot execute ... in a read-only transaction").

use query_service::startup::{Application, Config};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use synapse_shared::config::{DatabaseArgs, ListenArgs};
use synapse_tests::apps;
use synapse_tests::client::{http_client, send};
use synapse_tests::process::{Service, ServiceEnv, ServiceProcess};
use synapse_tests::resources::admin_database_url;
use synapse_tests::{TestDatabase, TestNats};

/// Make every new session of `database` read-only, as on a hot standby.
async fn make_read_only(database: &TestDatabase) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&admin_database_url()).await?;
    sqlx::query(&format!(
        "alter database {} set default_transaction_read_only = on",
        database.name
    ))
    .execute(&mut admin)
    .await?;
    Ok(())
}

#[tokio::test]
async fn with_run_migrations_false_a_query_service_serves_from_a_read_only_replica_and_without_it_cannot_start(
) -> anyhow::Result<()> {
    // Arrange: the primary side writes an asset and projects it, then stops; the
    // database becomes read-only.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, true).await?;
    let projection = apps::projection_service(&database, &nats.args).await?;
    let http = http_client();
    let created = send(
        &http,
        reqwest::Method::POST,
        &command.url("/assets"),
        Some(&json!({"tag": "M-501", "asset_type": "ELECTRIC_MOTOR",
                     "discipline": "ELECTRICAL", "properties": {"rated_power_kw": 55}})),
    )
    .await?
    .expect_status(201);
    let asset_id = created.body["asset"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    apps::wait_for_projection(&database.url).await?;
    command.stop().await?;
    projection.stop().await?;
    let log_positions: Vec<i64> =
        sqlx::query_scalar("select position from workflow_events order by position")
            .fetch_all(&PgPool::connect(&database.url).await?)
            .await?;
    make_read_only(&database).await?;
    let mut probe = PgConnection::connect(&database.url).await?;
    let write = sqlx::query("create table replica_probe (id int)")
        .execute(&mut probe)
        .await;

    // Act: a replica process told not to migrate, and one left at the default.
    let mut replica_env = ServiceEnv::new(&database, &nats.args);
    replica_env
        .extra
        .push(("RUN_MIGRATIONS".to_owned(), "false".to_owned()));
    let mut replica = ServiceProcess::start(Service::Query, replica_env).await?;
    // Ready once its dependencies answer (the live feed attaches to the stream just
    // after the process starts): poll for up to 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ready = loop {
        let ready = send(&http, reqwest::Method::GET, &replica.url("/readyz"), None).await?;
        if ready.status == 200 || std::time::Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let timeline = send(
        &http,
        reqwest::Method::GET,
        &replica.url("/events/timeline"),
        None,
    )
    .await?;
    let asset = send(
        &http,
        reqwest::Method::GET,
        &replica.url(&format!("/assets/{asset_id}")),
        None,
    )
    .await?;
    let mut migrating_env = ServiceEnv::new(&database, &nats.args);
    // Keep the error the process exits with short enough to appear in the log tail.
    migrating_env
        .extra
        .push(("RUST_BACKTRACE".to_owned(), "0".to_owned()));
    let migrating = ServiceProcess::start(Service::Query, migrating_env)
        .await
        .err()
        .map(|error| format!("{error:#}"));

    // Assert
    let refusal = write
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(refusal.contains("read-only transaction"), "{refusal}");
    assert_eq!(ready.status, 200, "{ready:?}");
    let listed: Vec<i64> = timeline.body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["position"].as_i64())
        .collect();
    assert_eq!(listed, log_positions);
    assert_eq!(asset.status, 200, "{asset:?}");
    assert_eq!(asset.body["state"]["tag"], "M-501");
    assert_eq!(
        asset.body["state"]["properties"],
        json!({"rated_power_kw": 55})
    );
    let migrating = migrating.expect("a query service that migrates cannot start on a replica");
    assert!(
        migrating.contains("applying the read-model migrations")
            && migrating.contains("read-only transaction"),
        "{migrating}"
    );
    assert!(replica.terminate().await?, "the replica exits cleanly");
    Ok(())
}

#[tokio::test]
async fn without_migrations_a_query_service_refuses_a_database_that_lacks_them(
) -> anyhow::Result<()> {
    // Arrange: a database nobody has migrated.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let config = Config::new(
        DatabaseArgs {
            database_url: database.url.clone(),
            database_max_connections: 2,
        },
        nats.args.clone(),
        ListenArgs {
            listen_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        },
    )
    .with_auth(synapse_tests::auth::args())
    .without_migrations();

    // Act
    let built = Application::build(config).await;

    // Assert: refused, naming every missing migration, and nothing was created.
    let message = built
        .err()
        .map(|error| format!("{error:#}"))
        .unwrap_or_default();
    let mut versions: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/read"))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.split('_').next().map(str::to_owned)
            })
            .collect();
    versions.sort();
    assert!(versions.len() >= 3, "{versions:?}");
    assert!(
        message.contains(&format!(
            "lacks read-model migrations [{}]",
            versions.join(", ")
        )),
        "{message}"
    );
    let pool = PgPool::connect(&database.url).await?;
    let tables: Option<String> = sqlx::query_scalar("select to_regclass('rm_events')::text")
        .fetch_one(&pool)
        .await?;
    assert_eq!(tables, None::<String>);
    Ok(())
}
