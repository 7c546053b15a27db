//! A nats-server of a test's own, on a free port, that the test may stop and restart,
//! optionally with a configuration file (e.g. `deploy/nats/synapse-auth.conf`).
//!
//! The server's output goes to a log file that [`OwnNatsServer::log`] reads (to see a
//! permission violation the server reported). `SYNAPSE_TEST_NATS_TRACE=1` starts it
//! with protocol tracing (`-V`) and keeps the log after the test, printing its path:
//! that is how the subject permissions of `deploy/nats/synapse-auth.conf` were found.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use synapse_shared::nats_credentials::NatsCredentials;
use tokio::process::{Child, Command};

/// Where Debian installs nats-server.
const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// What a test's server runs with beyond its port and store.
#[derive(Debug, Clone, Default)]
pub struct NatsServerConfig {
    /// A configuration file (`-c`); port, JetStream and store come from the command line.
    pub config_file: Option<PathBuf>,
    /// Environment of the server: the variables the configuration file refers to.
    pub env: Vec<(String, String)>,
}

pub struct OwnNatsServer {
    pub port: u16,
    store: PathBuf,
    log_path: PathBuf,
    config: NatsServerConfig,
    child: Option<Child>,
}

impl OwnNatsServer {
    /// Start a JetStream-enabled server on a free loopback port, open to anyone.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(NatsServerConfig::default()).await
    }

    /// Start a JetStream-enabled server on a free loopback port with `config`.
    pub async fn start_with(config: NatsServerConfig) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let store = std::env::temp_dir().join(format!("synapse-nats-{unique}"));
        std::fs::create_dir_all(&store)?;
        let log_path = std::env::temp_dir().join(format!("synapse-nats-{unique}.log"));
        let mut server = Self {
            port,
            store,
            log_path,
            config,
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)start the server on the same port and store, appending to the same log.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut command = Command::new(NATS_SERVER);
        if let Some(file) = &self.config.config_file {
            command.arg("-c").arg(file);
        }
        if tracing_requested() {
            command.arg("-V");
        }
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .envs(self.config.env.iter().map(|(name, value)| (name, value)))
            .kill_on_drop(true)
            .stdout(std::process::Stdio::from(log.try_clone()?))
            .stderr(std::process::Stdio::from(log));
        let mut child = command.spawn()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("nats-server exited ({status}); its log:\n{}", self.log());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("nats-server did not start on port {}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
        Ok(())
    }

    /// Kill the server (SIGKILL) and wait until it is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for OwnNatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
        if tracing_requested() {
            eprintln!("nats-server trace kept at {}", self.log_path.display());
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

fn tracing_requested() -> bool {
    std::env::var("SYNAPSE_TEST_NATS_TRACE").is_ok_and(|value| value == "1")
}

/// The users of `deploy/nats/synapse-auth.conf`, each with its password variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NatsUser {
    Command,
    Projection,
    Query,
    Downstream,
    Admin,
}

impl NatsUser {
    pub const ALL: [NatsUser; 5] = [
        NatsUser::Command,
        NatsUser::Projection,
        NatsUser::Query,
        NatsUser::Downstream,
        NatsUser::Admin,
    ];

    /// The user name in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            NatsUser::Command => "synapse-command",
            NatsUser::Projection => "synapse-projection",
            NatsUser::Query => "synapse-query",
            NatsUser::Downstream => "synapse-downstream",
            NatsUser::Admin => "synapse-admin",
        }
    }

    /// The server environment variable that holds the user's password.
    pub fn password_variable(self) -> &'static str {
        match self {
            NatsUser::Command => "SYNAPSE_NATS_COMMAND_PASSWORD",
            NatsUser::Projection => "SYNAPSE_NATS_PROJECTION_PASSWORD",
            NatsUser::Query => "SYNAPSE_NATS_QUERY_PASSWORD",
            NatsUser::Downstream => "SYNAPSE_NATS_DOWNSTREAM_PASSWORD",
            NatsUser::Admin => "SYNAPSE_NATS_ADMIN_PASSWORD",
        }
    }
}

/// The production users and permissions of `deploy/nats/synapse-auth.conf`, verbatim,
/// with fresh random passwords.
pub struct SynapseNatsUsers {
    passwords: BTreeMap<NatsUser, String>,
}

impl SynapseNatsUsers {
    pub fn generate() -> Self {
        Self {
            passwords: NatsUser::ALL
                .into_iter()
                // The server parses a variable's value as a configuration value: one
                // that starts with a digit is a number (and a syntax error), so every
                // password starts with a letter (deploy/README.md says so too).
                .map(|user| (user, format!("pw{}", uuid::Uuid::new_v4().simple())))
                .collect(),
        }
    }

    /// The deployed configuration file.
    pub fn config_file() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/synapse-auth.conf")
    }

    /// A server configuration with these users.
    pub fn server_config(&self) -> NatsServerConfig {
        NatsServerConfig {
            config_file: Some(Self::config_file()),
            env: self
                .passwords
                .iter()
                .map(|(user, password)| (user.password_variable().to_owned(), password.clone()))
                .collect(),
        }
    }

    /// What a service configured as `user` connects with.
    pub fn credentials(&self, user: NatsUser) -> NatsCredentials {
        NatsCredentials::user_password(user.name(), self.passwords[&user].clone())
    }
}
