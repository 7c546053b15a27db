//! The people behind the commands: each an HTTP client with a bearer token of their
//! own, so the log records who did what (the command service checks the tokens).

use anyhow::Context;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use std::time::Duration;
use synapse_shared::auth::{issue_token, Role, DEFAULT_AUDIENCE, DEFAULT_ISSUER};

/// Validity of the benchmark's tokens: longer than any run.
const TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);
/// An execution over 100,000 assets answers when it is done: allow minutes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Engineers who import, engineers who execute, an admin who defines rules and rolls
/// back, and the engineer whose small changes make the sustained load.
pub struct Actors {
    importers: [reqwest::Client; 2],
    executors: [reqwest::Client; 2],
    pub admin: reqwest::Client,
    pub operator: reqwest::Client,
}

/// Subjects of the actors, as they appear on events.
pub const NAMES: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

impl Actors {
    /// Clients with tokens signed by `secret` (the command service's `JWT_SECRET`).
    pub fn new(secret: &str) -> anyhow::Result<Self> {
        let client = |subject: &str, role: Role| client(secret, subject, role);
        Ok(Self {
            importers: [
                client(NAMES[0], Role::Engineer)?,
                client(NAMES[1], Role::Engineer)?,
            ],
            executors: [
                client(NAMES[2], Role::Engineer)?,
                client(NAMES[3], Role::Engineer)?,
            ],
            admin: client(NAMES[4], Role::Admin)?,
            operator: client(NAMES[5], Role::Engineer)?,
        })
    }

    /// Who imports plant `plant` (they take turns).
    pub fn importer(&self, plant: usize) -> reqwest::Client {
        self.importers[plant % 2].clone()
    }

    /// Who executes the rules over plant `plant`.
    pub fn executor(&self, plant: usize) -> reqwest::Client {
        self.executors[plant % 2].clone()
    }
}

/// A fresh random secret for the run's command service, long enough for HS256.
pub fn secret() -> String {
    format!(
        "bench-{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn client(secret: &str, subject: &str, role: Role) -> anyhow::Result<reqwest::Client> {
    let token = issue_token(
        secret,
        subject,
        role,
        TOKEN_TTL,
        DEFAULT_ISSUER,
        DEFAULT_AUDIENCE,
    )
    .with_context(|| format!("signing a token for {subject}"))?;
    let mut headers = HeaderMap::new();
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .context("a token is not a valid header value")?;
    value.set_sensitive(true);
    headers.insert(AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building an http client")
}
