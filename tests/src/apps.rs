//! Running the services in-process on port 0, exactly as their `main` does.

use crate::resources::TestDatabase;
use synapse_shared::config::{DatabaseArgs, ListenArgs, NatsArgs, ReadDatabaseArgs};
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

/// Start the command service (with its relay when `relay` is true).
pub async fn command_service(
    database: &TestDatabase,
    nats: &NatsArgs,
    relay: bool,
) -> anyhow::Result<Running> {
    let config = command_service::Config {
        database: database_args(database),
        nats: nats.clone(),
        listen: any_port(),
        relay_enabled: relay,
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

#[allow(dead_code)]
fn read_args() -> ReadDatabaseArgs {
    ReadDatabaseArgs {
        read_database_url: None,
    }
}
