//! `projector_checkpoints`: how far the projection service has applied the log.

use sqlx::PgPool;

/// The projector that writes `rm_events`; must match the projection service's
/// `projectors::asset_history::NAME` (the two crates share no code but this name).
pub const EVENTS_PROJECTOR: &str = "asset_history";

/// The last position the `rm_events` projector has applied (0 before its first event).
/// Every event up to it is visible in `rm_events`, because the projector commits its
/// rows and its checkpoint in one transaction.
pub async fn events_projected_upto(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select coalesce(max(position), 0)::bigint from projector_checkpoints where projector = $1",
    )
    .bind(EVENTS_PROJECTOR)
    .fetch_one(pool)
    .await
}
