//! Assets: single changes (`POST /assets`, `PATCH /assets/{id}`, `DELETE /assets/{id}`),
//! each its own batch.

pub mod commands;
pub mod input;
pub mod store;

pub use commands::{create, delete, update, AssetError, CommandOutcome};
pub use input::{AssetPatch, NewAsset};
