//! `query-service`: the read side of SYNAPSE.
//!
//! It answers HTTP queries from the read models the projection service maintains
//! ([`read`]), and streams live events to WebSocket clients from JetStream ([`live`]).
//!
//! **Architecture invariant:** this crate reads only read models (`rm_*`,
//! `projector_checkpoints`) and JetStream; it never touches command-side tables and never
//! writes anything.

pub mod config;
pub mod export;
pub mod http;
pub mod live;
pub mod read;
pub mod startup;
pub mod state;
