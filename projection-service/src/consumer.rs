//! Following the JetStream stream: one ordered consumer feeds every projector.
//!
//! The consumer starts right after the checkpoint of the projector that is furthest
//! behind, takes messages in batches, decodes each message once and hands each batch to
//! every projector, each in its own transaction with its own checkpoint, concurrently.
//! Batch n+1 is prepared ([`apply::prepare`]) while batch n is finished and committed
//! ([`apply::finish`]). A projector that already applied a position skips it, so
//! projectors at different checkpoints share one reader. Any failure (Postgres down, a
//! NATS error from the message stream, the stream ending) drops the consumer; after a
//! capped exponential back-off a new one starts from the checkpoints stored in
//! Postgres, which are the only progress that counts.
//!
//! One reader rather than one per projector: receiving and decoding a message was most
//! of the service's CPU, and three readers did it three times. The price is that a
//! projector that keeps failing holds the others back; it is retried with back-off and
//! logged by name.

use crate::apply::{self, Delivered, Prepared};
use crate::backoff::Backoff;
use crate::checkpoint::{self, Checkpoint};
use crate::config::ProjectorArgs;
use crate::lag;
use crate::leadership::Lease;
use crate::projectors::{AnyProjector, Projector};
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig, OrderedError};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use sqlx::PgPool;
use std::time::Duration;
use synapse_shared::config::NatsArgs;
use synapse_shared::nats::Reconnects;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// First pause after a failure: long enough not to spin, short enough that a blip
/// costs little.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between attempts while a dependency stays down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a consumer waiting for messages checks whether the NATS connection was
/// re-established. A server restart loses the ephemeral consumer, and the ordered
/// consumer notices only when its idle heartbeats lapse (15 s measured); a reconnect
/// seen here recreates it within about a second.
const RECONNECT_CHECK: Duration = Duration::from_secs(1);

/// Why the consumer stopped following the stream; every case is retried.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("creating or looking up the stream")]
    Stream(#[from] jetstream::context::CreateStreamError),
    #[error("reading the checkpoint of the {projector} projector")]
    Checkpoint {
        projector: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("creating the ordered consumer")]
    Consumer(#[from] jetstream::stream::ConsumerError),
    #[error("starting the message stream")]
    Messages(#[from] jetstream::consumer::StreamError),
    #[error("receiving a message")]
    Receive(#[from] OrderedError),
    #[error("reading a message's JetStream metadata")]
    Metadata(#[source] async_nats::Error),
    #[error("the message stream ended")]
    Ended,
    #[error("NATS reconnected, and a server restart drops the consumer: recreating it")]
    Reconnected,
    #[error("applying a batch with the {projector} projector")]
    Apply {
        projector: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// A projector and where its progress is published (for the lag gauges).
pub struct Follower {
    pub projector: AnyProjector,
    /// Receives the checkpoint whenever it is read or advanced.
    pub progress: watch::Sender<Option<Checkpoint>>,
}

/// Runs the projectors against the stream until shut down.
pub struct Consumer {
    followers: Vec<Follower>,
    pool: PgPool,
    jetstream: jetstream::Context,
    nats: NatsArgs,
    settings: ProjectorArgs,
}

impl Consumer {
    pub fn new(
        followers: Vec<Follower>,
        pool: PgPool,
        jetstream: jetstream::Context,
        nats: NatsArgs,
        settings: ProjectorArgs,
    ) -> Self {
        Self {
            followers,
            pool,
            jetstream,
            nats,
            settings,
        }
    }

    /// Follow the stream until `shutdown` is cancelled, while this replica holds the
    /// projection's lease ([`Lease`]); the batch being applied when either ends is
    /// finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF);
        while !shutdown.is_cancelled() {
            let lease = match Lease::take(&self.pool, &shutdown).await {
                Ok(Some(lease)) => lease,
                Ok(None) => break,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::error!(
                        %error,
                        retry_in_ms = delay.as_millis() as u64,
                        "projection could not ask for its lease"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            let following = lease.token();
            loop {
                match self.follow(following, &mut backoff).await {
                    Ok(()) => break,
                    Err(FollowError::Reconnected) => {
                        tracing::info!(
                            "NATS reconnected; following the stream with a new consumer"
                        );
                    }
                    Err(error) => {
                        let delay = backoff.next_delay();
                        let error = anyhow::Error::from(error);
                        tracing::error!(
                            error = format!("{error:#}"),
                            retry_in_ms = delay.as_millis() as u64,
                            "projection stopped following the stream; resuming from the checkpoints"
                        );
                        tokio::select! {
                            () = following.cancelled() => break,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
        tracing::info!("projection stopped");
    }

    /// Subscribe from the checkpoints and apply batches until shutdown (`Ok`) or failure.
    async fn follow(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), FollowError> {
        let reconnects = Reconnects::since_now(&self.jetstream.client());
        let (messages, mut expected) = self.subscribe().await?;
        // Receiving runs one batch ahead of applying: while Postgres commits batch n,
        // batch n+1 is collected and decoded. The channel holds one batch, so a
        // shutdown waits for at most a few.
        let (batches, mut received) = mpsc::channel(1);
        let receiver = tokio::spawn(receive(
            messages,
            reconnects,
            shutdown.clone(),
            self.settings.clone(),
            batches,
        ));
        // Dropping the receiver task with this guard stops it when applying fails, so
        // the next consumer does not compete with it.
        let _receiver = AbortOnDrop(receiver);
        // Applying overlaps too: batch n+1 is prepared (its rows written ahead, see
        // `apply::prepare`) while batch n finishes and commits. A batch is finished
        // only after the one before it committed; when that fails, the prepared one is
        // dropped, which rolls it back.
        let mut pending: Option<Pending> = None;
        loop {
            let (finished, next) = tokio::join!(
                self.finish(pending.take()),
                self.receive_and_prepare(&mut received, &mut expected),
            );
            if finished? {
                backoff.reset();
            }
            match next {
                Some(prepared) => pending = Some(prepared?),
                None => break,
            }
        }
        // The receiver hands on every error it meets, so it ends quietly only on
        // shutdown; anything else (a panic) must not stop the projection for good.
        if shutdown.is_cancelled() {
            Ok(())
        } else {
            Err(FollowError::Ended)
        }
    }

    /// The next batch from the receiver, prepared by every projector against the
    /// checkpoints `expected` (which are moved past it); `None` once the receiver ended.
    async fn receive_and_prepare(
        &self,
        received: &mut mpsc::Receiver<Batch>,
        expected: &mut [Checkpoint],
    ) -> Option<Result<Pending, FollowError>> {
        let batch = received.recv().await?;
        if batch.delivered.is_empty() {
            return Some(Ok(Pending {
                batch,
                prepared: Vec::new(),
            }));
        }
        let outcomes = futures::future::join_all(self.followers.iter().zip(expected.iter()).map(
            |(follower, expected)| {
                apply::prepare(&self.pool, &follower.projector, *expected, &batch.delivered)
            },
        ))
        .await;
        let mut prepared = Vec::with_capacity(outcomes.len());
        for ((follower, expected), outcome) in
            self.followers.iter().zip(expected.iter_mut()).zip(outcomes)
        {
            match outcome {
                Ok(ready) => {
                    *expected = ready.expected_after(&batch.delivered);
                    prepared.push(ready);
                }
                Err(source) => {
                    let projector = follower.projector.name();
                    return Some(Err(FollowError::Apply { projector, source }));
                }
            }
        }
        Some(Ok(Pending { batch, prepared }))
    }

    /// Finish a prepared batch with every projector, concurrently, each in its own
    /// transaction, then hand on the error that cut the batch short, if any. Every
    /// projector is waited for, so none is cut off mid-transaction when another fails;
    /// the first failure is returned. `Ok(true)` when something was applied.
    async fn finish(&self, pending: Option<Pending>) -> Result<bool, FollowError> {
        let Some(Pending { batch, prepared }) = pending else {
            return Ok(false);
        };
        let delivered = &batch.delivered;
        let outcomes = futures::future::join_all(self.followers.iter().zip(prepared).map(
            |(follower, prepared)| async move {
                let started = std::time::Instant::now();
                let outcome =
                    apply::finish(&self.pool, &follower.projector, prepared, delivered).await;
                (outcome, started.elapsed())
            },
        ))
        .await;
        let mut failure = None;
        for (follower, outcome) in self.followers.iter().zip(outcomes) {
            let projector = follower.projector.name();
            match outcome {
                (Ok(applied), took) => {
                    lag::record_applied(projector, &self.nats.nats_stream, &applied, took);
                    follower.progress.send_replace(Some(applied.checkpoint));
                    tracing::debug!(
                        projector,
                        applied = applied.applied,
                        skipped = applied.skipped,
                        position = applied.checkpoint.position,
                        took_ms = took.as_secs_f64() * 1e3,
                        "batch applied"
                    );
                }
                (Err(source), _) => {
                    failure.get_or_insert(FollowError::Apply { projector, source });
                }
            }
        }
        if let Some(failure) = failure.or(batch.error) {
            return Err(failure);
        }
        Ok(!delivered.is_empty())
    }

    /// A fresh ordered consumer starting right after the checkpoint of the projector
    /// that is furthest behind.
    /// Also returns every projector's checkpoint, in follower order.
    async fn subscribe(&self) -> Result<(Ordered, Vec<Checkpoint>), FollowError> {
        // Creating the stream here, not only at start-up, lets the projection service
        // start before the command service (or NATS) and still find its stream.
        let stream = synapse_shared::nats::ensure_stream(&self.jetstream, &self.nats).await?;
        let mut furthest_behind: Option<Checkpoint> = None;
        let mut checkpoints = Vec::with_capacity(self.followers.len());
        for follower in &self.followers {
            let projector = follower.projector.name();
            let checkpoint = checkpoint::read(&self.pool, projector)
                .await
                .map_err(|source| FollowError::Checkpoint { projector, source })?
                .unwrap_or_default();
            follower.progress.send_replace(Some(checkpoint));
            checkpoints.push(checkpoint);
            if furthest_behind
                .is_none_or(|behind| checkpoint.stream_sequence < behind.stream_sequence)
            {
                furthest_behind = Some(checkpoint);
            }
        }
        let checkpoint = furthest_behind.unwrap_or_default();
        let deliver_policy = start_after(checkpoint, &stream.cached_info().state);
        tracing::info!(
            ?deliver_policy,
            position = checkpoint.position,
            "following the stream"
        );
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: self.nats.subjects().all(),
                deliver_policy,
                ..Default::default()
            })
            .await?;
        Ok((consumer.messages().await?, checkpoints))
    }
}

/// Where a new consumer starts: right after the checkpoint's message.
fn start_after(checkpoint: Checkpoint, stream: &stream::State) -> DeliverPolicy {
    let consumed = checkpoint.stream_sequence();
    if consumed == 0 {
        return DeliverPolicy::All;
    }
    if stream.last_sequence < consumed {
        // The stream is younger than the checkpoint: it was deleted and recreated (and
        // refilled by the relay). Replaying it whole is safe because positions already
        // applied are skipped.
        tracing::warn!(
            consumed,
            last_sequence = stream.last_sequence,
            "the stream is behind the checkpoint; replaying it from its start"
        );
        return DeliverPolicy::All;
    }
    if stream.first_sequence > consumed + 1 {
        tracing::error!(consumed, first_sequence = stream.first_sequence,
            "messages after a checkpoint are gone from the stream; rebuild the read models from the event log");
    }
    DeliverPolicy::ByStartSequence {
        start_sequence: consumed + 1,
    }
}

/// Take batches from `messages` and hand them on until shutdown, an error (handed on
/// with the batch it cut short) or the applying side going away.
async fn receive(
    mut messages: Ordered,
    reconnects: Reconnects,
    shutdown: CancellationToken,
    settings: ProjectorArgs,
    batches: mpsc::Sender<Batch>,
) {
    while let Some(batch) = next_batch(&mut messages, &reconnects, &shutdown, &settings).await {
        let failed = batch.error.is_some();
        if batches.send(batch).await.is_err() || failed {
            break;
        }
    }
}

/// A batch whose transactions are prepared, one per follower, waiting to be finished.
struct Pending {
    batch: Batch,
    prepared: Vec<Prepared>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Messages taken from the stream for one transaction, and the error that cut the
/// batch short, if any (the messages before it are still applied).
#[derive(Default)]
struct Batch {
    delivered: Vec<Delivered>,
    error: Option<FollowError>,
}

impl Batch {
    /// Add what the stream yielded; `false` when the batch must end here.
    fn take(&mut self, next: Option<Result<jetstream::Message, OrderedError>>) -> bool {
        // Errors from `messages()` do not end the stream, so each one is matched here
        // rather than filtered away: the caller recreates the consumer.
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                self.error = Some(FollowError::Receive(error));
                return false;
            }
            None => {
                self.error = Some(FollowError::Ended);
                return false;
            }
        };
        let stream_sequence = match message.info() {
            Ok(info) => info.stream_sequence,
            Err(error) => {
                self.error = Some(FollowError::Metadata(error));
                return false;
            }
        };
        let envelope = match synapse_shared::nats::decode(&message.payload) {
            Ok(envelope) => Some(envelope),
            Err(error) => {
                tracing::error!(stream_sequence, %error, subject = %message.subject,
                    "passing over a message that is not an event envelope");
                metrics::counter!("synapse_projector_undecodable_messages_total").increment(1);
                None
            }
        };
        self.delivered.push(Delivered {
            stream_sequence,
            envelope,
        });
        true
    }
}

/// Wait for the next message, then collect what else arrives within the batch window,
/// up to the batch size. `None` once shutdown is requested while waiting; a batch
/// already started is always returned, so shutdown never drops work half-taken.
async fn next_batch(
    messages: &mut Ordered,
    reconnects: &Reconnects,
    shutdown: &CancellationToken,
    settings: &ProjectorArgs,
) -> Option<Batch> {
    let mut check = tokio::time::interval_at(
        tokio::time::Instant::now() + RECONNECT_CHECK,
        RECONNECT_CHECK,
    );
    let first = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            next = messages.next() => break next,
            _ = check.tick() => {
                if reconnects.happened() {
                    return Some(Batch {
                        delivered: Vec::new(),
                        error: Some(FollowError::Reconnected),
                    });
                }
            }
        }
    };
    let mut batch = Batch::default();
    if !batch.take(first) {
        return Some(batch);
    }
    let deadline = tokio::time::Instant::now() + settings.batch_window();
    while batch.delivered.len() < settings.batch_size() {
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(next) => {
                if !batch.take(next) {
                    break;
                }
            }
            Err(_window_closed) => break,
        }
    }
    Some(batch)
}
