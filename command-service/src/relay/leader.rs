//! Relay leadership: a lease row with an expiry that the leader renews.
//!
//! A session advisory lock would survive a frozen leader (SIGSTOP, a paused VM) for as
//! long as its TCP connection stays open, leaving nobody publishing. A lease expires
//! by time instead. A leader that wakes after losing its lease may still try one
//! publish round before it renews; that round is fenced by the stream itself (each
//! publish names the sequence it expects to follow), so it fails instead of
//! duplicating or reordering.

use sqlx::PgPool;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Channel the append trigger notifies on commit.
pub const NOTIFY_CHANNEL: &str = "synapse_workflow_events";
/// How long a lease lasts without renewal: the longest time nobody publishes after a
/// leader freezes.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// Renew when this much of the lease is used, leaving room for a slow round trip.
const RENEW_AFTER: Duration = Duration::from_secs(1);

/// This process's claim on the relay lease.
pub struct Lease {
    pool: PgPool,
    holder: Uuid,
    /// Local deadline, on the monotonic clock (which keeps running while a process is
    /// stopped, so a thawed leader sees at once that its lease ran out).
    valid_until: Option<Instant>,
    renewed_at: Option<Instant>,
}

impl Lease {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            holder: Uuid::now_v7(),
            valid_until: None,
            renewed_at: None,
        }
    }

    pub fn holder(&self) -> Uuid {
        self.holder
    }

    /// Take or renew the lease if it is free, expired or ours. True if we hold it.
    pub async fn acquire(&mut self) -> Result<bool, sqlx::Error> {
        let asked_at = Instant::now();
        let row: Option<(Uuid,)> = sqlx::query_as(
            "insert into relay_lease (relay, holder, expires_at) values ('relay', $1, now() + make_interval(secs => $2))
             on conflict (relay) do update set holder = excluded.holder, expires_at = excluded.expires_at
                 where relay_lease.holder = excluded.holder or relay_lease.expires_at < now()
             returning holder",
        )
        .bind(self.holder)
        .bind(LEASE_TTL.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        let held = row.is_some();
        // Count the lease from when we asked: the database's expiry is at least that late.
        self.valid_until = held.then(|| asked_at + LEASE_TTL);
        self.renewed_at = held.then_some(asked_at);
        Ok(held)
    }

    /// Whether we may publish now: renews when due; false once the lease is lost.
    pub async fn still_held(&mut self) -> Result<bool, sqlx::Error> {
        let now = Instant::now();
        match (self.valid_until, self.renewed_at) {
            (Some(until), _) if now >= until => {
                // Expired locally (e.g. we were frozen): only a fresh acquire can say.
                self.acquire().await
            }
            (Some(_), Some(renewed)) if now.duration_since(renewed) < RENEW_AFTER => Ok(true),
            _ => self.acquire().await,
        }
    }

    /// Give the lease up (on shutdown) so a follower takes over at once.
    pub async fn release(&mut self) {
        let released = sqlx::query("delete from relay_lease where relay = 'relay' and holder = $1")
            .bind(self.holder)
            .execute(&self.pool)
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "could not release the relay lease; it expires by itself");
        }
        self.valid_until = None;
    }
}
