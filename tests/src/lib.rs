//! Test harness shared by the end-to-end tests: a fresh Postgres database and a fresh
//! JetStream stream + subject prefix per test, so tests run in parallel and leave
//! nothing behind.

pub mod resources;

pub use resources::{TestDatabase, TestNats};
