//! A sampling profile of the benchmark database while a command runs: every few
//! milliseconds, what each of the service's connections is doing (`pg_stat_activity`).
//! A connection `idle in transaction` is waiting on the service (planning, building
//! events, round trips); an `active` one is Postgres working on the statement shown.

use anyhow::Context;
use sqlx::{Connection, PgConnection};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Time between samples: fine enough for chunk phases of tens of milliseconds, coarse
/// enough that the sampler's own queries stay a small load.
const INTERVAL: Duration = Duration::from_millis(5);
/// Characters of a statement kept as its label.
const LABEL_CHARS: usize = 90;

/// A running sampler.
pub struct Sampler {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<anyhow::Result<Profile>>,
}

/// Samples per activity label.
pub struct Profile {
    /// Sampling rounds taken.
    pub rounds: u64,
    /// `(label, samples)`, most samples first.
    pub activities: Vec<(String, u64)>,
}

impl Sampler {
    pub async fn start(database_url: &str) -> anyhow::Result<Self> {
        let mut connection = PgConnection::connect(database_url)
            .await
            .context("connecting the sampler")?;
        let (stop, mut stopped) = oneshot::channel();
        let handle = tokio::spawn(async move {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            let mut rounds = 0;
            loop {
                let rows: Vec<(String, Option<String>, String)> = sqlx::query_as(
                    "select coalesce(state, ''), wait_event, coalesce(query, '')
                     from pg_stat_activity
                     where datname = current_database() and pid <> pg_backend_pid()
                       and backend_type = 'client backend' and state <> 'idle'",
                )
                .fetch_all(&mut connection)
                .await?;
                rounds += 1;
                for (state, wait_event, query) in rows {
                    *counts.entry(label(&state, wait_event, &query)).or_default() += 1;
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(INTERVAL) => {}
                }
            }
            connection.close().await.ok();
            let mut activities: Vec<_> = counts.into_iter().collect();
            activities.sort_by_key(|activity| std::cmp::Reverse(activity.1));
            Ok(Profile { rounds, activities })
        });
        Ok(Self { stop, handle })
    }

    pub async fn finish(self) -> anyhow::Result<Profile> {
        let _ = self.stop.send(());
        self.handle.await.context("the sampler task failed")?
    }
}

fn label(state: &str, wait_event: Option<String>, query: &str) -> String {
    if state == "idle in transaction" {
        return "(idle in transaction: the service is working)".to_owned();
    }
    let statement: String = query
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(LABEL_CHARS)
        .collect();
    match wait_event {
        Some(wait) if state == "active" => format!("{statement} [wait {wait}]"),
        _ if state == "active" => statement,
        _ => format!("({state}) {statement}"),
    }
}
