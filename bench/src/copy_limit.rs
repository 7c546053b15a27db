//! The append limit: how fast this Postgres takes exactly the rows an execution wrote,
//! by the fastest path it has (`COPY ... FROM STDIN`), into a plain table shaped like
//! the log (no triggers; `like ... including defaults` copies no index either).
//! Copied [`ATTEMPTS`] times, each into a fresh table; the limit is the fastest: one
//! copy of a few seconds measured anywhere between 46,000 and 91,000 rows/s on this
//! machine within minutes.
//!
//! For the reader, not the target: the same copies into tables that also have the
//! log's indexes (`including indexes`), to show how much of the gap the indexes are.

use anyhow::Context;
use futures::StreamExt;
use sqlx::{Connection, Executor, PgConnection};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Bytes per `CopyData` message sent: large enough that message overhead vanishes.
const SEND_CHUNK_BYTES: usize = 1 << 20;
/// Copies made; the fastest is the limit.
pub const ATTEMPTS: usize = 3;

/// What the raw COPY did.
pub struct CopyLimit {
    pub rows: u64,
    pub bytes: usize,
    /// The fastest copy into a table without indexes: the limit.
    pub elapsed: Duration,
    /// Every such copy, in the order made.
    pub attempts: Vec<Duration>,
    /// The fastest copy into a table with the log's indexes.
    pub indexed: Duration,
}

/// Export the batch's events as COPY text, then time [`ATTEMPTS`] copies of them into
/// `bench_copy_N` tables and as many into `bench_copy_indexed_N` (created here; they go
/// with the benchmark database).
pub async fn copy_batch(database_url: &str, correlation_id: Uuid) -> anyhow::Result<CopyLimit> {
    let mut connection = PgConnection::connect(database_url)
        .await
        .context("connecting for the raw copy")?;
    // A UUID has no quotes in it: formatting it into the statement is safe, and COPY
    // takes no bind parameters.
    let export = format!(
        "copy (select * from workflow_events where correlation_id = '{correlation_id}' \
         order by position) to stdout"
    );
    let mut data = Vec::new();
    {
        let mut stream = connection
            .copy_out_raw(&export)
            .await
            .context("exporting the batch's events")?;
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk.context("reading the exported events")?);
        }
    }
    let (rows, attempts) =
        copies(&mut connection, &data, "bench_copy", "including defaults").await?;
    let (_, indexed) = copies(
        &mut connection,
        &data,
        "bench_copy_indexed",
        "including defaults including indexes",
    )
    .await?;
    connection.close().await.ok();
    Ok(CopyLimit {
        rows,
        bytes: data.len(),
        elapsed: attempts.iter().min().copied().unwrap_or_default(),
        attempts,
        indexed: indexed.iter().min().copied().unwrap_or_default(),
    })
}

/// Time [`ATTEMPTS`] copies of `data` into fresh tables `{prefix}_N`, each created
/// `like workflow_events {including}`: the rows copied and each copy's time.
async fn copies(
    connection: &mut PgConnection,
    data: &[u8],
    prefix: &str,
    including: &str,
) -> anyhow::Result<(u64, Vec<Duration>)> {
    let mut rows = 0;
    let mut attempts = Vec::with_capacity(ATTEMPTS);
    for attempt in 0..ATTEMPTS {
        let table = format!("{prefix}_{attempt}");
        connection
            .execute(format!("create table {table} (like workflow_events {including})").as_str())
            .await
            .with_context(|| format!("creating {table}"))?;
        let started = Instant::now();
        let mut copy = connection
            .copy_in_raw(&format!("copy {table} from stdin"))
            .await
            .context("starting the raw copy")?;
        for chunk in data.chunks(SEND_CHUNK_BYTES) {
            copy.send(chunk).await.context("sending copy data")?;
        }
        rows = copy.finish().await.context("finishing the raw copy")?;
        attempts.push(started.elapsed());
    }
    Ok((rows, attempts))
}
