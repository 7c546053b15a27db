//! CSV export of the current assets (`GET /assets/export.csv`), streamed.
//!
//! The file has the columns the import reads: `tag, asset_type, discipline, name,
//! area`, then one column per property name found in the exported assets, in byte
//! order. Rows are ordered by tag. Text cells that a spreadsheet would run as a formula
//! are defused ([`cells`]); numbers and booleans are written as the import types them.
//!
//! One export is one read-only snapshot transaction: the header names exactly the
//! properties of the rows that follow, whatever is written meanwhile. A task owns the
//! transaction and streams the rows from one query into a small bounded channel that
//! the response body drains, so a big plant never sits in memory and a slow client
//! slows the query down rather than filling a buffer.

pub mod cells;
pub mod rows;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use rows::{AssetFilter, AssetRow};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore, SemaphorePermit};

/// The columns every export starts with, in this order.
pub const FIXED_COLUMNS: [&str; 5] = ["tag", "asset_type", "discipline", "name", "area"];

/// Exports running at once, per process. Each holds a database connection (of the
/// pool's 10 by default) and a snapshot for as long as its client downloads; four
/// leave the pool to everything else. One more gets a 503 and retries.
pub const MAX_CONCURRENT_EXPORTS: usize = 4;

/// Bytes gathered before they are handed to the response body: large enough that
/// chunk overhead is negligible, small enough that memory per export stays flat.
const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks waiting for the client: the only buffer between the query and the socket.
const CHUNKS_IN_FLIGHT: usize = 4;

/// A client that takes no chunk for this long has stopped reading: its export ends,
/// releasing the connection and the snapshot.
const CLIENT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

static RUNNING: Semaphore = Semaphore::const_new(MAX_CONCURRENT_EXPORTS);

/// Why an export could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{MAX_CONCURRENT_EXPORTS} exports are already running")]
    Busy,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The body of a started export: CSV bytes, or an error once the response is under
/// way (the client then sees a broken transfer, never a silently short file).
pub type CsvStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Open the snapshot, read the header, and start streaming the rows. Errors up to the
/// header are returned here, while the response can still be a problem.
pub async fn start(pool: &PgPool, filter: AssetFilter) -> Result<CsvStream, StartError> {
    let permit = RUNNING.try_acquire().map_err(|_| StartError::Busy)?;
    let mut transaction = crate::read::snapshot(pool).await?;
    let columns = rows::property_columns(&mut transaction, &filter).await?;
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::spawn(produce(transaction, filter, columns, sender, permit));
    let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    Ok(chunks.boxed())
}

/// Why streaming stopped before the end.
enum Stop {
    /// The client went away or stopped reading: nothing to tell anyone.
    ClientGone,
    Failed(anyhow::Error),
}

/// Runs as its own task: writes the header and every row into chunks for the body.
async fn produce(
    mut transaction: Transaction<'static, Postgres>,
    filter: AssetFilter,
    columns: Vec<rows::Column>,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
    _permit: SemaphorePermit<'static>,
) {
    match write_all(&mut transaction, &filter, &columns, &sender).await {
        Ok(()) | Err(Stop::ClientGone) => {}
        Err(Stop::Failed(error)) => {
            tracing::error!(error = %format!("{error:#}"), "CSV export failed mid-stream");
            let broken = std::io::Error::other("the export failed; the file is incomplete");
            let _ = sender.send(Err(broken)).await;
        }
    }
    // Read-only: ending the transaction either way changes nothing.
    let _ = transaction.rollback().await;
}

async fn write_all(
    connection: &mut PgConnection,
    filter: &AssetFilter,
    columns: &[rows::Column],
    sender: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), Stop> {
    let mut encoder = Encoder::new();
    let header: Vec<String> = columns.iter().map(rows::Column::header).collect();
    encoder.header(&header)?;
    let mut assets = rows::assets(connection, filter);
    while let Some(row) = assets.next().await {
        let row = row.map_err(|error| Stop::Failed(error.into()))?;
        encoder.row(&row, columns)?;
        if encoder.buffered() >= CHUNK_BYTES {
            hand_over(sender, encoder.take()?).await?;
        }
    }
    hand_over(sender, encoder.take()?).await
}

async fn hand_over(
    sender: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    chunk: Bytes,
) -> Result<(), Stop> {
    if chunk.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(CLIENT_STALL_TIMEOUT, sender.send(Ok(chunk))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_closed)) => Err(Stop::ClientGone),
        Err(_elapsed) => {
            tracing::info!("CSV export: the client stopped reading; ending the export");
            Err(Stop::ClientGone)
        }
    }
}

/// Records to CSV bytes (RFC 4180 quoting by the `csv` crate), collected in memory
/// until taken.
struct Encoder {
    writer: csv::Writer<Vec<u8>>,
}

impl Encoder {
    fn new() -> Self {
        Self {
            writer: Self::writer(),
        }
    }

    fn writer() -> csv::Writer<Vec<u8>> {
        csv::WriterBuilder::new()
            .flexible(true)
            .from_writer(Vec::with_capacity(CHUNK_BYTES + 4096))
    }

    fn header(&mut self, properties: &[String]) -> Result<(), Stop> {
        let names = FIXED_COLUMNS
            .iter()
            .map(|name| cells::text(name))
            .chain(properties.iter().map(|name| cells::text(name)));
        self.write(names)
    }

    fn row(&mut self, row: &AssetRow, columns: &[rows::Column]) -> Result<(), Stop> {
        let fixed = [
            row.tag.as_str(),
            row.asset_type.as_str(),
            row.discipline.as_str(),
            row.name.as_deref().unwrap_or(""),
            row.area.as_deref().unwrap_or(""),
        ];
        let values = row.properties.as_ref().and_then(|value| value.as_object());
        let cells = fixed
            .into_iter()
            .map(cells::text)
            .chain(columns.iter().map(|column| {
                let value = values.and_then(|values| values.get(&column.name));
                match column.declared {
                    Some(rows::JSON) => cells::json(value),
                    _ => cells::property(value),
                }
            }));
        self.write(cells)
    }

    fn write<'a>(
        &mut self,
        cells: impl Iterator<Item = std::borrow::Cow<'a, str>>,
    ) -> Result<(), Stop> {
        self.writer
            .write_record(cells.map(|cell| cell.into_owned()))
            .map_err(|error| {
                Stop::Failed(anyhow::Error::new(error).context("encoding a CSV record"))
            })
    }

    fn buffered(&self) -> usize {
        self.writer.get_ref().len()
    }

    /// Everything encoded so far, leaving the encoder empty (with a fresh writer:
    /// every record has the header's length by construction).
    fn take(&mut self) -> Result<Bytes, Stop> {
        let full = std::mem::replace(&mut self.writer, Self::writer());
        let bytes = full
            .into_inner()
            .map_err(|error| Stop::Failed(anyhow::anyhow!("flushing CSV: {}", error.error())))?;
        Ok(Bytes::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(encoder: &mut Encoder) -> String {
        match encoder.take() {
            Ok(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
            Err(_) => panic!("encoding failed"),
        }
    }

    #[test]
    fn rows_follow_the_header_with_empty_cells_for_missing_properties() {
        let mut encoder = Encoder::new();
        let column = |name: &str, declared| rows::Column {
            name: name.to_owned(),
            declared,
        };
        let columns = [
            column("power_kw", None),
            column("note", None),
            column("mixed", Some(rows::JSON)),
        ];
        let header: Vec<String> = columns.iter().map(rows::Column::header).collect();
        assert!(encoder.header(&header).is_ok());
        let row = AssetRow {
            tag: "P-101".to_owned(),
            asset_type: "PUMP".to_owned(),
            discipline: "MECHANICAL".to_owned(),
            name: Some("Feed pump, \"north\"".to_owned()),
            area: None,
            properties: Some(json!({"power_kw": -5.5, "mixed": 7})),
        };
        assert!(encoder.row(&row, &columns).is_ok());
        let second = AssetRow {
            tag: "=HYPERLINK(\"x\")".to_owned(),
            properties: Some(json!({"note": "@SUM(A1)", "mixed": "=7"})),
            ..row
        };
        assert!(encoder.row(&second, &columns).is_ok());
        assert_eq!(
            text(&mut encoder),
            "tag,asset_type,discipline,name,area,power_kw,note,mixed:json\n\
             P-101,PUMP,MECHANICAL,\"Feed pump, \"\"north\"\"\",,-5.5,,7\n\
             \"'=HYPERLINK(\"\"x\"\")\",PUMP,MECHANICAL,\"Feed pump, \"\"north\"\"\",,,'@SUM(A1),\"\"\"=7\"\"\"\n"
        );
        assert_eq!(text(&mut encoder), "", "taking leaves the encoder empty");
    }
}
