//! `bench read-queries`: only the query load of `bench read`, against a query service
//! that is already running on a database that already holds a log (one kept by
//! `bench read --keep-database`). For comparing query-side changes on the same data
//! within minutes, without refilling a million events.

use super::queries::{self, Load, Samples};
use super::report;
use anyhow::{bail, Context};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ReadQueriesArgs {
    /// The database the query service reads (for the sample of ids and times).
    #[arg(long)]
    pub database_url: String,
    /// The running query service.
    #[arg(long)]
    pub query_url: String,
    /// One load per number of concurrent clients, in this order (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [16, 1, 4])]
    pub clients: Vec<usize>,
    /// Seconds of recorded load per number of clients.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Seconds of unrecorded load first.
    #[arg(long, default_value_t = 3)]
    pub warmup_seconds: u64,
}

pub async fn run(args: ReadQueriesArgs) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(&args.database_url)
        .await
        .with_context(|| format!("connecting to {}", args.database_url))?;
    let samples = Arc::new(Samples::read(&pool).await?);
    for &clients in &args.clients {
        let load = Load {
            clients,
            duration: Duration::from_secs(args.seconds),
            warmup: Duration::from_secs(args.warmup_seconds),
        };
        let mut results = queries::run(&args.query_url, samples.clone(), &load).await?;
        if let Some(error) = &results.first_error {
            bail!(
                "{} requests failed, the first with: {error}",
                results.errors
            );
        }
        let requests_per_second = results.requests_per_second();
        let timeline = results.timeline.latencies.summary();
        let history = results.history.latencies.summary();
        println!(
            "\n{clients} clients: {requests_per_second:.0} requests/s, timeline p50 / p99 {:.1} / {:.1} ms, history p50 / p99 {:.1} / {:.1} ms",
            timeline.p50_ms, timeline.p99_ms, history.p50_ms, history.p99_ms
        );
        report::print_shape_table(&mut results);
    }
    Ok(())
}
