//! Queries over the read models the projection service maintains.
//!
//! The tables are defined in `migrations/read` (owned by the projection service); this
//! module holds the query service's SQL against them. Queries are checked at runtime
//! (`query_as` + `FromRow`) and every value is bound, never formatted into SQL.

pub mod aggregates;
pub mod batches;
pub mod checkpoints;
pub mod disciplines;
pub mod events;
pub mod findings;
pub mod scan;
pub mod time_index;
