//! The services as real child processes, for fault tests that kill, freeze and restart
//! them: the binaries `cargo build --bins` puts beside the test binary, started with
//! the environment `main` reads, their output in a log file of their own.
//!
//! Every process is killed (SIGKILL, then reaped) when its [`ServiceProcess`] is
//! dropped, so a failing test leaves nothing running. The log file is removed on drop
//! unless the test is panicking, in which case its path is printed.

use crate::resources::TestDatabase;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use synapse_shared::config::NatsArgs;
use tokio::time::Instant;

/// How long a service may take to answer `/healthz` after it was spawned (migrations,
/// connecting to Postgres and NATS) on a busy machine.
const START_PATIENCE: Duration = Duration::from_secs(60);
/// How long a terminated process may take to exit before it is killed.
const TERMINATE_PATIENCE: Duration = Duration::from_secs(30);

/// Which service binary to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Command,
    Projection,
    Query,
}

impl Service {
    pub fn binary_name(self) -> &'static str {
        match self {
            Service::Command => "command-service",
            Service::Projection => "projection-service",
            Service::Query => "query-service",
        }
    }
}

/// Where cargo put the service binaries: the profile directory of the running test
/// binary (which lives in `<target>/<profile>/deps/`).
pub fn binary_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let deps = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("the test binary {exe:?} has no directory"))?;
    let profile = if deps.file_name().is_some_and(|name| name == "deps") {
        deps.parent()
            .ok_or_else(|| anyhow::anyhow!("{deps:?} has no parent directory"))?
    } else {
        deps
    };
    Ok(profile.to_path_buf())
}

/// The path of `service`'s binary; an error that says how to build it if it is missing.
pub fn binary(service: Service) -> anyhow::Result<PathBuf> {
    let path = binary_dir()?.join(service.binary_name());
    if !path.is_file() {
        anyhow::bail!(
            "{} not found at {}: the fault tests run the real service binaries; \
             run `cargo build --bins` first (deploy/test.sh does)",
            service.binary_name(),
            path.display()
        );
    }
    Ok(path)
}

/// A free loopback port (free now; the service binds it a moment later).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The environment a service process is started with.
#[derive(Debug, Clone)]
pub struct ServiceEnv {
    pub database_url: String,
    pub nats: NatsArgs,
    /// Seconds without heartbeat before a running batch is swept to failed (command
    /// service). Must exceed the 5 s heartbeat.
    pub batch_stale_after_secs: u64,
    /// Whether the command service runs its relay.
    pub relay_enabled: bool,
    /// Further variables, e.g. `RUST_LOG`.
    pub extra: Vec<(String, String)>,
    /// Give the service a stdout and stderr whose reading end is closed at once (as
    /// `service | head -1` leaves it), instead of the log file.
    pub output_closed: bool,
}

impl ServiceEnv {
    pub fn new(database: &TestDatabase, nats: &NatsArgs) -> Self {
        Self {
            database_url: database.url.clone(),
            nats: nats.clone(),
            batch_stale_after_secs: 8,
            relay_enabled: true,
            extra: Vec::new(),
            output_closed: false,
        }
    }

    /// The same, on a database given by URL (e.g. on an [`OwnPostgres`]).
    pub fn with_database_url(database_url: &str, nats: &NatsArgs) -> Self {
        Self {
            database_url: database_url.to_owned(),
            nats: nats.clone(),
            batch_stale_after_secs: 8,
            relay_enabled: true,
            extra: Vec::new(),
            output_closed: false,
        }
    }

    fn apply(&self, command: &mut Command, port: u16) {
        // Nothing from the developer's shell may leak in and point a service elsewhere.
        for name in [
            "READ_DATABASE_URL",
            "NATS_USER",
            "NATS_PASSWORD",
            "NATS_TOKEN",
            "NATS_NKEY_FILE",
            "NATS_CREDS",
            "AUTH_DISABLED",
            "JWT_ISSUER",
            "JWT_AUDIENCE",
            "LOG_FORMAT",
            "DATABASE_MAX_CONNECTIONS",
        ] {
            command.env_remove(name);
        }
        command
            .env("DATABASE_URL", &self.database_url)
            .env("NATS_URL", &self.nats.nats_url)
            .env("NATS_STREAM", &self.nats.nats_stream)
            .env("NATS_SUBJECT_PREFIX", &self.nats.nats_subject_prefix)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("JWT_SECRET", crate::auth::TEST_SECRET)
            .env(
                "BATCH_STALE_AFTER_SECS",
                self.batch_stale_after_secs.to_string(),
            )
            .env("RELAY_ENABLED", self.relay_enabled.to_string())
            // FAULT_TEST_RUST_LOG lets a developer turn up a service's logs.
            .env(
                "RUST_LOG",
                std::env::var("FAULT_TEST_RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env("RUST_BACKTRACE", "1");
        let credentials = &self.nats.credentials;
        let secrets = [
            ("NATS_USER", credentials.nats_user.clone()),
            (
                "NATS_PASSWORD",
                credentials
                    .nats_password
                    .as_ref()
                    .map(|secret| secret.expose().to_owned()),
            ),
            (
                "NATS_TOKEN",
                credentials
                    .nats_token
                    .as_ref()
                    .map(|secret| secret.expose().to_owned()),
            ),
        ];
        for (name, value) in secrets {
            if let Some(value) = value {
                command.env(name, value);
            }
        }
        for (name, path) in [
            ("NATS_NKEY_FILE", &credentials.nats_nkey_file),
            ("NATS_CREDS", &credentials.nats_creds),
        ] {
            if let Some(path) = path {
                command.env(name, path);
            }
        }
        for (name, value) in &self.extra {
            command.env(name, value);
        }
    }
}

/// One service running as a child process.
pub struct ServiceProcess {
    pub service: Service,
    pub env: ServiceEnv,
    port: u16,
    child: Option<Child>,
    log_path: PathBuf,
    /// How many times this service was started (each start appends to the same log).
    starts: u32,
}

impl ServiceProcess {
    /// Spawn `service` and wait (bounded) until it answers `/healthz`.
    pub async fn start(service: Service, env: ServiceEnv) -> anyhow::Result<Self> {
        let log_path = std::env::temp_dir().join(format!(
            "synapse-{}-{}.log",
            service.binary_name(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut process = Self {
            service,
            env,
            port: 0,
            child: None,
            log_path,
            starts: 0,
        };
        process.restart().await?;
        Ok(process)
    }

    /// Start the service again (after a kill or terminate), on a new free port, with
    /// the same environment, appending to the same log; waits for `/healthz`.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            anyhow::bail!("{} is still running", self.service.binary_name());
        }
        let binary = binary(self.service)?;
        let port = free_port()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut command = Command::new(&binary);
        self.env.apply(&mut command, port);
        command.stdin(Stdio::null());
        if self.env.output_closed {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            command
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log));
        }
        let mut child = command
            .spawn()
            .map_err(|error| anyhow::anyhow!("could not spawn {}: {error}", binary.display()))?;
        // Dropping the reading ends closes them: every write of the service fails.
        drop((child.stdout.take(), child.stderr.take()));
        self.child = Some(child);
        self.port = port;
        self.starts += 1;
        self.wait_healthy().await
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = self.url("/healthz");
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(status) = self.exit_status()? {
                anyhow::bail!(
                    "{} exited ({status}) before answering /healthz; its log:\n{}",
                    self.service.binary_name(),
                    self.log_tail(4000)
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{} did not answer {url} within {START_PATIENCE:?}; its log:\n{}",
                    self.service.binary_name(),
                    self.log_tail(4000)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn starts(&self) -> u32 {
        self.starts
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process (all its starts) wrote so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    fn log_tail(&self, chars: usize) -> String {
        let log = self.log();
        let start = log
            .char_indices()
            .rev()
            .nth(chars)
            .map_or(0, |(index, _)| index);
        log[start..].to_owned()
    }

    /// The exit status if the child has exited (reaping it), `None` while it runs.
    fn exit_status(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.exit_status(), Ok(None)) && self.child.is_some()
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", self.service.binary_name()))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            anyhow::bail!("kill -{signal} {pid} failed: {status}");
        }
        Ok(())
    }

    /// SIGKILL, as a crash or the OOM killer would; waits until the process is gone.
    pub async fn kill_9(&mut self) -> anyhow::Result<()> {
        self.signal("KILL")?;
        self.reap(Duration::from_secs(10)).await
    }

    /// SIGSTOP: the process freezes (timers, sockets and all) until [`Self::sigcont`].
    pub fn sigstop(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// SIGCONT: a frozen process resumes.
    pub fn sigcont(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    /// SIGTERM and wait for the graceful exit (killed if it takes too long); returns
    /// whether it exited successfully.
    pub async fn terminate(&mut self) -> anyhow::Result<bool> {
        self.signal("TERM")?;
        let deadline = Instant::now() + TERMINATE_PATIENCE;
        loop {
            if let Some(status) = self.exit_status()? {
                self.child = None;
                return Ok(status.success());
            }
            if Instant::now() > deadline {
                self.kill_9().await?;
                anyhow::bail!(
                    "{} did not exit within {TERMINATE_PATIENCE:?} of SIGTERM",
                    self.service.binary_name()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn reap(&mut self, patience: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            if self.exit_status()?.is_some() {
                self.child = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{} did not exit within {patience:?}",
                    self.service.binary_name()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL also ends a stopped process; wait reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "{} log kept at {}",
                self.service.binary_name(),
                self.log_path.display()
            );
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// Where Debian installs the PostgreSQL 15 server binaries.
const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A Postgres server of a test's own (initdb in a temporary directory, trust auth, a
/// free port, its socket in that directory) that the test may stop (`-m immediate`,
/// as a crash would) and start again. Run as the `postgres` user, which initdb
/// requires when the tests run as root. Stopped and removed on drop.
pub struct OwnPostgres {
    pub port: u16,
    dir: PathBuf,
}

impl OwnPostgres {
    pub async fn start() -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("synapse-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let server = Self {
            port: free_port()?,
            dir,
        };
        run_checked(
            tokio::process::Command::new("chown")
                .arg("postgres:postgres")
                .arg(&server.dir),
        )
        .await?;
        run_checked(
            server
                .as_postgres("initdb")
                .arg("-D")
                .arg(server.data())
                .args(["--auth=trust", "-U", "postgres"]),
        )
        .await?;
        server.start_server().await?;
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn as_postgres(&self, tool: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(Path::new(POSTGRES_BIN).join(tool))
            .stdin(Stdio::null());
        command
    }

    /// Start the server (again) and wait until it accepts connections.
    pub async fn start_server(&self) -> anyhow::Result<()> {
        run_checked(
            self.as_postgres("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-o")
                .arg(format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1",
                    self.port,
                    self.dir.display()
                ))
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(["-w", "-t", "60", "start"]),
        )
        .await
    }

    /// Stop at once, without a checkpoint, as a crash would (`pg_ctl -m immediate`).
    pub async fn stop_immediate(&self) -> anyhow::Result<()> {
        run_checked(self.as_postgres("pg_ctl").arg("-D").arg(self.data()).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]))
        .await
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

async fn run_checked(command: &mut tokio::process::Command) -> anyhow::Result<()> {
    let output = command.output().await?;
    if !output.status.success() {
        anyhow::bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(POSTGRES_BIN).join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
