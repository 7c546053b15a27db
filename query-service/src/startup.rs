//! Assembly of the service: what `main` and the tests both build.

pub use crate::config::{Config, DEFAULT_PORT};

use crate::http;
use crate::live::consumer;
use crate::live::hub::Hub;
use crate::state::AppState;
use anyhow::Context;
use std::time::Duration;
use synapse_shared::auth::Authenticator;
use synapse_shared::config::NatsArgs;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for WebSocket sessions to send their close frames: each
/// write is already bounded, this only caps the total.
const SESSION_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A built service: connected, migrated and bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    port: u16,
    state: AppState,
    jetstream: async_nats::jetstream::Context,
    nats: NatsArgs,
}

/// Every statement is planned once per connection, not at every execution.
///
/// A timeline page is planned against the 14 indexes of `rm_events`: 0.3-0.5 ms,
/// several times its execution (0.03-0.2 ms for most pages). The pages are written so
/// that their `order by` only the driving index gives without a sort
/// ([`crate::read::scan`]), so the plan does not depend on the values. With 16 clients
/// on a million events this took the service from 2,182 to 2,710 requests/s, timeline
/// p99 from 20.7 to 15.2 ms (`bench read-queries`, same database, minutes apart).
const GENERIC_PLANS: (&str, &str) = ("plan_cache_mode", "force_generic_plan");

impl Application {
    /// Connect to the read database (applying the read-model migrations, which is
    /// idempotent, unless told not to) and to NATS, and bind the listening socket.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        // First, so a service that would run without authentication by accident refuses
        // to start before it connects to anything.
        let auth = Authenticator::from_args(&config.auth).context("configuring authentication")?;
        // Install the recorder before anything records (the WS client gauge).
        synapse_shared::telemetry::register(
            &["synapse_ws_lagged_clients_total"],
            &["synapse_ws_clients"],
        );
        let pool = synapse_shared::db::connect_with_settings(
            config.read_database_url(),
            config.database.database_max_connections,
            &[GENERIC_PLANS],
        )
        .await
        .context("configuring the read database pool")?;
        prepare_read_models(&pool, config.run_migrations).await?;
        let client = synapse_shared::nats::connect(&config.nats, "query-service")
            .await
            .context("connecting to NATS")?;
        let jetstream = async_nats::jetstream::new(client.clone());
        let address = config.listen.or_default_port(DEFAULT_PORT);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let port = listener
            .local_addr()
            .context("reading the bound address")?
            .port();
        let state = AppState {
            pool,
            nats: client,
            hub: Hub::new(&config.nats.nats_stream, &config.live),
            live_limits: config.live,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            auth,
        };
        Ok(Application {
            listener,
            port,
            state,
            jetstream,
            nats: config.nats,
        })
    }

    /// The port the service listens on (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve until `shutdown` is cancelled: then stop accepting, close every WebSocket
    /// (axum's graceful shutdown does not wait for them) and stop following NATS.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            listener,
            state,
            jetstream,
            nats,
            ..
        } = self;
        let stop = state.shutdown.clone();
        state
            .auth
            .warn_while_disabled("query-service", stop.clone());
        let hub_follower = tokio::spawn(consumer::run(
            state.hub.clone(),
            jetstream,
            nats,
            stop.clone(),
        ));
        let relay_signal = {
            let stop = stop.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                stop.cancel();
            })
        };
        let sessions = state.sessions.clone();
        let served = axum::serve(listener, http::router(state))
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await
            .context("serving HTTP");
        // However serving ended, end everything else too.
        stop.cancel();
        relay_signal.abort();
        sessions.close();
        if tokio::time::timeout(SESSION_DRAIN_TIMEOUT, sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("some WebSocket sessions did not close in time");
        }
        if let Err(error) = hub_follower.await {
            tracing::error!(%error, "live hub follower panicked");
        }
        served
    }
}

/// Apply the read-model migrations, or with `run_migrations` off (a replica on a read
/// replica) check that someone else has: serving from tables without a column this
/// version reads would fail every request instead of failing once, here.
async fn prepare_read_models(pool: &sqlx::PgPool, run_migrations: bool) -> anyhow::Result<()> {
    if run_migrations {
        return synapse_shared::db::migrate_read(pool)
            .await
            .context("applying the read-model migrations");
    }
    let missing = synapse_shared::db::missing_read_migrations(pool)
        .await
        .context("reading which read-model migrations the database has")?;
    if !missing.is_empty() {
        anyhow::bail!(
            "RUN_MIGRATIONS is false but the read database lacks read-model migrations {missing:?}; \
             start the projection service on the primary (it applies them) and let replication catch up"
        );
    }
    tracing::info!("read-model migrations not run (RUN_MIGRATIONS=false); all present");
    Ok(())
}
