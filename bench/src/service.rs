//! The services as child processes: the very binaries an operator runs, started from the
//! same target directory as this benchmark, so their memory and CPU can be read from
//! `/proc` apart from ours.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How long a fresh service may take to migrate its database and answer `/healthz`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping service may drain before it is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ): 100 on every Linux target
/// this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// Which service a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Command,
    Projection,
    Query,
}

impl Kind {
    /// The binary's (and the package's) name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Command => "command-service",
            Kind::Projection => "projection-service",
            Kind::Query => "query-service",
        }
    }
}

/// How a child checks bearer tokens.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// `AUTH_DISABLED=true`: every request acts as the admin `auth-disabled`. The
    /// benchmarks measure commands and queries, not token checks.
    Disabled,
    /// `JWT_SECRET`: tokens name the actor of each event (the read benchmark wants a
    /// realistic mix of actors in the log).
    Secret(&'a str),
}

/// What the child is started with.
pub struct ServiceSettings<'a> {
    pub kind: Kind,
    pub database_url: &'a str,
    pub nats_url: &'a str,
    pub stream: &'a str,
    pub subject_prefix: &'a str,
    /// `RELAY_ENABLED` of a command service (ignored by the others).
    pub relay: bool,
    pub auth: Auth<'a>,
    /// `RUST_LOG` of the child, e.g. `command_service=debug` to profile chunks.
    pub rust_log: &'a str,
    /// Where the child's stdout and stderr go.
    pub log_file: &'a Path,
}

/// A running service.
pub struct Service {
    kind: Kind,
    child: Child,
    pid: u32,
    pub base_url: String,
    pub log_file: PathBuf,
}

/// The service's binary beside the running benchmark binary.
pub fn binary(kind: Kind) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let dir = exe
        .parent()
        .context("the bench binary has no parent directory")?;
    let binary = dir.join(kind.name());
    if !binary.is_file() {
        bail!(
            "{} does not exist: build it with the bench, e.g. `cargo build --release \
             -p synapse-bench -p command-service -p projection-service -p query-service`",
            binary.display()
        );
    }
    Ok(binary)
}

/// A port nobody listens on right now (the OS picks it).
fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free local port")?;
    Ok(listener.local_addr()?.port())
}

impl Service {
    /// Start the service and wait until it answers `/healthz`.
    pub async fn start(
        settings: &ServiceSettings<'_>,
        http: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        let binary = binary(settings.kind)?;
        let port = free_port()?;
        let log = std::fs::File::create(settings.log_file)
            .with_context(|| format!("creating {}", settings.log_file.display()))?;
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        let mut command = Command::new(&binary);
        command
            .env("DATABASE_URL", settings.database_url)
            .env("NATS_URL", settings.nats_url)
            .env("NATS_STREAM", settings.stream)
            .env("NATS_SUBJECT_PREFIX", settings.subject_prefix)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", settings.rust_log);
        if settings.kind == Kind::Command {
            command.env("RELAY_ENABLED", settings.relay.to_string());
        }
        match settings.auth {
            // One or the other: a service given both refuses to start.
            Auth::Disabled => command
                .env("AUTH_DISABLED", "true")
                .env_remove("JWT_SECRET"),
            Auth::Secret(secret) => command
                .env("JWT_SECRET", secret)
                .env_remove("AUTH_DISABLED"),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // A safety net: if the benchmark itself panics, the child does not outlive it.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the child exited at once")?;
        let mut service = Self {
            kind: settings.kind,
            child,
            pid,
            base_url: format!("http://127.0.0.1:{port}"),
            log_file: settings.log_file.to_owned(),
        };
        if let Err(error) = service.wait_healthy(http).await {
            service.stop().await;
            return Err(error);
        }
        Ok(service)
    }

    async fn wait_healthy(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let started = Instant::now();
        let url = self.url("/healthz");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} before it was healthy; see {}",
                    self.kind.name(),
                    self.log_file.display()
                );
            }
            let healthy = http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if healthy {
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                bail!(
                    "{} did not answer {url} within {STARTUP_TIMEOUT:?}; see {}",
                    self.kind.name(),
                    self.log_file.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Peak resident memory of the child so far (`VmHWM`), in KiB.
    pub fn peak_memory_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("reading the child's /proc status")?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM line in the child's /proc status")
    }

    /// CPU seconds (user + system) the child has used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds_of(self.pid).context("reading the child's CPU time")
    }

    /// SIGTERM, wait for a graceful stop, SIGKILL if it does not come.
    pub async fn stop(mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let terminated = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .is_ok_and(|status| status.success());
        if terminated {
            if let Ok(Ok(_)) = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.child.wait()).await {
                return;
            }
            eprintln!(
                "{} (pid {}) did not stop within {SHUTDOWN_TIMEOUT:?}; killing it",
                self.kind.name(),
                self.pid
            );
        }
        if let Err(error) = self.child.kill().await {
            eprintln!(
                "could not kill {} (pid {}): {error}",
                self.kind.name(),
                self.pid
            );
        }
    }
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat`.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: fields after it follow the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

/// CPU seconds of every `postgres` process on the machine (all databases: other work on
/// the machine counts too, so read it as an upper bound).
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim() == "postgres")
        })
        .filter_map(cpu_seconds_of)
        .sum()
}
