//! The append limit: how fast this Postgres takes exactly the rows an execution wrote,
//! by the fastest path it has (`COPY ... FROM STDIN`), into a plain table shaped like
//! the log (no triggers; `like ... including defaults` copies no index either).

use anyhow::Context;
use futures::StreamExt;
use sqlx::{Connection, Executor, PgConnection};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Bytes per `CopyData` message sent: large enough that message overhead vanishes.
const SEND_CHUNK_BYTES: usize = 1 << 20;

/// What the raw COPY did.
pub struct CopyLimit {
    pub rows: u64,
    pub bytes: usize,
    pub elapsed: Duration,
}

/// Export the batch's events as COPY text, then time a COPY of them into `bench_copy`
/// (created here; it goes with the benchmark database).
pub async fn copy_batch(database_url: &str, correlation_id: Uuid) -> anyhow::Result<CopyLimit> {
    let mut connection = PgConnection::connect(database_url)
        .await
        .context("connecting for the raw copy")?;
    connection
        .execute("create table bench_copy (like workflow_events including defaults)")
        .await
        .context("creating bench_copy")?;
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
    let started = Instant::now();
    let mut copy = connection
        .copy_in_raw("copy bench_copy from stdin")
        .await
        .context("starting the raw copy")?;
    for chunk in data.chunks(SEND_CHUNK_BYTES) {
        copy.send(chunk).await.context("sending copy data")?;
    }
    let rows = copy.finish().await.context("finishing the raw copy")?;
    let elapsed = started.elapsed();
    connection.close().await.ok();
    Ok(CopyLimit {
        rows,
        bytes: data.len(),
        elapsed,
    })
}
