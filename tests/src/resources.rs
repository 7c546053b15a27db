//! Per-test Postgres databases and NATS streams against the real services.

use sqlx::{Connection, PgConnection};
use synapse_shared::config::NatsArgs;
use uuid::Uuid;

/// The server-level URL tests create their databases through.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A database created for one test and dropped (with its connections) when the value
/// is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let name = format!("synapse_test_{}", Uuid::new_v4().simple());
        let admin = admin_database_url();
        let mut connection = PgConnection::connect(&admin).await?;
        sqlx::query(&format!("create database {name}"))
            .execute(&mut connection)
            .await?;
        connection.close().await?;
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => anyhow::bail!("TEST_DATABASE_URL has no database part: {admin}"),
        };
        Ok(Self { name, url })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a dedicated thread with its own runtime
        // lets us block on the async drop without stalling that runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok(mut connection) = PgConnection::connect(&admin_database_url()).await {
                        let _ =
                            sqlx::query(&format!("drop database if exists {name} with (force)"))
                                .execute(&mut connection)
                                .await;
                    }
                });
            }
        })
        .join();
    }
}

/// A stream and subject prefix of one test's own, deleted on drop.
pub struct TestNats {
    pub args: NatsArgs,
}

impl TestNats {
    pub fn new() -> Self {
        let unique = Uuid::new_v4().simple().to_string();
        Self {
            args: NatsArgs::isolated(&nats_url(), &unique),
        }
    }

    /// A plain JetStream context, as a downstream consumer would have.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let client = async_nats::connect(&self.args.nats_url).await?;
        Ok(async_nats::jetstream::new(client))
    }
}

impl Default for TestNats {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let url = self.args.nats_url.clone();
        let stream = self.args.nats_stream.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok(client) = async_nats::connect(&url).await {
                        let _ = async_nats::jetstream::new(client)
                            .delete_stream(&stream)
                            .await;
                    }
                });
            }
        })
        .join();
    }
}
