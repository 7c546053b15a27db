//! Steps the benchmarks share: import the plant, define the rule, run it, and wait for
//! the relay.

use crate::api::{self, Timed};
use crate::environment::Environment;
use crate::plant;
use crate::profile::{Profile, Sampler};
use crate::service::postgres_cpu_seconds;
use anyhow::{bail, Context};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// The plants a benchmark runs on: a small one first (to compare peak memory with), then
/// the full one.
#[derive(Debug, clap::Args)]
pub struct PlantSizes {
    /// Assets in the full plant (50 MCCs, the rest motors; half the motors match).
    #[arg(long, default_value_t = 100_000)]
    pub assets: usize,
    /// Assets in the small plant run first, to compare peak memory; 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    pub small_assets: usize,
}

impl PlantSizes {
    /// The sizes to run, smallest first.
    pub fn list(&self) -> anyhow::Result<Vec<usize>> {
        if self.assets <= plant::MCCS {
            bail!("--assets must be more than {}", plant::MCCS);
        }
        let mut sizes = Vec::new();
        if self.small_assets > plant::MCCS && self.small_assets < self.assets {
            sizes.push(self.small_assets);
        }
        sizes.push(self.assets);
        Ok(sizes)
    }
}

/// What importing the plant took.
pub struct Imported {
    pub rows: usize,
    pub elapsed: Duration,
    /// Peak memory of the service that ran the import.
    pub peak_kib: u64,
}

/// How long a relay may take to publish an imported plant.
pub const RELAY_CATCH_UP: Duration = Duration::from_secs(600);

/// Start a service, import `assets` rows (and let the relay publish them), then restart
/// the service so later peaks are the execution's own (parsing 100,000 rows needs
/// memory an execution does not).
pub async fn import_plant(
    environment: &mut Environment,
    assets: usize,
    relay: bool,
) -> anyhow::Result<Imported> {
    environment.start_service(relay).await?;
    let url = environment.service()?.url("/assets/import");
    let mut created = 0;
    let mut elapsed = Duration::ZERO;
    for csv in plant::csv_files(assets, plant::IMPORT_ROWS) {
        let Timed {
            body,
            elapsed: took,
        } = api::import_csv(&environment.http, &url, csv).await?;
        created += body["created"].as_u64().unwrap_or(0) as usize;
        elapsed += took;
    }
    if created != assets {
        bail!("the import created {created} assets, not {assets}");
    }
    if relay {
        // Let this service's relay publish the import, so the next service starts with
        // nothing to catch up on and the execution competes only with publishing its
        // own events.
        wait_for_relay(environment, RELAY_CATCH_UP).await?;
    }
    let peak_kib = environment.service()?.peak_memory_kib()?;
    environment.start_service(relay).await?;
    Ok(Imported {
        rows: assets,
        elapsed,
        peak_kib,
    })
}

/// Define the benchmark rule; its id.
pub async fn define_rule(environment: &Environment) -> anyhow::Result<String> {
    define(environment, &plant::rule()).await
}

/// Define `rule`; its id.
pub async fn define(environment: &Environment, rule: &serde_json::Value) -> anyhow::Result<String> {
    let url = environment.service()?.url("/rules");
    let answer = api::post_json(&environment.http, &url, rule, "POST /rules").await?;
    Ok(api::field(&answer.body, "id")?.to_owned())
}

/// What running the rule took.
pub struct Executed {
    pub correlation_id: Uuid,
    pub elapsed: Duration,
    /// Events of the batch in the log.
    pub events: i64,
    pub executed: u64,
    pub peak_kib: u64,
    /// CPU seconds of the service during the request.
    pub service_cpu: f64,
    /// CPU seconds of all postgres processes during the request.
    pub postgres_cpu: f64,
    /// What the service's database connections did meanwhile, if sampled.
    pub profile: Option<Profile>,
}

/// `POST /rules/execute {"rule_ids": [rule_id], "wait": true}`, timed.
pub async fn execute(
    environment: &mut Environment,
    rule_id: &str,
    profile: bool,
) -> anyhow::Result<Executed> {
    let sampler = match profile {
        true => Some(Sampler::start(&environment.database_url).await?),
        false => None,
    };
    let service = environment.service()?;
    let url = service.url("/rules/execute");
    let service_cpu_before = service.cpu_seconds()?;
    let postgres_cpu_before = postgres_cpu_seconds();
    let body = json!({"rule_ids": [rule_id], "wait": true});
    let answer = api::post_json(&environment.http, &url, &body, "POST /rules/execute").await?;
    let service_cpu = service.cpu_seconds()? - service_cpu_before;
    let postgres_cpu = postgres_cpu_seconds() - postgres_cpu_before;
    let peak_kib = service.peak_memory_kib()?;
    let profile = match sampler {
        Some(sampler) => Some(sampler.finish().await?),
        None => None,
    };
    if answer.body["status"] != "completed" {
        bail!("the execution did not complete: {}", answer.body);
    }
    let correlation_id: Uuid = api::field(&answer.body, "correlation_id")?
        .parse()
        .context("the execution's correlation_id is not a UUID")?;
    let executed = answer.body["totals"]["executed"].as_u64().unwrap_or(0);
    let pool = environment.pool().await?;
    let (events,): (i64,) =
        sqlx::query_as("select count(*) from workflow_events where correlation_id = $1")
            .bind(correlation_id)
            .fetch_one(&pool)
            .await?;
    Ok(Executed {
        correlation_id,
        elapsed: answer.elapsed,
        events,
        executed,
        peak_kib,
        service_cpu,
        postgres_cpu,
        profile,
    })
}

/// Wait until the environment's stream holds every event of the log (the relay has
/// caught up); how long that took.
pub async fn wait_for_relay(
    environment: &mut Environment,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let pool = environment.pool().await?;
    let (events,): (i64,) = sqlx::query_as("select count(*) from workflow_events")
        .fetch_one(&pool)
        .await?;
    crate::stream::wait_for_messages(
        &environment.endpoints.nats_url,
        &environment.stream,
        events as u64,
        timeout,
    )
    .await
}

/// Seconds as `12.345`.
pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Rate per second.
pub fn per_second(count: f64, duration: Duration) -> f64 {
    if duration.is_zero() {
        return 0.0;
    }
    count / duration.as_secs_f64()
}
