//! SYNAPSE command service: the write side. It owns the event log
//! (`workflow_events`), `execution_snapshots` and the current-state tables, and runs
//! the relay that publishes the log to JetStream.

pub mod assets;
pub mod config;
pub mod execute;
pub mod http;
pub mod idempotency;
pub mod import;
pub mod links;
pub mod rebuild;
pub mod recovery;
pub mod relay;
pub mod rollback;
pub mod rules;
pub mod startup;
pub mod store;

pub use config::Config;

/// Stack of the runtime's threads: rules' CEL expressions are evaluated by recursion
/// over their syntax tree (up to [`rules::expression::MAX_DEPTH`] levels deep), which
/// in a debug build overflowed tokio's default of 2 MiB at 64 levels.
pub const THREAD_STACK: usize = 8 << 20;

pub use startup::Application;
