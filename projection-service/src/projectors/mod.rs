//! Read models, one module per projector; each owns the SQL of its tables.

pub mod asset_history;
pub mod batches;
pub mod disciplines;

pub use asset_history::AssetHistoryProjector;
pub use batches::BatchesProjector;
pub use disciplines::DisciplinesProjector;

/// The checkpoint name of every projector the service runs: caught up means all of
/// these reached the log's head.
pub const ALL: &[&str] = &[asset_history::NAME, batches::NAME, disciplines::NAME];

use sqlx::PgConnection;
use std::future::Future;
use synapse_shared::EventEnvelope;

/// Any one of the service's projectors, so code that runs "each projector" (the shared
/// stream reader, a rebuild by name) holds them in one list.
#[derive(Debug, Clone, Copy)]
pub enum AnyProjector {
    AssetHistory(AssetHistoryProjector),
    Batches(BatchesProjector),
    Disciplines(DisciplinesProjector),
}

impl AnyProjector {
    /// Every projector the service runs, in [`ALL`] order.
    pub fn all() -> Vec<Self> {
        ALL.iter().filter_map(|name| Self::named(name)).collect()
    }

    /// The projector with this checkpoint name.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            asset_history::NAME => Some(Self::AssetHistory(AssetHistoryProjector)),
            batches::NAME => Some(Self::Batches(BatchesProjector)),
            disciplines::NAME => Some(Self::Disciplines(DisciplinesProjector)),
            _ => None,
        }
    }
}

impl Projector for AnyProjector {
    fn name(&self) -> &'static str {
        match self {
            Self::AssetHistory(projector) => projector.name(),
            Self::Batches(projector) => projector.name(),
            Self::Disciplines(projector) => projector.name(),
        }
    }

    fn writes_ahead(&self) -> bool {
        match self {
            Self::AssetHistory(projector) => projector.writes_ahead(),
            Self::Batches(projector) => projector.writes_ahead(),
            Self::Disciplines(projector) => projector.writes_ahead(),
        }
    }

    async fn write_ahead(
        &self,
        connection: &mut PgConnection,
        events: &[&EventEnvelope],
    ) -> Result<(), sqlx::Error> {
        match self {
            Self::AssetHistory(projector) => projector.write_ahead(connection, events).await,
            Self::Batches(projector) => projector.write_ahead(connection, events).await,
            Self::Disciplines(projector) => projector.write_ahead(connection, events).await,
        }
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&EventEnvelope],
    ) -> Result<(), sqlx::Error> {
        match self {
            Self::AssetHistory(projector) => projector.apply(connection, events).await,
            Self::Batches(projector) => projector.apply(connection, events).await,
            Self::Disciplines(projector) => projector.apply(connection, events).await,
        }
    }
}

/// Turns events into read-model rows.
///
/// A projector is called inside the transaction that also advances its checkpoint, with
/// events it has not seen before, in position order. It must not commit.
///
/// Its work comes in two parts. [`Projector::write_ahead`] may run before the
/// checkpoint row is locked, while the previous batch's transaction still runs (see
/// [`crate::apply::prepare`]): it may only insert rows that no other batch writes or
/// reads, such as rows keyed by the events' own positions. [`Projector::apply`] runs
/// after the checkpoint is locked, so the previous batch has committed, and does the
/// rest: every update of rows that other batches touch too.
pub trait Projector: Send + Sync + 'static {
    /// The name of its checkpoint row and its metrics label; never change it, or the
    /// projector starts over from the beginning of the stream.
    fn name(&self) -> &'static str;

    /// Whether [`Projector::write_ahead`] writes anything.
    fn writes_ahead(&self) -> bool {
        false
    }

    /// Insert the rows of `events` that no other batch touches; nothing by default.
    fn write_ahead(
        &self,
        connection: &mut PgConnection,
        events: &[&EventEnvelope],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        let _ = (connection, events);
        async { Ok(()) }
    }

    /// Write the rest of what `events` change, using as few statements as the batch
    /// allows.
    fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&EventEnvelope],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Both parts, one after the other: the whole projection of `events`.
    fn project(
        &self,
        connection: &mut PgConnection,
        events: &[&EventEnvelope],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async move {
            self.write_ahead(connection, events).await?;
            self.apply(connection, events).await
        }
    }
}
