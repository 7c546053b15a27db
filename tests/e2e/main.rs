//! End-to-end tests: one binary (one link step) with a module per area.

mod projection;
mod query;
