//! Building and running the command service; `main` and the tests share this.

use crate::config::{Config, DEFAULT_PORT};
use crate::http::{self, AppState};
use crate::relay::Relay;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use synapse_shared::auth::Authenticator;
use synapse_shared::shutdown::CancellationToken;
use synapse_shared::{db, nats};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// A built, bound, not yet running command service.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    relay: Option<Relay>,
    /// Silence after which a running batch counts as abandoned.
    stale_after: Duration,
}

/// The cost the planner gives a random page read against a sequential one: 1.1, the
/// usual setting for data on SSD or in memory, where Postgres' default (4) assumes
/// spinning disks. With the default, looking up a chunk's 500 cable tags in 20,000
/// cables was planned as a scan of every cable (5.2 ms) rather than 500 probes of the
/// tag index (1.6 ms), and grew with the table.
const RANDOM_PAGE_COST: (&str, &str) = ("random_page_cost", "1.1");

/// How long shutdown waits for background executions to end their batches (within
/// `deploy/run.sh`'s 15 s between SIGTERM and SIGKILL).
const EXECUTIONS_GRACE: Duration = Duration::from_secs(10);

/// The fewest pooled connections the command service works with.
pub const MIN_CONNECTIONS: u32 = 2;

impl Application {
    /// Connect to Postgres (waiting up to 30 s for it), apply migrations, connect to
    /// NATS (in the background if it is down), and bind the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // First, so a service that would run without authentication by accident
        // refuses to start before touching anything.
        let auth = Authenticator::from_args(&config.auth).context("configuring authentication")?;
        // A dry run holds two connections at once (its overlay and its plan's rows): with
        // one, every dry run waited for a second and answered 503 after 5 s.
        anyhow::ensure!(
            config.database.database_max_connections >= MIN_CONNECTIONS,
            "DATABASE_MAX_CONNECTIONS is {}; the command service needs at least \
             {MIN_CONNECTIONS} (a dry run holds two at once)",
            config.database.database_max_connections
        );
        // Install the metrics recorder before anything records (the relay, the first
        // request): until then `metrics` macros record into nothing.
        synapse_shared::telemetry::register(
            &[
                "synapse_events_appended_total",
                "synapse_relay_published_total",
                "synapse_execution_chunks_replanned_total",
            ],
            &[],
        );
        let pool = db::connect_with_settings(
            &config.database.database_url,
            config.database.database_max_connections,
            &[RANDOM_PAGE_COST, db::IDLE_IN_TRANSACTION],
        )
        .await
        .context("configuring the database pool")?;
        db::wait_until_reachable(&pool, Duration::from_secs(30))
            .await
            .context("reaching postgres")?;
        db::migrate_command(&pool)
            .await
            .context("applying command migrations")?;
        let client = nats::connect(&config.nats, "command-service")
            .await
            .context("configuring the nats connection")?;
        let address = config.listen.or_default_port(DEFAULT_PORT);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let relay = config.relay_enabled.then(|| Relay {
            pool: pool.clone(),
            database_url: config.database.database_url.clone(),
            nats: config.nats.clone(),
            client: client.clone(),
        });
        Ok(Self {
            listener,
            state: AppState {
                pool,
                nats: client,
                shutdown: CancellationToken::new(),
                executions: tokio_util::task::TaskTracker::new(),
                auth,
                wide: Arc::new(Semaphore::new(http::wide_permits(
                    config.database.database_max_connections,
                ))),
                cascades: Arc::new(tokio::sync::Mutex::new(())),
            },
            relay,
            stale_after: Duration::from_secs(config.batch_stale_after_secs),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|address| address.port())
            .unwrap_or(0)
    }

    /// Serve until `shutdown` is cancelled, then drain requests and stop the relay
    /// after its current round.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let port = self.port();
        let executions = self.state.shutdown.clone();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            signal.cancelled().await;
            executions.cancel();
        });
        let relay = self
            .relay
            .map(|relay| tokio::spawn(relay.run(shutdown.clone())));
        tokio::spawn(crate::recovery::sweep(
            self.state.pool.clone(),
            self.stale_after,
            shutdown.clone(),
        ));
        self.state
            .auth
            .warn_while_disabled("command-service", shutdown.clone());
        tracing::info!(port, "command service listening");
        let running = self.state.executions.clone();
        let router = http::router(self.state);
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("serving http")?;
        // Background executions stop at their next chunk and record their batch as
        // failed; without this wait the process ended first and left it `running`
        // until a replica's sweep found it.
        running.close();
        if tokio::time::timeout(EXECUTIONS_GRACE, running.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "executions still running after {} s; the sweep ends their batches",
                EXECUTIONS_GRACE.as_secs()
            );
        }
        if let Some(relay) = relay {
            relay.await.context("joining the relay")?;
        }
        Ok(())
    }
}
