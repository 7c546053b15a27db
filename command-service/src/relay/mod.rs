//! The relay: publishes every committed event, in position order, to JetStream.
//!
//! - **One publisher across replicas:** a lease with an expiry that the leader renews
//!   ([`leader`]); a frozen leader loses it after [`leader::LEASE_TTL`]. A paused old
//!   leader that wakes up cannot corrupt the stream: every publish names the stream
//!   sequence it expects to follow (`Nats-Expected-Last-Sequence`) and carries
//!   `Nats-Msg-Id = event_id`.
//! - **Nothing lost, nothing duplicated, in order:** the stream itself is the
//!   checkpoint. On every (re)start the relay reads the stream's last message, takes the
//!   position from its `Synapse-Position` header and continues after it
//!   ([`publisher::StreamTail`]). Because each publish expects the previous sequence,
//!   a failed publish makes all later ones in flight fail too: the stream never holds
//!   a later event without the earlier ones.
//! - **NATS down:** commands do not depend on the relay; it retries with capped
//!   backoff and catches up from the log when NATS returns.
//! - **Wakes without busy polling:** `LISTEN synapse_workflow_events` (a NOTIFY sent by
//!   the append trigger at commit), with a slow poll as a safety net since a
//!   reconnecting listener misses notifications.

pub mod leader;
pub mod publisher;

use publisher::{Publisher, StreamTail};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::Duration;
use synapse_shared::config::NatsArgs;
use synapse_shared::shutdown::CancellationToken;

/// How many events one publish round reads and pipelines. Large enough to amortise
/// the round trips, small enough that a round's envelopes stay a few MB.
const ROUND_SIZE: i64 = 500;
/// Safety-net poll when no NOTIFY arrives.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often an idle relay checks that the stream still ends where it left it.
const STREAM_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often a follower retries to become the leader: well inside the lease's lifetime,
/// so a takeover happens soon after a lease runs out.
const FOLLOWER_RETRY: Duration = Duration::from_secs(1);
/// Cap of the exponential backoff after NATS or Postgres errors.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the lag gauge is sampled.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Everything the relay needs.
#[derive(Clone)]
pub struct Relay {
    pub pool: PgPool,
    pub database_url: String,
    pub nats: NatsArgs,
    pub client: async_nats::Client,
}

impl Relay {
    /// Run until `shutdown`: become leader, then publish. Errors are logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::spawn(sample_lag(self.pool.clone(), shutdown.clone()));
        let mut backoff = Duration::from_millis(100);
        let mut lease = leader::Lease::new(self.pool.clone());
        while !shutdown.is_cancelled() {
            match self.lead(&mut lease, &shutdown).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(error) if error.is::<publisher::StreamMismatch>() => {
                    metrics::gauge!("synapse_relay_stream_mismatch").set(1.0);
                    tracing::error!(error = format!("{error:#}"), "relay stopped publishing");
                    backoff = MAX_BACKOFF;
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "relay interrupted; retrying");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
        }
        lease.release().await;
        tracing::info!("relay stopped");
    }

    /// One leadership term: returns when leadership or a connection is lost.
    async fn lead(
        &self,
        lease: &mut leader::Lease,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        if !lease.acquire().await? {
            metrics::gauge!("synapse_relay_leader").set(0.0);
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(FOLLOWER_RETRY) => {}
            }
            return Ok(());
        }
        metrics::gauge!("synapse_relay_leader").set(1.0);
        tracing::info!(holder = %lease.holder(), "relay is the leader");
        let mut listener = PgListener::connect(&self.database_url).await?;
        listener.listen(leader::NOTIFY_CHANNEL).await?;

        let publisher = Publisher::connect(&self.client, &self.nats).await?;
        let mut tail = publisher.tail(&self.pool).await?;
        // The stream's tail is where publishing resumes: the checkpoint (and the lag
        // sampled from it) says so, also for a stream emptied since it was written.
        record_checkpoint(&self.pool, tail.position).await?;
        metrics::gauge!("synapse_relay_stream_mismatch").set(0.0);
        tracing::info!(
            position = tail.position,
            sequence = tail.sequence,
            "relay resumes"
        );
        let mut checked = tokio::time::Instant::now();
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if !lease.still_held().await? {
                metrics::gauge!("synapse_relay_leader").set(0.0);
                anyhow::bail!("lost the relay lease");
            }
            let events =
                synapse_shared::event_log::read_stored_after(&self.pool, tail.position, ROUND_SIZE)
                    .await?;
            if events.is_empty() {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    notification = tokio::time::timeout(IDLE_POLL, listener.recv()) => {
                        if let Ok(Err(error)) = notification {
                            tracing::warn!(%error, "relay listener error; polling");
                        }
                    }
                }
                // While idle, look at the stream now and then: one that lost messages
                // (its store deleted, an OS crash losing unsynced writes) is refilled
                // from the log now, not when the next command comes. One gone is an
                // error here: the next term creates it again.
                if checked.elapsed() >= STREAM_CHECK_EVERY {
                    checked = tokio::time::Instant::now();
                    let now = publisher.tail(&self.pool).await?;
                    if now != tail {
                        tracing::warn!(
                            was = tail.position,
                            now = now.position,
                            "the stream's tail moved under the relay; publishing again from it"
                        );
                        record_checkpoint(&self.pool, now.position).await?;
                        tail = now;
                    }
                }
                continue;
            }
            tail = publish_round(&publisher, &self.pool, tail, &events).await?;
        }
    }
}

/// Keep `synapse_relay_lag_events` at the events the log holds beyond the relay's
/// checkpoint, every [`LAG_EVERY`], whatever the relay is doing: above all while it
/// cannot publish (NATS down or frozen), when a gauge set only after successful rounds
/// would go on showing the last one's (usually 0).
async fn sample_lag(pool: PgPool, shutdown: CancellationToken) {
    loop {
        let lag: Result<(Option<i64>,), sqlx::Error> = sqlx::query_as(
            "select (select max(position) from workflow_events)
                 - coalesce((select position from relay_checkpoint where relay = 'relay'), 0)",
        )
        .fetch_one(&pool)
        .await;
        match lag {
            Ok((lag,)) => {
                metrics::gauge!("synapse_relay_lag_events").set(lag.unwrap_or(0).max(0) as f64)
            }
            Err(error) => tracing::debug!(%error, "cannot sample the relay lag"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(LAG_EVERY) => {}
        }
    }
}

async fn publish_round(
    publisher: &Publisher,
    pool: &PgPool,
    tail: StreamTail,
    events: &[synapse_shared::event_log::StoredEvent],
) -> anyhow::Result<StreamTail> {
    let outcome = publisher.publish(tail, events).await;
    let reached = outcome.reached;
    if reached.position > tail.position {
        metrics::counter!("synapse_relay_published_total").increment(outcome.published);
        // Advanced only after the acks: a crash before this line republishes from the
        // stream's tail, which the stream already holds, so nothing is duplicated.
        record_checkpoint(pool, reached.position).await?;
    }
    match outcome.error {
        Some(error) => Err(error),
        None => Ok(reached),
    }
}

/// The checkpoint row is for operators (the stream's last message is the relay's real
/// checkpoint), so its commit does not wait for the WAL flush: one fsync per publish
/// round would compete with the command transactions' commits.
async fn record_checkpoint(pool: &PgPool, position: i64) -> Result<(), sqlx::Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query("set local synchronous_commit = off")
        .execute(&mut *transaction)
        .await?;
    sqlx::query(
        "insert into relay_checkpoint (relay, position) values ('relay', $1)
         on conflict (relay) do update set position = excluded.position, updated_at = now()",
    )
    .bind(position)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await
}
