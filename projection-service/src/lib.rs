//! `projection-service`: turns the JetStream event stream into Postgres read models.
//!
//! Events arrive only from JetStream (never from command-side tables). Each projector
//! follows the stream with an ordered consumer, applies messages in batches and stores
//! its checkpoint in the same transaction as its read-model rows, so a redelivered or
//! duplicated message has no second effect and a restart resumes where it stopped.
//!
//! Code map:
//! - [`startup`]: [`startup::Application`], the process as `main` and the tests run it.
//! - [`config`]: the environment/CLI configuration.
//! - [`consumer`]: follows the stream, batches messages, backs off and recovers.
//! - [`leadership`]: one replica follows the stream at a time; the others stand by.
//! - [`apply`]: one batch, one transaction: lock the checkpoint, skip what was applied,
//!   project, advance the checkpoint.
//! - [`checkpoint`]: the `projector_checkpoints` table.
//! - [`projectors`]: one module per read model, each owning its tables' SQL.
//! - [`lag`]: the projector position and lag gauges.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`.

pub mod apply;
pub mod backoff;
pub mod checkpoint;
pub mod config;
pub mod consumer;
pub mod http;
pub mod lag;
pub mod leadership;
pub mod projectors;
pub mod rebuild;
pub mod startup;
