//! Follows the JetStream stream and feeds the [`Hub`].
//!
//! An ordered consumer (ephemeral, no acks, in stream order) starts right after the
//! stream's last message at startup: older events are the read models' business. NATS
//! errors never end the loop (a `while let Some(Ok(_))` would silently stop on a missed
//! heartbeat); if the consumer itself fails, it is recreated from the last stream
//! sequence seen + 1, so nothing is skipped.

use super::hub::Hub;
use async_nats::jetstream::consumer::pull::{OrderedConfig, OrderedErrorKind};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, stream::Stream};
use futures::StreamExt;
use std::time::Duration;
use synapse_shared::config::NatsArgs;
use synapse_shared::nats;
use tokio_util::sync::CancellationToken;

/// Wait between attempts to reach the stream or recreate the consumer: short enough to
/// resume quickly after a NATS restart, long enough not to spin while it is down.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How often the follower checks whether the NATS connection was re-established. A
/// server restart loses the ephemeral consumer, and the ordered consumer notices only
/// after its idle heartbeats lapse (15 s or more); a reconnect seen here recreates it
/// within a second instead.
const RECONNECT_CHECK: Duration = Duration::from_secs(1);

/// Follow the stream until `shutdown` is cancelled.
pub async fn run(
    hub: Hub,
    context: jetstream::Context,
    args: NatsArgs,
    shutdown: CancellationToken,
) {
    let (stream, mut next_sequence) = loop {
        match start(&hub, &context, &args).await {
            Ok(started) => break started,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "live hub: cannot reach the stream; retrying"
                );
                if pause(&shutdown).await.is_err() {
                    return;
                }
            }
        }
    };
    tracing::info!(stream = %args.nats_stream, next_sequence, "live hub following the stream");
    let client = context.client();
    let mut reconnect_check = tokio::time::interval(RECONNECT_CHECK);
    loop {
        let reconnects = nats::Reconnects::since_now(&client);
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: next_sequence,
                },
                ..OrderedConfig::default()
            })
            .await;
        let messages = match consumer {
            Ok(consumer) => consumer.messages().await,
            Err(error) => {
                tracing::warn!(%error, next_sequence, "live hub: cannot create the consumer; retrying");
                if pause(&shutdown).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, next_sequence, "live hub: cannot open the message stream; retrying");
                if pause(&shutdown).await.is_err() {
                    return;
                }
                continue;
            }
        };
        loop {
            let item = tokio::select! {
                () = shutdown.cancelled() => return,
                item = messages.next() => item,
                _ = reconnect_check.tick() => {
                    if reconnects.happened() {
                        tracing::info!(next_sequence, "live hub: NATS reconnected; recreating the consumer");
                        break;
                    }
                    continue;
                }
            };
            match item {
                Some(Ok(message)) => {
                    if let Ok(info) = message.info() {
                        next_sequence = info.stream_sequence + 1;
                    }
                    match nats::decode(&message.payload) {
                        Ok(envelope) => hub.publish(envelope),
                        Err(error) => {
                            tracing::warn!(%error, subject = %message.subject, "live hub: skipping a message that is not an event")
                        }
                    }
                }
                Some(Err(error)) if consumer_is_lost(error.kind()) => {
                    tracing::warn!(%error, next_sequence, "live hub: consumer lost; recreating");
                    break;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "live hub: error from the message stream; continuing");
                }
                None => {
                    tracing::warn!(next_sequence, "live hub: message stream ended; recreating");
                    break;
                }
            }
        }
        if pause(&shutdown).await.is_err() {
            return;
        }
    }
}

/// Find the stream (creating it if no relay has yet) and start the hub after its last
/// message. Returns the stream and the first sequence to consume.
async fn start(
    hub: &Hub,
    context: &jetstream::Context,
    args: &NatsArgs,
) -> anyhow::Result<(Stream, u64)> {
    let mut stream = nats::ensure_stream(context, args).await?;
    let last_sequence = stream.info().await?.state.last_sequence;
    let last_position = if last_sequence == 0 {
        0
    } else {
        let message = stream.get_raw_message(last_sequence).await?;
        match nats::position_header(Some(&message.headers)) {
            Some(position) => position,
            None => nats::decode(&message.payload)?.position,
        }
    };
    hub.start_at(last_position);
    Ok((stream, last_sequence + 1))
}

/// Whether an error means the consumer is gone (e.g. "consumer not found" after a
/// NATS restart dropped the ephemeral consumer, which the ordered consumer reports as a
/// pull failure without recreating it). Recreating from the next sequence is cheap and
/// exact, so any doubt is resolved by recreating; only heartbeat hiccups and unclassified
/// errors are logged and waited out.
fn consumer_is_lost(kind: OrderedErrorKind) -> bool {
    !matches!(
        kind,
        OrderedErrorKind::MissingHeartbeat | OrderedErrorKind::Other
    )
}

/// Wait [`RETRY_DELAY`], or fail at once on shutdown.
async fn pause(shutdown: &CancellationToken) -> Result<(), ()> {
    tokio::select! {
        () = shutdown.cancelled() => Err(()),
        () = tokio::time::sleep(RETRY_DELAY) => Ok(()),
    }
}
