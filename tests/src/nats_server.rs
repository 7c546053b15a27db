//! A nats-server of a test's own, on a free port, that the test may stop and restart.

use std::path::PathBuf;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Where Debian installs nats-server.
const NATS_SERVER: &str = "/usr/sbin/nats-server";

pub struct OwnNatsServer {
    pub port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl OwnNatsServer {
    /// Start a JetStream-enabled server on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let store =
            std::env::temp_dir().join(format!("synapse-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store)?;
        let mut server = Self {
            port,
            store,
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)start the server on the same port and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let child = Command::new(NATS_SERVER)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("nats-server did not start on port {}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Kill the server (SIGKILL) and wait until it is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

impl Drop for OwnNatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
