//! One benchmark's private world: a fresh database, its own JetStream stream and subject
//! prefix, and at most one service of each kind at a time. [`Environment::teardown`]
//! removes all of it, and runs whether the benchmark succeeded or not.

use crate::service::{Auth, Kind, Service, ServiceSettings};
use anyhow::Context;
use sqlx::{Connection, PgConnection, PgPool};
use std::path::PathBuf;
use std::time::Duration;

/// Where Postgres and NATS are, from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoints {
    /// Postgres server URL without a database name; the benchmark creates and drops
    /// its own database there.
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub postgres_url: String,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// `RUST_LOG` of the service children; `command_service=debug` to profile.
    #[arg(long, default_value = "warn")]
    pub service_log: String,
}

/// A database, a stream and maybe running services, all named `synapse_bench_<random>`.
pub struct Environment {
    pub name: String,
    pub endpoints: Endpoints,
    pub database_url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub http: reqwest::Client,
    pub pool: Option<PgPool>,
    /// The command service.
    pub service: Option<Service>,
    pub projection: Option<Service>,
    pub query: Option<Service>,
    /// When set, the command service checks tokens signed with this secret (so events
    /// name real actors) instead of running with `AUTH_DISABLED=true`.
    pub jwt_secret: Option<String>,
    /// Leave the database behind at teardown (to profile queries on the same data).
    pub keep_database: bool,
    /// How many services were started, to name their log files.
    starts: u32,
    database_created: bool,
}

impl Environment {
    /// Create the database (nothing else exists until a service starts).
    pub async fn create(endpoints: &Endpoints) -> anyhow::Result<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("synapse_bench_{}", &suffix[..12]);
        let http = reqwest::Client::builder()
            // An execution over 100,000 assets answers when it is done: allow minutes.
            .timeout(Duration::from_secs(30 * 60))
            .build()
            .context("building the http client")?;
        let mut environment = Self {
            database_url: format!("{}/{name}", endpoints.postgres_url.trim_end_matches('/')),
            stream: format!("BENCH_{}", name.to_ascii_uppercase()),
            subject_prefix: format!("{name}.events"),
            name,
            endpoints: endpoints.clone(),
            http,
            pool: None,
            service: None,
            projection: None,
            query: None,
            jwt_secret: None,
            keep_database: false,
            starts: 0,
            database_created: false,
        };
        let mut admin = environment.admin().await?;
        sqlx::query(&format!("create database {}", environment.name))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {}", environment.name))?;
        environment.database_created = true;
        admin.close().await.ok();
        Ok(environment)
    }

    async fn admin(&self) -> anyhow::Result<PgConnection> {
        let url = format!(
            "{}/postgres",
            self.endpoints.postgres_url.trim_end_matches('/')
        );
        PgConnection::connect(&url)
            .await
            .with_context(|| format!("connecting to {url}"))
    }

    /// A small pool on the benchmark database (after a service has migrated it).
    pub async fn pool(&mut self) -> anyhow::Result<PgPool> {
        if let Some(pool) = &self.pool {
            return Ok(pool.clone());
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.database_url)
            .await
            .with_context(|| format!("connecting to {}", self.database_url))?;
        self.pool = Some(pool.clone());
        Ok(pool)
    }

    /// Start a command service on this environment, stopping the previous one first.
    /// Each start is a fresh process: its peak memory counts from zero.
    pub async fn start_service(&mut self, relay: bool) -> anyhow::Result<&Service> {
        self.stop_service().await;
        let secret = self.jwt_secret.clone();
        let auth = match &secret {
            Some(secret) => Auth::Secret(secret),
            None => Auth::Disabled,
        };
        let service = self.spawn(Kind::Command, relay, auth).await?;
        Ok(self.service.insert(service))
    }

    /// Start a projection service (stopping a previous one): it projects the stream
    /// into read models in this environment's database.
    pub async fn start_projection(&mut self) -> anyhow::Result<&Service> {
        if let Some(previous) = self.projection.take() {
            previous.stop().await;
        }
        let service = self.spawn(Kind::Projection, false, Auth::Disabled).await?;
        Ok(self.projection.insert(service))
    }

    /// Start a query service (stopping a previous one), without token checks.
    pub async fn start_query(&mut self) -> anyhow::Result<&Service> {
        if let Some(previous) = self.query.take() {
            previous.stop().await;
        }
        let service = self.spawn(Kind::Query, false, Auth::Disabled).await?;
        Ok(self.query.insert(service))
    }

    async fn spawn(&mut self, kind: Kind, relay: bool, auth: Auth<'_>) -> anyhow::Result<Service> {
        self.starts += 1;
        let log_file =
            log_dir()?.join(format!("{}-{}-{}.log", self.name, self.starts, kind.name()));
        let settings = ServiceSettings {
            kind,
            database_url: &self.database_url,
            nats_url: &self.endpoints.nats_url,
            stream: &self.stream,
            subject_prefix: &self.subject_prefix,
            relay,
            auth,
            rust_log: &self.endpoints.service_log,
            log_file: &log_file,
        };
        Service::start(&settings, &self.http).await
    }

    pub fn service(&self) -> anyhow::Result<&Service> {
        self.service
            .as_ref()
            .context("no command service is running")
    }

    pub fn query(&self) -> anyhow::Result<&Service> {
        self.query.as_ref().context("no query service is running")
    }

    pub async fn stop_service(&mut self) {
        if let Some(service) = self.service.take() {
            service.stop().await;
        }
    }

    /// Stop the service, delete the stream, drop the database. Reports what it could not
    /// clean up on stderr and goes on with the rest.
    pub async fn teardown(mut self) {
        for service in [self.query.take(), self.projection.take()]
            .into_iter()
            .flatten()
        {
            service.stop().await;
        }
        self.stop_service().await;
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        if let Err(error) = delete_stream(&self.endpoints.nats_url, &self.stream).await {
            eprintln!("could not delete stream {}: {error:#}", self.stream);
        }
        if self.database_created && self.keep_database {
            eprintln!("kept database {} (drop it when done)", self.name);
        } else if self.database_created {
            let dropped = async {
                let mut admin = self.admin().await?;
                sqlx::query(&format!(
                    "drop database if exists {} with (force)",
                    self.name
                ))
                .execute(&mut admin)
                .await?;
                anyhow::Ok(())
            }
            .await;
            if let Err(error) = dropped {
                eprintln!("could not drop database {}: {error:#}", self.name);
            }
        }
    }
}

/// Delete a stream if it exists (the relay creates it on its first round).
pub async fn delete_stream(nats_url: &str, stream: &str) -> anyhow::Result<()> {
    let client = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(nats_url))
        .await
        .context("connecting to nats timed out")??;
    let context = async_nats::jetstream::new(client);
    match context.delete_stream(stream).await {
        Ok(_) => Ok(()),
        Err(error)
            if matches!(
                error.kind(),
                async_nats::jetstream::context::DeleteStreamErrorKind::JetStream(ref js)
                    if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Where the children's logs go: kept after the run, for profiling.
fn log_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join("synapse-bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Run `body` on a fresh environment, then tear it down whatever happened (Ctrl-C
/// included).
pub async fn with_environment<T>(
    endpoints: &Endpoints,
    body: impl AsyncFnOnce(&mut Environment) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut environment = Environment::create(endpoints).await?;
    let outcome = tokio::select! {
        outcome = body(&mut environment) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    environment.teardown().await;
    outcome
}
