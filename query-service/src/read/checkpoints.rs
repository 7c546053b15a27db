//! `projector_checkpoints`: how far the projection service has applied the log.

use sqlx::PgPool;

/// The highest position any projector has applied (0 before the first event). Every
/// event up to it is visible in `rm_events`, because a projector commits its rows and
/// its checkpoint in one transaction.
pub async fn projected_upto(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select coalesce(max(position), 0)::bigint from projector_checkpoints")
        .fetch_one(pool)
        .await
}
