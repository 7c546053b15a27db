//! Load the plant through the command API, one `POST /assets` per asset.
//!
//! Idempotent: an asset whose tag already exists (409) counts as loaded, so re-running
//! after an interruption completes the load. At most `concurrency` requests are in
//! flight; connection failures and 5xx answers are retried a few times with backoff.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::plant::{Asset, Plant};

/// Attempts per asset for transient failures (connection errors, 5xx, 429).
const ATTEMPTS: u32 = 4;
/// How many failure messages to print before only counting them.
const REPORTED_FAILURES: usize = 10;

/// Where and how to load.
pub struct LoadOptions {
    pub command_url: String,
    pub concurrency: usize,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
}

/// What happened to each asset.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    pub created: usize,
    pub already_present: usize,
    pub failed: usize,
}

enum Outcome {
    Created,
    AlreadyPresent,
    Failed(String),
}

/// Post every asset of `plant`; fails if the command API is unreachable or any asset
/// could not be loaded.
pub async fn load(plant: &Plant, options: &LoadOptions) -> anyhow::Result<LoadReport> {
    let base = options.command_url.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    check_reachable(&client, &base).await?;

    let url = Arc::new(format!("{base}/assets"));
    let auth = Arc::new(Auth {
        token: options.token.clone(),
    });
    // The semaphore bounds requests in flight; every spawned task holds one permit.
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut report = LoadReport::default();
    let mut progress = Progress::new(plant.assets.len());

    for asset in plant.assets.iter().cloned() {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .context("semaphore closed")?;
        let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
        tasks.spawn(async move {
            let outcome = post_asset(&client, &url, &auth, &asset).await;
            drop(permit);
            (asset.tag, outcome)
        });
        // Collect what has finished so far, so the progress line moves while posting.
        while let Some(done) = tasks.try_join_next() {
            record(done, &mut report, &mut progress)?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        record(done, &mut report, &mut progress)?;
    }
    progress.finish(&report);
    if report.failed > 0 {
        bail!(
            "{} of {} assets could not be loaded",
            report.failed,
            plant.assets.len()
        );
    }
    Ok(report)
}

fn record(
    done: Result<(String, Outcome), tokio::task::JoinError>,
    report: &mut LoadReport,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let (tag, outcome) = done.context("a load task panicked")?;
    match outcome {
        Outcome::Created => report.created += 1,
        Outcome::AlreadyPresent => report.already_present += 1,
        Outcome::Failed(reason) => {
            report.failed += 1;
            if report.failed <= REPORTED_FAILURES {
                progress.clear_line();
                eprintln!("failed to load {tag}: {reason}");
            }
        }
    }
    progress.update(report);
    Ok(())
}

async fn check_reachable(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let url = format!("{base}/healthz");
    let response = client.get(&url).send().await.with_context(|| {
        format!("command API not reachable at {url}: is command-service running?")
    })?;
    if !response.status().is_success() {
        bail!(
            "command API health check {url} answered {}",
            response.status()
        );
    }
    Ok(())
}

/// How the loader proves who it is: the token's subject is the actor on the events.
struct Auth {
    token: Option<String>,
}

async fn post_asset(client: &reqwest::Client, url: &str, auth: &Auth, asset: &Asset) -> Outcome {
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 * 2u64.pow(attempt - 1))).await;
        }
        let mut request = client.post(url).json(asset);
        if let Some(token) = &auth.token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Outcome::Created;
                }
                if status == StatusCode::CONFLICT {
                    return Outcome::AlreadyPresent;
                }
                let body = response.text().await.unwrap_or_default();
                last_error = format!("{status}: {}", body.chars().take(300).collect::<String>());
                let transient = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                if !transient {
                    break;
                }
            }
            Err(error) => last_error = format!("request failed: {error}"),
        }
    }
    Outcome::Failed(last_error)
}

/// A progress line on stderr: rewritten in place on a terminal, a line every few
/// seconds otherwise (logs).
struct Progress {
    total: usize,
    started: Instant,
    last_print: Instant,
    terminal: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        let now = Instant::now();
        Self {
            total,
            started: now,
            last_print: now,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn line(&self, report: &LoadReport) -> String {
        let done = report.created + report.already_present + report.failed;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "assets {done}/{} (created {}, already present {}, failed {}) {rate:.0}/s",
            self.total, report.created, report.already_present, report.failed
        )
    }

    fn update(&mut self, report: &LoadReport) {
        let interval = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last_print.elapsed() >= interval {
            self.last_print = Instant::now();
            if self.terminal {
                eprint!("\r{}", self.line(report));
            } else {
                eprintln!("{}", self.line(report));
            }
        }
    }

    fn clear_line(&self) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
    }

    fn finish(&self, report: &LoadReport) {
        self.clear_line();
        eprintln!(
            "{} in {:.1}s",
            self.line(report),
            self.started.elapsed().as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::plant::generate;

    /// How the fake command API answers `POST /assets` for one tag.
    #[derive(Clone, Copy)]
    enum Answer {
        Created,
        Exists,
        /// A 503 this many times, then 201.
        Unavailable(u32),
        Invalid,
    }

    /// A minimal HTTP/1.1 server standing in for the command API: answers per tag and
    /// records how many POSTs each tag got.
    async fn fake_command_api(
        answers: HashMap<String, Answer>,
    ) -> (String, Arc<Mutex<HashMap<String, u32>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answers = Arc::new(Mutex::new(answers));
        let posts = Arc::new(Mutex::new(HashMap::new()));
        let recorded = posts.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let (answers, posts) = (answers.clone(), posts.clone());
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut reader = BufReader::new(read);
                    loop {
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let mut content_length = 0;
                        loop {
                            let mut header = String::new();
                            reader.read_line(&mut header).await.unwrap();
                            if header == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':') {
                                if name.eq_ignore_ascii_case("content-length") {
                                    content_length = value.trim().parse().unwrap();
                                }
                            }
                        }
                        let mut body = vec![0; content_length];
                        reader.read_exact(&mut body).await.unwrap();
                        let status = if request_line.starts_with("GET /healthz") {
                            "200 OK"
                        } else {
                            let asset: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            let tag = asset["tag"].as_str().unwrap().to_owned();
                            let attempt = {
                                let mut posts = posts.lock().unwrap();
                                let count = posts.entry(tag.clone()).or_insert(0);
                                *count += 1;
                                *count
                            };
                            let answer = answers
                                .lock()
                                .unwrap()
                                .get(&tag)
                                .copied()
                                .unwrap_or(Answer::Created);
                            match answer {
                                Answer::Created => "201 Created",
                                Answer::Exists => "409 Conflict",
                                Answer::Unavailable(times) if attempt <= times => {
                                    "503 Service Unavailable"
                                }
                                Answer::Unavailable(_) => "201 Created",
                                Answer::Invalid => "422 Unprocessable Entity",
                            }
                        };
                        let response = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}");
                        write.write_all(response.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (url, recorded)
    }

    fn options(command_url: String) -> LoadOptions {
        LoadOptions {
            command_url,
            concurrency: 4,
            token: None,
        }
    }

    #[tokio::test]
    async fn existing_tags_count_as_loaded_and_transient_failures_are_retried() {
        let plant = generate(60, 1);
        let mut answers = HashMap::new();
        for asset in plant.assets.iter().step_by(3) {
            answers.insert(asset.tag.clone(), Answer::Exists);
        }
        answers.insert(plant.assets[1].tag.clone(), Answer::Unavailable(2));
        let (url, posts) = fake_command_api(answers).await;

        let report = load(&plant, &options(url)).await.unwrap();

        assert_eq!(report.already_present, 20);
        assert_eq!(report.created, 40);
        assert_eq!(report.failed, 0);
        let posts = posts.lock().unwrap();
        assert_eq!(posts[&plant.assets[1].tag], 3, "two 503s, then created");
        assert_eq!(posts.len(), 60, "every asset posted");
    }

    #[tokio::test]
    async fn a_refused_asset_fails_the_load_without_retrying() {
        let plant = generate(10, 1);
        let refused = plant.assets[4].tag.clone();
        let (url, posts) =
            fake_command_api(HashMap::from([(refused.clone(), Answer::Invalid)])).await;

        let error = load(&plant, &options(url)).await.unwrap_err();

        assert!(error.to_string().contains("1 of 10 assets"), "{error}");
        assert_eq!(posts.lock().unwrap()[&refused], 1);
    }

    #[tokio::test]
    async fn an_unreachable_command_api_is_reported_before_loading() {
        // Bind and drop a listener to get a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();

        let error = load(
            &generate(5, 1),
            &options(format!("http://127.0.0.1:{port}")),
        )
        .await
        .unwrap_err();

        assert!(error.to_string().contains("not reachable"), "{error}");
    }
}
