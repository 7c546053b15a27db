//! Building and running the service: what `main` does, and what the tests do on port 0.

pub use crate::config::Config;

use crate::checkpoint::Checkpoint;
use crate::config::DEFAULT_PORT;
use crate::consumer::{Consumer, Follower};
use crate::http::{self, HttpState};
use crate::lag;
use crate::projectors::{AnyProjector, Projector};
use anyhow::Context;
use async_nats::jetstream;
use sqlx::PgPool;
use std::time::Duration;
use synapse_shared::db;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long start-up waits for Postgres before giving up: long enough to ride out a
/// database that starts alongside the service, short enough to fail visibly.
const DATABASE_PATIENCE: Duration = Duration::from_secs(30);

/// The pool the projectors write through. Its transactions commit without waiting for
/// the WAL to reach disk (`synchronous_commit = off`): a Postgres crash can lose the
/// last fraction of a second of committed batches, but only whole transactions, each
/// with its checkpoint, so the projectors simply apply those messages again from the
/// stream. Read models are derived data; waiting for a flush per batch was a large part
/// of the time a batch took.
async fn read_model_pool(config: &Config) -> Result<PgPool, sqlx::Error> {
    db::connect_with_settings(
        config.read_database_url(),
        config.database.database_max_connections,
        &[("synchronous_commit", "off"), db::IDLE_IN_TRANSACTION],
    )
    .await
}

/// A connected, migrated service with its port bound, ready to run.
pub struct Application {
    config: Config,
    pool: PgPool,
    nats: async_nats::Client,
    listener: TcpListener,
    port: u16,
}

impl Application {
    /// Connect to the read database (applying the read-model migrations) and to NATS,
    /// and bind the HTTP port. The stream need not exist yet.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Install the metrics recorder before anything records.
        synapse_shared::telemetry::register(
            &["synapse_projector_undecodable_messages_total"],
            &["synapse_projection_active"],
        );
        let pool = read_model_pool(&config)
            .await
            .context("parsing the read database url")?;
        db::wait_until_reachable(&pool, DATABASE_PATIENCE)
            .await
            .context("connecting to the read database")?;
        db::migrate_read(&pool)
            .await
            .context("applying the read-model migrations")?;
        let nats = synapse_shared::nats::connect(&config.nats, "projection-service")
            .await
            .context("connecting to nats")?;
        let address = config.listen.or_default_port(DEFAULT_PORT);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let port = listener
            .local_addr()
            .context("reading the bound address")?
            .port();
        Ok(Self {
            config,
            pool,
            nats,
            listener,
            port,
        })
    }

    /// The bound HTTP port (the real one when configured with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve HTTP and run the projectors until `shutdown` is cancelled; each projector
    /// finishes the batch it is applying before this returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // A child token lets a failing HTTP server stop the projectors too, without
        // cancelling the caller's token.
        let stop = shutdown.child_token();
        let jetstream = jetstream::new(self.nats.clone());
        // One reader feeds every projector (each with its own checkpoint); each
        // projector's lag is sampled on its own.
        let mut followers = Vec::new();
        let mut samplers = Vec::new();
        for projector in AnyProjector::all() {
            let (progress, progress_seen) = watch::channel::<Option<Checkpoint>>(None);
            samplers.push(tokio::spawn(lag::sample(
                jetstream.clone(),
                self.config.nats.nats_stream.clone(),
                projector.name(),
                progress_seen,
                stop.clone(),
            )));
            followers.push(Follower {
                projector,
                progress,
            });
        }
        let consumer = Consumer::new(
            followers,
            self.pool.clone(),
            jetstream,
            self.config.nats.clone(),
            self.config.projector.clone(),
        );
        let consumer = tokio::spawn(consumer.run(stop.clone()));
        tracing::info!(port = self.port, "projection-service listening");

        let router = http::router(HttpState {
            pool: self.pool.clone(),
            nats: self.nats.clone(),
        });
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await;
        stop.cancel();
        let mut outcome = served.context("serving http");
        // Wait for every task before reporting, so none outlives `run_until_stopped`.
        outcome = outcome.and(consumer.await.context("the projection task failed"));
        for sampler in samplers {
            outcome = outcome.and(sampler.await.context("a lag sampler failed"));
        }
        outcome?;
        Ok(())
    }
}
