//! How fast the projector applies a backlog: publishes `EVENTS` asset changes (default
//! 20,000) to a fresh stream, starts the service on a fresh database and reports the
//! time until its checkpoint reaches the last one.
//!
//! ```text
//! cargo run --release -p projection-service --example throughput
//! ```
//!
//! Needs Postgres (`ADMIN_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and NATS (`NATS_URL`, default `nats://127.0.0.1:4222`); both are left as found.

use anyhow::Context;
use chrono::Utc;
use projection_service::startup::{Application, Config};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use std::time::{Duration, Instant};
use synapse_shared::config::{DatabaseArgs, ListenArgs, NatsArgs};
use synapse_shared::shutdown::CancellationToken;
use synapse_shared::{AggregateType, EventEnvelope, EventType};
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: i64 = std::env::var("EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let admin = std::env::var("ADMIN_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let unique = Uuid::new_v4().simple().to_string();
    let database = format!("synapse_throughput_{unique}");
    let (server, _) = admin
        .rsplit_once('/')
        .context("the admin url names no database")?;
    let database_url = format!("{server}/{database}");
    let nats = NatsArgs::isolated(&nats_url, &unique);

    let mut admin_connection = PgConnection::connect(&admin).await?;
    sqlx::query(&format!("create database {database}"))
        .execute(&mut admin_connection)
        .await?;
    let result = run(events, &database_url, &nats).await;
    let jetstream = async_nats::jetstream::new(async_nats::connect(&nats_url).await?);
    let _ = jetstream.delete_stream(&nats.nats_stream).await;
    sqlx::query(&format!("drop database {database} with (force)"))
        .execute(&mut admin_connection)
        .await?;
    result
}

async fn run(events: i64, database_url: &str, nats: &NatsArgs) -> anyhow::Result<()> {
    let jetstream = async_nats::jetstream::new(async_nats::connect(&nats.nats_url).await?);
    synapse_shared::nats::ensure_stream(&jetstream, nats).await?;
    let started = Instant::now();
    let correlation_id = Uuid::now_v7();
    let assets: Vec<Uuid> = (0..(events + 9) / 10).map(|_| Uuid::now_v7()).collect();
    for chunk in (1..=events).collect::<Vec<_>>().chunks(1_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for &position in chunk {
            let event = asset_event(
                position,
                assets[((position - 1) / 10) as usize],
                correlation_id,
            );
            let subject = nats.subjects().for_event(&event);
            let headers = synapse_shared::nats::headers_for(&event);
            acks.push(
                jetstream
                    .publish_with_headers(subject, headers, serde_json::to_vec(&event)?.into())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
    }
    println!("published {events} events in {:?}", started.elapsed());

    let config = Config::new(
        DatabaseArgs {
            database_url: database_url.to_owned(),
            database_max_connections: 5,
        },
        nats.clone(),
        ListenArgs {
            listen_addr: Some("127.0.0.1:0".parse()?),
        },
    );
    let application = Application::build(config).await?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    let pool = PgPool::connect(database_url).await?;
    loop {
        let position: Option<i64> =
            sqlx::query_scalar("select max(position) from projector_checkpoints")
                .fetch_one(&pool)
                .await?;
        if position.unwrap_or(0) >= events {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the projector reached only {position:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "projected {events} events in {elapsed:?}: {:.0} events/s",
        events as f64 / elapsed.as_secs_f64()
    );
    shutdown.cancel();
    running.await??;
    Ok(())
}

/// Each asset is created and then updated nine times.
fn asset_event(position: i64, asset: Uuid, correlation_id: Uuid) -> EventEnvelope {
    let version = (position - 1) % 10 + 1;
    let state = |version: i64| {
        json!({ "id": asset, "tag": format!("M-{asset}"), "asset_type": "MOTOR",
                "discipline": "ELECTRICAL", "name": null, "area": "A1",
                "properties": { "power_kw": 10 + version }, "version": version })
    };
    let (event_type, before) = if version == 1 {
        (EventType::AssetCreated, serde_json::Value::Null)
    } else {
        (EventType::AssetUpdated, state(version - 1))
    };
    EventEnvelope {
        event_id: Uuid::now_v7(),
        position,
        event_type,
        aggregate_type: AggregateType::Asset,
        aggregate_id: asset,
        aggregate_version: version,
        correlation_id,
        causation_id: None,
        rule_id: None,
        rule_version: None,
        discipline: Some("ELECTRICAL".to_owned()),
        actor: "throughput".to_owned(),
        occurred_at: Utc::now(),
        schema_version: synapse_shared::event::SCHEMA_VERSION,
        payload: json!({ "before": before, "after": state(version) }),
    }
}
