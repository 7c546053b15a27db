//! One replica applies at a time.
//!
//! Two replicas applying the same batches at once waited on each other for good: each
//! writes a batch's rows ahead in a transaction it holds open until the batch before
//! commits (`apply::prepare`), and the other replica's batch before waited on those
//! rows' positions while this one's waited on the other's, a cycle that runs through
//! the application, where Postgres cannot see it. So the replicas take turns: the one
//! holding a session advisory lock on a connection of its own follows the stream, the
//! others stand by and take the lock as soon as its holder stops, dies or loses that
//! connection (the lock ends with the session).

use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The advisory lock's key: beyond the `int4` range of the `hashtext` keys a rebuild
/// claims, and not the command service's cascade lock, should both share a database.
pub const KEY: i64 = 0x7379_6e61_7073_6501;
/// How often a replica standing by tries to take the lock, and the holder checks that
/// its connection (and so the lock) is still there.
const INTERVAL: Duration = Duration::from_secs(1);

/// The lock, held: following the stream is this replica's until [`Lease::token`] is
/// cancelled (shutdown, or the lock's connection lost). Dropping it lets go.
pub struct Lease {
    token: CancellationToken,
    keeper: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Wait until this replica holds the lock; `None` if `shutdown` comes first.
    pub async fn take(
        pool: &PgPool,
        shutdown: &CancellationToken,
    ) -> Result<Option<Lease>, sqlx::Error> {
        let mut connection = pool.acquire().await?.detach();
        // A holder frozen (SIGSTOP, a stalled VM) keeps its session, and with it the
        // lock, open: Postgres ends a session idle this long, and the holder's keeper
        // is never idle half as long while it runs.
        sqlx::query("set idle_session_timeout = '5s'")
            .execute(&mut connection)
            .await?;
        let mut told = false;
        loop {
            let (taken,): (bool,) = sqlx::query_as("select pg_try_advisory_lock($1)")
                .bind(KEY)
                .fetch_one(&mut connection)
                .await?;
            if taken {
                tracing::info!("this replica applies the stream now");
                metrics::gauge!("synapse_projection_active").set(1.0);
                let token = shutdown.child_token();
                let keeper = tokio::spawn(keep(connection, token.clone()));
                return Ok(Some(Lease { token, keeper }));
            }
            if !told {
                tracing::info!("another replica applies the stream; standing by to take over");
                told = true;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(INTERVAL) => {}
            }
        }
    }

    /// Cancelled when following the stream is no longer this replica's to do.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The keeper owns the connection: ending it ends the session, and the lock.
        self.keeper.abort();
        metrics::gauge!("synapse_projection_active").set(0.0);
    }
}

/// Hold the lock's connection, checking it every [`INTERVAL`]; if it fails, cancel
/// `token`. Once `token` is cancelled, hold it as it is until the lease is dropped:
/// the batch in hand is finished first, and another replica must not start meanwhile.
async fn keep(mut connection: PgConnection, token: CancellationToken) {
    loop {
        tokio::select! {
            () = token.cancelled() => std::future::pending::<()>().await,
            () = tokio::time::sleep(INTERVAL) => {}
        }
        if let Err(error) = sqlx::query("select 1").execute(&mut connection).await {
            tracing::warn!(%error, "lost the connection that holds the projection's lock; stopping");
            token.cancel();
            return;
        }
    }
}
