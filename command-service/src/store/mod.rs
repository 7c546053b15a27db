//! The command side's write path: the event log, batches and pre-batch snapshots.
//!
//! **Architecture invariant:** every change to command-side state happens in one
//! transaction that also appends its events ([`append`]) and, for the first touch of
//! an aggregate in a batch, its snapshot ([`snapshot`]). Events are appended last, so
//! the append lock (see `migrations/command/1001_event_log.sql`) is held only for the
//! insert and the commit.

pub mod append;
pub mod batches;
pub mod single;
pub mod snapshot;
pub mod statistics;

pub use append::{append, AppendError};
