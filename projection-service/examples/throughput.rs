//! How fast the projector applies a backlog: publishes `EVENTS` asset changes (default
//! 20,000) to a fresh stream, starts the service on a fresh database and reports the
//! time until every projector's checkpoint reaches the last one (and when the first
//! one did).
//!
//! ```text
//! cargo run --release -p projection-service --example throughput
//! ```
//!
//! Needs Postgres (`ADMIN_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and NATS (`NATS_URL`, default `nats://127.0.0.1:4222`); both are left as found.

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use projection_service::config::ProjectorArgs;
use projection_service::startup::{Application, Config};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use std::time::{Duration, Instant};
use synapse_shared::config::{DatabaseArgs, ListenArgs, NatsArgs};
use synapse_shared::shutdown::CancellationToken;
use synapse_shared::{AggregateType, EventEnvelope, EventType};
use uuid::Uuid;

/// The service binary's allocator, so the example measures what production runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The projector settings, from the environment as the service reads them.
#[derive(clap::Parser)]
struct Tuning {
    #[command(flatten)]
    projector: ProjectorArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Quiet unless asked: RUST_LOG=projection_service=debug shows every batch and how
    // long it took.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    synapse_shared::telemetry::init_tracing();
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

    let mut config = Config::new(
        DatabaseArgs {
            database_url: database_url.to_owned(),
            database_max_connections: 5,
        },
        nats.clone(),
        ListenArgs {
            listen_addr: Some("127.0.0.1:0".parse()?),
        },
    );
    // PROJECTOR_BATCH_SIZE and PROJECTOR_BATCH_WINDOW_MS tune the run as they tune the
    // service.
    config.projector = Tuning::parse_from(["throughput"]).projector;
    let application = Application::build(config).await?;
    let shutdown = CancellationToken::new();
    let cpu_before = cpu_seconds("self");
    let started = Instant::now();
    let running = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    let pool = PgPool::connect(database_url).await?;
    let names = projection_service::projectors::ALL.to_vec();
    let mut first_done = None;
    loop {
        // The first projector to reach the end, and the last: the service has projected
        // the backlog only once every read model has it.
        let (fastest, slowest): (Option<i64>, Option<i64>) = sqlx::query_as(
            "select max(coalesce(c.position, 0)), min(coalesce(c.position, 0))
             from unnest($1::text[]) as p(name)
             left join projector_checkpoints c on c.projector = p.name",
        )
        .bind(&names)
        .fetch_one(&pool)
        .await?;
        if first_done.is_none() && fastest.unwrap_or(0) >= events {
            first_done = Some(started.elapsed());
        }
        if slowest.unwrap_or(0) >= events {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the projectors reached only {slowest:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    if let Some(first) = first_done {
        println!(
            "first read model had all {events} events after {first:?}: {:.0} events/s",
            events as f64 / first.as_secs_f64()
        );
    }
    println!(
        "projected {events} events into every read model in {elapsed:?}: {:.0} events/s",
        events as f64 / elapsed.as_secs_f64()
    );
    // CPU time does not depend on what else the machine runs, unlike the rate above.
    let service_cpu = cpu_seconds("self")
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let backends: Vec<i32> = sqlx::query_scalar(
        "select pid from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()",
    )
    .fetch_all(&pool)
    .await?;
    let postgres_cpu: Option<f64> = backends
        .iter()
        .map(|pid| cpu_seconds(&pid.to_string()))
        .sum();
    if let (Some(service), Some(postgres)) = (service_cpu, postgres_cpu) {
        println!(
            "cpu: service {service:.2} s, its postgres backends {postgres:.2} s \
             ({:.0} ms per 1,000 events in all)",
            (service + postgres) * 1_000_000.0 / events as f64
        );
    }
    shutdown.cancel();
    running.await??;
    Ok(())
}

/// User plus system CPU seconds of process `pid` (`self` for this one) from
/// `/proc/<pid>/stat`; `None` where that cannot be read (not Linux, Postgres elsewhere).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after it are space-separated:
    // utime and stime are the 12th and 13th after the closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Linux reports these in USER_HZ, 100 on every mainstream architecture.
    Some(ticks / 100.0)
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
