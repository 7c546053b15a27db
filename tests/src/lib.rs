//! Test harness shared by the end-to-end tests: a fresh Postgres database and a fresh
//! JetStream stream + subject prefix per test, so tests run in parallel and leave
//! nothing behind, and the services started in-process on port 0.

pub mod apps;
pub mod arbitrary;
pub mod auth;
pub mod client;
pub mod drive;
pub mod metrics;
pub mod nats_server;
pub mod plant;
pub mod process;
pub mod read_models;
pub mod resources;
pub mod stream;
pub mod ws;

pub use auth::token;
pub use resources::{TestDatabase, TestNats};
