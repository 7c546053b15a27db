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
pub mod recovery;
pub mod relay;
pub mod rollback;
pub mod rules;
pub mod startup;
pub mod store;

pub use config::Config;
pub use startup::Application;
