//! `bench read`: the read side with a large log. In one run, on a database and stream of
//! its own:
//! 1. fill the log through the command API (plants imported, rules executed, one
//!    execution rolled back) and let the relay publish it;
//! 2. projection throughput: a projection service started on the full stream, timed
//!    until every projector has caught up, against a raw ordered consumer;
//! 3. timeline and asset-history latency under concurrent clients;
//! 4. end-to-end lag from commit to read model at a sustained rate;
//! 5. live-feed delivery latency to many WebSocket clients at a sustained rate.

mod actors;
mod catch_up;
mod drive;
mod fill;
mod plant;
mod queries;
mod queries_only;
mod report;
mod sustained;
mod watermarks;
mod websocket;

use crate::environment::{with_environment, Endpoints};
use crate::scenario;
use crate::service::{cpu_seconds_of, postgres_cpu_seconds, Service};
use anyhow::{bail, Context};
use drive::DriveSettings;
pub use queries_only::{run as run_queries, ReadQueriesArgs};
use std::time::{Duration, Instant};
use sustained::Sustained;

#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Events in the log before anything is measured.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Assets per imported plant (default: a tenth of `--events`, at most 100,000).
    #[arg(long)]
    pub plant_assets: Option<usize>,
    /// Assets of the second plant, whose execution is rolled back (default: a tenth of
    /// a plant). The projection marks rolled-back events per `ROLLBACK` event, which
    /// is slow for large batches (see the README); raise this to measure that.
    #[arg(long)]
    pub rollback_assets: Option<usize>,
    /// Concurrent query clients.
    #[arg(long, default_value_t = 16)]
    pub query_clients: usize,
    /// Seconds of recorded query load (after a warm-up).
    #[arg(long, default_value_t = 30)]
    pub query_seconds: u64,
    /// Seconds of unrecorded query load first (cold caches of a fresh query service).
    #[arg(long, default_value_t = 3)]
    pub query_warmup_seconds: u64,
    /// After the main query load, the same load again with each of these numbers of
    /// clients (comma-separated), to show latency against concurrency: every client
    /// sends its next request as soon as the last one answered, so on a small machine
    /// the main load measures saturation, not one request's latency.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    pub query_sweep: Vec<usize>,
    /// Events per second during the lag measurement.
    #[arg(long, default_value_t = 2_000.0)]
    pub lag_rate: f64,
    #[arg(long, default_value_t = 30)]
    pub lag_seconds: u64,
    /// WebSocket clients subscribed during the live-feed measurement.
    #[arg(long, default_value_t = 500)]
    pub ws_clients: usize,
    /// Events per second during the live-feed measurement.
    #[arg(long, default_value_t = 2_000.0)]
    pub ws_rate: f64,
    #[arg(long, default_value_t = 20)]
    pub ws_seconds: u64,
    /// One WebSocket client in this many follows a whole discipline (a quarter of the
    /// flow); the others follow one asset each.
    #[arg(long, default_value_t = 10)]
    pub ws_discipline_every: usize,
    /// Events per import command of the sustained load (rows + 3).
    #[arg(long, default_value_t = 50)]
    pub import_events: u64,
    /// Milliseconds between watermark samples (the resolution of the lag figures).
    #[arg(long, default_value_t = 5)]
    pub poll_ms: u64,
    /// Also print the results as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Leave the benchmark database behind (its name is printed) to profile queries on
    /// the same data; drop it yourself afterwards.
    #[arg(long)]
    pub keep_database: bool,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

/// Assets whose changes the sustained load makes and half the WebSocket clients watch.
const WATCHED_ASSETS: usize = 250;
/// Plant numbers of the devices the sustained loads import (far above the fill's).
const LAG_PLANT: usize = 900;
const LIVE_PLANT: usize = 901;
/// How long the relay may take to publish the filled log.
const RELAY_CATCH_UP: Duration = Duration::from_secs(900);
/// After the driver stopped and the read models caught up, how long live-feed clients
/// keep reading (the query service's hub may trail the projection).
const WS_SETTLE: Duration = Duration::from_secs(2);

/// Everything one run measured.
pub struct Measured {
    pub filled: fill::Filled,
    pub relay_wait: Duration,
    pub catch_up: catch_up::CatchUp,
    /// How long `vacuum analyze` of the read models took before the queries.
    pub maintenance: Duration,
    pub queries: queries::Results,
    pub query_clients: usize,
    /// CPU used during the query load (warm-up included).
    pub query_cpu: CpuUse,
    /// The same load with other numbers of clients (`--query-sweep`).
    pub query_sweep: Vec<(usize, queries::Results)>,
    pub lag: Sustained,
    pub lag_rate: f64,
    pub live: Live,
    pub total: Duration,
}

/// CPU seconds used so far by a service, by every Postgres process of the machine and
/// by the benchmark itself; and the wall time they were read at.
pub struct CpuUse {
    pub service: f64,
    pub postgres: f64,
    pub bench: f64,
    pub at: Instant,
    pub wall: Duration,
}

impl CpuUse {
    fn now(service: &Service) -> anyhow::Result<Self> {
        Ok(Self {
            service: service.cpu_seconds()?,
            postgres: postgres_cpu_seconds(),
            bench: cpu_seconds_of(std::process::id()).context("reading the bench's CPU time")?,
            at: Instant::now(),
            wall: Duration::ZERO,
        })
    }

    /// What was used between `earlier` and this reading.
    fn since(&self, earlier: &CpuUse) -> Self {
        Self {
            service: self.service - earlier.service,
            postgres: self.postgres - earlier.postgres,
            bench: self.bench - earlier.bench,
            at: self.at,
            wall: self.at - earlier.at,
        }
    }
}

/// The live-feed phase.
pub struct Live {
    pub clients: usize,
    pub rate: f64,
    /// One client in this many followed a discipline.
    pub discipline_every: usize,
    pub connect_time: Duration,
    pub run: Sustained,
    pub all: sustained::Deliveries,
    pub discipline: sustained::Deliveries,
    pub asset: sustained::Deliveries,
    pub lagged: usize,
    pub closed_early: usize,
    pub messages: usize,
}

pub async fn run(args: ReadArgs) -> anyhow::Result<()> {
    if args.events < 10_000 {
        bail!("--events must be at least 10,000");
    }
    let plant_assets = args
        .plant_assets
        .unwrap_or((args.events / 10).min(100_000) as usize);
    if plant_assets < 1_000 {
        bail!("--plant-assets must be at least 1,000");
    }
    let sizes = fill::Sizes {
        plant: plant_assets,
        rolled_back: args.rollback_assets.unwrap_or(plant_assets / 10),
    };
    if args.import_events < 4 {
        bail!("--import-events must be at least 4 (one row and the batch events)");
    }
    let started = Instant::now();
    let measured = with_environment(&args.endpoints, async |environment| {
        let secret = actors::secret();
        let actors = actors::Actors::new(&secret)?;
        environment.jwt_secret = Some(secret);
        environment.keep_database = args.keep_database;
        environment.start_service(true).await?;

        eprintln!(
            "read: filling the log with {} events ({} assets per plant, {} in the rolled-back one) ...",
            args.events, sizes.plant, sizes.rolled_back
        );
        let filled = fill::fill(environment, &actors, args.events, sizes).await?;
        let relay_wait = scenario::wait_for_relay(environment, RELAY_CATCH_UP).await?;
        eprintln!(
            "  filled in {:.1} s; the relay needed {:.1} s more",
            filled.elapsed.as_secs_f64(),
            relay_wait.as_secs_f64()
        );

        eprintln!("read: projection catch-up on {} events ...", filled.events);
        let catch_up = catch_up::measure(environment).await?;
        eprintln!("  caught up in {:.1} s", catch_up.elapsed.as_secs_f64());

        let pool = environment.pool().await?;
        let maintenance = maintain_read_models(&pool).await?;
        environment.start_query().await?;
        let query_url = environment.query()?.base_url.clone();
        let samples = queries::Samples::read(&pool).await?;
        let watched: Vec<uuid::Uuid> = samples
            .assets
            .iter()
            .take(WATCHED_ASSETS)
            .copied()
            .collect();
        eprintln!(
            "read: {} query clients for {} s ...",
            args.query_clients, args.query_seconds
        );
        let load = queries::Load {
            clients: args.query_clients,
            duration: Duration::from_secs(args.query_seconds),
            warmup: Duration::from_secs(args.query_warmup_seconds),
        };
        let samples = std::sync::Arc::new(samples);
        let cpu_before = CpuUse::now(environment.query()?)?;
        let queries = queries::run(&query_url, samples.clone(), &load).await?;
        let query_cpu = CpuUse::now(environment.query()?)?.since(&cpu_before);
        check_queries(&queries)?;
        let mut query_sweep = Vec::new();
        for &clients in &args.query_sweep {
            eprintln!("read: {clients} query clients for {} s ...", args.query_seconds);
            let load = queries::Load { clients, ..load };
            let results = queries::run(&query_url, samples.clone(), &load).await?;
            check_queries(&results)?;
            query_sweep.push((clients, results));
        }

        let command_url = environment.service()?.base_url.clone();
        let poll = Duration::from_millis(args.poll_ms.max(1));
        eprintln!(
            "read: end-to-end lag at {} events/s for {} s ...",
            args.lag_rate, args.lag_seconds
        );
        let database_url = environment.database_url.clone();
        let sustain = async |rate: f64, seconds: u64, plant: usize| {
            let settings = DriveSettings {
                rate,
                duration: Duration::from_secs(seconds),
                import_events: args.import_events,
                plant,
                change_targets: watched.clone(),
            };
            sustained::run(
                &pool,
                &database_url,
                poll,
                &command_url,
                &actors.operator,
                &settings,
            )
            .await
        };
        let lag = sustain(args.lag_rate, args.lag_seconds, LAG_PLANT).await?;

        eprintln!(
            "read: {} WebSocket clients at {} events/s for {} s ...",
            args.ws_clients, args.ws_rate, args.ws_seconds
        );
        let ws_url = format!("{}/ws", query_url.replacen("http://", "ws://", 1));
        let audience = websocket::Audience {
            discipline_every: args.ws_discipline_every,
            watched_assets: watched.clone(),
        };
        let subscriptions = (0..args.ws_clients)
            .map(|client| audience.subscription(client))
            .collect();
        let subscribers = websocket::connect(&ws_url, subscriptions).await?;
        let connect_time = subscribers.connect_time;
        let arrivals =
            websocket::StreamArrivals::start(&environment.endpoints.nats_url, &environment.stream)
                .await?;
        let run = sustain(args.ws_rate, args.ws_seconds, LIVE_PLANT).await?;
        tokio::time::sleep(WS_SETTLE).await;
        let received = subscribers.finish().await?;
        let arrivals = arrivals.finish().await?;
        let deliveries = |include: &dyn Fn(&websocket::Received) -> bool| {
            sustained::deliveries(
                &received,
                &run.watermarks.log,
                &arrivals,
                run.before,
                run.after,
                include,
            )
        };
        let live = Live {
            clients: args.ws_clients,
            rate: args.ws_rate,
            connect_time,
            all: deliveries(&|_| true),
            discipline: deliveries(&|r| audience.follows_discipline(r.client)),
            asset: deliveries(&|r| !audience.follows_discipline(r.client)),
            discipline_every: args.ws_discipline_every,
            lagged: received.iter().filter(|r| r.lagged).count(),
            closed_early: received.iter().filter(|r| r.closed_early).count(),
            messages: received.iter().map(|r| r.deliveries.len()).sum(),
            run,
        };
        Ok(Measured {
            filled,
            relay_wait,
            catch_up,
            maintenance,
            queries,
            query_clients: args.query_clients,
            query_cpu,
            query_sweep,
            lag,
            lag_rate: args.lag_rate,
            live,
            total: Duration::ZERO,
        })
    })
    .await
    .context("the read benchmark failed")?;
    let mut measured = measured;
    measured.total = started.elapsed();
    report::print(&mut measured);
    if args.json {
        crate::report::json_line(&report::json(&mut measured));
    }
    Ok(())
}

fn check_queries(results: &queries::Results) -> anyhow::Result<()> {
    match &results.first_error {
        Some(error) => bail!(
            "{} query requests failed; the first: {error}",
            results.errors
        ),
        None => Ok(()),
    }
}

/// The read models' tables, for the `vacuum analyze` the queries need.
const READ_MODEL_TABLES: &str = "rm_events, rm_aggregates, rm_batches, rm_batch_rules, \
     rm_disciplines, rm_discipline_batches, projector_checkpoints";

/// `vacuum analyze` the read models: what autovacuum does after a bulk load in
/// production (statistics for the planner, the visibility map for index-only scans).
/// This machine's Postgres runs with `autovacuum = off`, so without it the planner would
/// guess on tables it has never seen.
async fn maintain_read_models(pool: &sqlx::PgPool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    sqlx::query(&format!("vacuum analyze {READ_MODEL_TABLES}"))
        .execute(pool)
        .await
        .context("vacuum analyze of the read models")?;
    Ok(started.elapsed())
}
