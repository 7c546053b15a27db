//! Following the JetStream stream: one ordered consumer feeds every projector.
//!
//! The consumer starts right after the checkpoint of the projector that is furthest
//! behind, takes messages in batches, decodes each message once and hands each batch to
//! every projector ([`apply_batch`]), each in its own transaction with its own
//! checkpoint, concurrently. A projector that already applied a position skips it, so
//! projectors at different checkpoints share one reader. Any failure (Postgres down, a
//! NATS error from the message stream, the stream ending) drops the consumer; after a
//! capped exponential back-off a new one starts from the checkpoints stored in
//! Postgres, which are the only progress that counts.
//!
//! One reader rather than one per projector: receiving and decoding a message was most
//! of the service's CPU, and three readers did it three times. The price is that a
//! projector that keeps failing holds the others back; it is retried with back-off and
//! logged by name.

use crate::apply::{apply_batch, Delivered};
use crate::backoff::Backoff;
use crate::checkpoint::{self, Checkpoint};
use crate::config::ProjectorArgs;
use crate::lag;
use crate::projectors::{AnyProjector, Projector};
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig, OrderedError};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use sqlx::PgPool;
use std::time::Duration;
use synapse_shared::config::NatsArgs;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// First pause after a failure: long enough not to spin, short enough that a blip
/// costs little.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between attempts while a dependency stays down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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

    /// Follow the stream until `shutdown` is cancelled; the batch being applied at that
    /// moment is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF);
        loop {
            match self.follow(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(error) => {
                    let delay = backoff.next_delay();
                    let error = anyhow::Error::from(error);
                    tracing::error!(
                        error = format!("{error:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "projection stopped following the stream; resuming from the checkpoints"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
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
        let messages = self.subscribe().await?;
        // Receiving runs one batch ahead of applying: while Postgres commits batch n,
        // batch n+1 is collected and decoded. The channel holds one batch, so at most
        // two batches are in memory and a shutdown waits for at most two.
        let (batches, mut received) = mpsc::channel(1);
        let receiver = tokio::spawn(receive(
            messages,
            shutdown.clone(),
            self.settings.clone(),
            batches,
        ));
        // Dropping the receiver task with this guard stops it when applying fails, so
        // the next consumer does not compete with it.
        let _receiver = AbortOnDrop(receiver);
        while let Some(batch) = received.recv().await {
            if !batch.delivered.is_empty() {
                self.apply(&batch.delivered).await?;
                backoff.reset();
            }
            if let Some(error) = batch.error {
                return Err(error);
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

    /// Apply `delivered` with every projector, concurrently, each in its own
    /// transaction. Every projector is waited for, so none is cut off mid-transaction
    /// when another fails; the first failure is returned.
    async fn apply(&self, delivered: &[Delivered]) -> Result<(), FollowError> {
        let outcomes = futures::future::join_all(self.followers.iter().map(|follower| async {
            let started = std::time::Instant::now();
            let outcome = apply_batch(&self.pool, &follower.projector, delivered).await;
            (outcome, started.elapsed())
        }))
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
        failure.map_or(Ok(()), Err)
    }

    /// A fresh ordered consumer starting right after the checkpoint of the projector
    /// that is furthest behind.
    async fn subscribe(&self) -> Result<Ordered, FollowError> {
        // Creating the stream here, not only at start-up, lets the projection service
        // start before the command service (or NATS) and still find its stream.
        let stream = synapse_shared::nats::ensure_stream(&self.jetstream, &self.nats).await?;
        let mut furthest_behind: Option<Checkpoint> = None;
        for follower in &self.followers {
            let projector = follower.projector.name();
            let checkpoint = checkpoint::read(&self.pool, projector)
                .await
                .map_err(|source| FollowError::Checkpoint { projector, source })?
                .unwrap_or_default();
            follower.progress.send_replace(Some(checkpoint));
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
        Ok(consumer.messages().await?)
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
    shutdown: CancellationToken,
    settings: ProjectorArgs,
    batches: mpsc::Sender<Batch>,
) {
    while let Some(batch) = next_batch(&mut messages, &shutdown, &settings).await {
        let failed = batch.error.is_some();
        if batches.send(batch).await.is_err() || failed {
            break;
        }
    }
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
    shutdown: &CancellationToken,
    settings: &ProjectorArgs,
) -> Option<Batch> {
    let first = tokio::select! {
        biased;
        () = shutdown.cancelled() => return None,
        next = messages.next() => next,
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
