//! Batch rollback (`POST /rules/rollback`): every aggregate a batch touched returns to
//! its pre-batch state (from `execution_snapshots`), as a new batch of `ROLLBACK`
//! events; the original events are marked rolled back beside the log, never rewritten.
//!
//! - [`analyze`]: what a rollback would restore, and which aggregates a later batch
//!   changed since (conflicts, with the later batches and a field-level diff);
//! - [`restore`]: writing one rollback batch in one transaction;
//! - [`cascade`]: rolling back later batches first, newest first.

pub mod analyze;
pub mod cascade;
pub mod restore;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most restorations and most conflicts one answer lists (a dry run, a 409, the
/// aggregates a partial rollback left alone); the counts beside them cover everything.
/// Listing all made the dry run of a 50,000-asset batch a 34 MB answer, and its 409 one
/// of 12.5 MB, built in memory and kept with the `Idempotency-Key`. The same bound as
/// the entries of an execution's dry run.
pub const MAX_LISTED: usize = crate::execute::preview::MAX_ENTRIES;

/// How to treat aggregates a later batch changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuse the whole rollback if anything conflicts (409 with the report).
    #[default]
    Strict,
    /// Roll back what does not conflict; report the rest.
    Partial,
    /// Roll back the later batches first (newest first), then this one.
    Cascade,
}

/// Body of `POST /rules/rollback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The batch to roll back.
    pub correlation_id: Uuid,
    #[serde(default)]
    pub mode: Mode,
    /// Report what would happen and write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Why a rollback was refused.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("batch {0} does not exist")]
    NotFound(Uuid),
    #[error("batch {0} is still running")]
    StillRunning(Uuid),
    #[error(
        "batch {correlation_id} was already rolled back by {rolled_back_by}{}{}",
        redone_by.map_or_else(String::new, |redone_by| format!(
            "; its changes are in effect again since {redone_by} (a rollback of a \
             rollback): roll back {redone_by} to undo them again"
        )),
        undone_again_by.map_or_else(String::new, |undone| format!(
            "; rolled back and redone since, its changes are undone again, last by \
             {undone}: nothing is left to roll back"
        ))
    )]
    AlreadyRolledBack {
        correlation_id: Uuid,
        rolled_back_by: Uuid,
        /// The last of the rollbacks of rollbacks since, where it brought the changes
        /// back: the one to roll back to undo them again.
        redone_by: Option<Uuid>,
        /// The last of them, where it undid the changes again.
        undone_again_by: Option<Uuid>,
    },
    #[error("later batches changed {} of the aggregates this batch touched", .0.conflict_count)]
    Conflicts(analyze::Analysis),
    #[error("cascade would roll back more than {0} batches")]
    CascadeTooLong(usize),
    /// Another writer changed an aggregate between the analysis and the append (the
    /// log's unique (aggregate, version) caught it); nothing was written.
    #[error("an aggregate of the batch changed while rolling back; retry")]
    Concurrent,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<crate::store::AppendError> for RollbackError {
    fn from(error: crate::store::AppendError) -> Self {
        match error {
            crate::store::AppendError::Database(error) => RollbackError::Database(error),
            // The analysis reads aggregates without locking them, so a concurrent
            // single change can take the version the rollback meant to append.
            crate::store::AppendError::VersionConflict { .. }
            | crate::store::AppendError::BatchEnded(_) => RollbackError::Concurrent,
        }
    }
}
