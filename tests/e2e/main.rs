//! End-to-end tests: one binary (one link step) with a module per area.

mod auth;
mod bad_input;
mod commands;
mod execute;
mod export;
mod faults;
mod import;
mod links;
mod live;
mod metrics;
mod nats_auth;
mod pipeline;
mod plan_locks;
mod projection;
mod query;
mod read_models;
mod read_replica;
mod rebuild;
mod recovery;
mod relay;
mod relay_outage;
mod rollback;
mod rollback_properties;
mod rollback_read;
mod write_ahead;
mod ws_fuzz;
