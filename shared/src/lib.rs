//! `synapse-shared`: the one place where SYNAPSE's wire types live.
//!
//! Every service depends on this crate for the event envelope ([`event`]), the NATS
//! subject scheme ([`subject`]), the JetStream headers ([`nats`]), configuration pieces
//! ([`config`]), database bootstrapping ([`db`]), the HTTP error format ([`problem`]) and
//! bearer-token authentication with roles ([`auth`]).
//! **Architecture invariant:** no other crate defines a type that crosses a process
//! boundary; if two services need to agree on it, it is defined here.

pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod event;
pub mod event_log;
pub mod http_metrics;
pub mod nats;
pub mod nats_credentials;
pub mod problem;
pub mod shutdown;
pub mod subject;
pub mod telemetry;
pub mod unread_body;

pub use event::{AggregateType, EventEnvelope, EventType, NewEvent};
pub use problem::Problem;
pub use subject::SubjectScheme;
