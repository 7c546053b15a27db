//! Running the services in-process on port 0, exactly as their `main` does.

use crate::resources::TestDatabase;
use query_service::live::LiveLimits;
use synapse_shared::auth::AuthArgs;
use synapse_shared::config::{DatabaseArgs, ListenArgs, NatsArgs};
use synapse_shared::shutdown::CancellationToken;
use tokio::task::JoinHandle;

/// A service running in this process.
pub struct Running {
    pub port: u16,
    pub shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The service's OpenAPI document.
    pub async fn openapi(&self, http: &reqwest::Client) -> anyhow::Result<serde_json::Value> {
        Ok(http
            .get(self.url("/openapi.json"))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Cancel and wait until the service has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(handle) => handle.await?,
            None => Ok(()),
        }
    }

    /// Stop the service abruptly, as a crash would: its tasks are aborted mid-work.
    pub fn kill(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
        self.shutdown.cancel();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn database_args(database: &TestDatabase) -> DatabaseArgs {
    DatabaseArgs {
        database_url: database.url.clone(),
        database_max_connections: 10,
    }
}

fn any_port() -> ListenArgs {
    ListenArgs {
        listen_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
    }
}

/// Start the command service (with its relay when `relay` is true), trusting tokens
/// signed with the test secret.
pub async fn command_service(
    database: &TestDatabase,
    nats: &NatsArgs,
    relay: bool,
) -> anyhow::Result<Running> {
    command_service_with_auth(database, nats, relay, crate::auth::args()).await
}

/// Start the command service with the given authentication settings.
pub async fn command_service_with_auth(
    database: &TestDatabase,
    nats: &NatsArgs,
    relay: bool,
    auth: AuthArgs,
) -> anyhow::Result<Running> {
    let config = command_service::Config {
        database: database_args(database),
        nats: nats.clone(),
        listen: any_port(),
        auth,
        relay_enabled: relay,
        batch_stale_after_secs: 30,
    };
    let app = command_service::Application::build(config).await?;
    let port = app.port();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Ok(Running {
        port,
        shutdown,
        handle: Some(handle),
    })
}

/// Start the projection service.
pub async fn projection_service(
    database: &TestDatabase,
    nats: &NatsArgs,
) -> anyhow::Result<Running> {
    let config =
        projection_service::startup::Config::new(database_args(database), nats.clone(), any_port());
    let app = projection_service::startup::Application::build(config).await?;
    let port = app.port();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Ok(Running {
        port,
        shutdown,
        handle: Some(handle),
    })
}

/// Start the query service, trusting tokens signed with the test secret.
pub async fn query_service(database: &TestDatabase, nats: &NatsArgs) -> anyhow::Result<Running> {
    query_service_with_limits(database, nats, LiveLimits::default()).await
}

/// Start the query service with the live feed's buffers sized by `limits`.
pub async fn query_service_with_limits(
    database: &TestDatabase,
    nats: &NatsArgs,
    limits: LiveLimits,
) -> anyhow::Result<Running> {
    let mut config =
        query_service::startup::Config::new(database_args(database), nats.clone(), any_port())
            .with_auth(crate::auth::args());
    config.live = limits;
    start_query_service(config).await
}

/// Start the query service with the test secret and these browser origins allowed.
pub async fn query_service_with_origins(
    database: &TestDatabase,
    nats: &NatsArgs,
    origins: &[&str],
) -> anyhow::Result<Running> {
    let mut auth = crate::auth::args();
    auth.allowed_origins = origins.iter().map(|origin| (*origin).to_owned()).collect();
    let config =
        query_service::startup::Config::new(database_args(database), nats.clone(), any_port())
            .with_auth(auth);
    start_query_service(config).await
}

async fn start_query_service(config: query_service::startup::Config) -> anyhow::Result<Running> {
    let app = query_service::startup::Application::build(config).await?;
    let port = app.port();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Ok(Running {
        port,
        shutdown,
        handle: Some(handle),
    })
}

/// The whole system on one database and one isolated stream.
/// The command service alone (relay off), with a client and a pool on its database.
pub struct CommandOnly {
    pub database: TestDatabase,
    pub nats: crate::TestNats,
    pub command: Running,
    pub http: reqwest::Client,
    pub pool: sqlx::PgPool,
}

impl CommandOnly {
    pub async fn start() -> anyhow::Result<Self> {
        let database = TestDatabase::create().await?;
        let nats = crate::TestNats::new();
        let command = command_service(&database, &nats.args, false).await?;
        let pool = sqlx::PgPool::connect(&database.url).await?;
        Ok(Self {
            database,
            nats,
            command,
            http: crate::client::http_client(),
            pool,
        })
    }
}

pub struct System {
    pub database: TestDatabase,
    pub nats: crate::TestNats,
    pub command: Running,
    pub projection: Running,
    pub query: Running,
    pub http: reqwest::Client,
}

impl System {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_limits(LiveLimits::default()).await
    }

    /// The whole system, its query service's live feed sized by `limits`.
    pub async fn start_with_limits(limits: LiveLimits) -> anyhow::Result<Self> {
        let database = TestDatabase::create().await?;
        let nats = crate::TestNats::new();
        let command = command_service(&database, &nats.args, true).await?;
        let projection = projection_service(&database, &nats.args).await?;
        let query = query_service_with_limits(&database, &nats.args, limits).await?;
        Ok(Self {
            database,
            nats,
            command,
            projection,
            query,
            http: crate::client::http_client(),
        })
    }

    /// Wait until every projector has applied everything in the log (bounded).
    pub async fn wait_for_projection(&self) -> anyhow::Result<()> {
        wait_for_projection(&self.database.url).await
    }
}

/// Wait (up to 30 s) until every projector has applied everything in the log.
pub async fn wait_for_projection(database_url: &str) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    let head = synapse_shared::event_log::head(&pool).await?;
    let names: Vec<&str> = projection_service::projectors::ALL.to_vec();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // A projector without a checkpoint row has applied nothing yet: the least
        // position counts it as 0 through the outer join.
        let (projected,): (Option<i64>,) = sqlx::query_as(
            "select min(coalesce(c.position, 0))
             from unnest($1::text[]) as p(name)
             left join projector_checkpoints c on c.projector = p.name",
        )
        .bind(&names)
        .fetch_one(&pool)
        .await?;
        if projected.unwrap_or(0) >= head {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("projection reached {projected:?} of {head} within 30 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
