//! JetStream helpers: waiting for a stream to fill, and the raw publish and read limits.

use anyhow::{bail, Context};
use async_nats::jetstream::{self, context::PublishAckFuture};
use futures::StreamExt;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub async fn connect(nats_url: &str) -> anyhow::Result<async_nats::Client> {
    tokio::time::timeout(Duration::from_secs(5), async_nats::connect(nats_url))
        .await
        .with_context(|| format!("connecting to {nats_url} timed out"))?
        .with_context(|| format!("connecting to {nats_url}"))
}

/// Messages in `stream` now (0 if it does not exist yet).
async fn messages(context: &jetstream::Context, stream: &str) -> u64 {
    match context.get_stream(stream).await {
        Ok(mut stream) => stream
            .info()
            .await
            .map(|info| info.state.messages)
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// Wait until `stream` holds at least `count` messages; how long it took.
pub async fn wait_for_messages(
    nats_url: &str,
    stream: &str,
    count: u64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let context = jetstream::new(connect(nats_url).await?);
    let started = Instant::now();
    loop {
        let held = messages(&context, stream).await;
        if held >= count {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("stream {stream} holds {held} of {count} messages after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many publishes may await their ack at once: the relay's own setting would do,
/// but a fixed window keeps the limit independent of it.
const PUBLISH_WINDOW: usize = 4_096;

/// One message as the relay would send it.
pub struct RawMessage {
    pub subject: String,
    /// Including `Nats-Msg-Id` and the CloudEvents headers.
    pub headers: async_nats::HeaderMap,
    pub payload: Vec<u8>,
}

/// The raw limit: publish `messages` to a fresh file stream `stream` (subjects
/// `subject_prefix.>`), pipelined, acks awaited, with the same duplicate window as the
/// events stream. The stream is deleted afterwards.
pub async fn raw_publish(
    nats_url: &str,
    stream: &str,
    subject_prefix: &str,
    messages: Vec<RawMessage>,
) -> anyhow::Result<Duration> {
    let context = jetstream::new(connect(nats_url).await?);
    context
        .create_stream(jetstream::stream::Config {
            name: stream.to_owned(),
            subjects: vec![format!("{subject_prefix}.>")],
            storage: jetstream::stream::StorageType::File,
            duplicate_window: synapse_shared::nats::DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating stream {stream}"))?;
    let outcome = publish_all(&context, messages).await;
    if let Err(error) = context.delete_stream(stream).await {
        eprintln!("could not delete stream {stream}: {error}");
    }
    outcome
}

async fn publish_all(
    context: &jetstream::Context,
    messages: Vec<RawMessage>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    // Acks come back in publish order: awaiting the oldest first loses nothing.
    let mut in_flight: VecDeque<PublishAckFuture> = VecDeque::with_capacity(PUBLISH_WINDOW);
    for message in messages {
        if in_flight.len() >= PUBLISH_WINDOW {
            if let Some(ack) = in_flight.pop_front() {
                ack.await.context("a raw publish was not acknowledged")?;
            }
        }
        let publish = jetstream::message::PublishMessage::build()
            .payload(message.payload.into())
            .headers(message.headers);
        let ack = context
            .send_publish(message.subject, publish)
            .await
            .context("publishing a raw message")?;
        in_flight.push_back(ack);
    }
    while let Some(ack) = in_flight.pop_front() {
        ack.await.context("a raw publish was not acknowledged")?;
    }
    Ok(started.elapsed())
}

/// The stream's last sequence now (0 if it does not exist yet).
pub async fn last_sequence(nats_url: &str, stream: &str) -> anyhow::Result<u64> {
    let context = jetstream::new(connect(nats_url).await?);
    let mut stream = context
        .get_stream(stream)
        .await
        .with_context(|| format!("looking up stream {stream}"))?;
    let info = stream.info().await.context("reading the stream's state")?;
    Ok(info.state.last_sequence)
}

/// What reading a stream raw took.
pub struct RawRead {
    pub messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// How long the raw read may take before the benchmark gives up.
const RAW_READ_TIMEOUT: Duration = Duration::from_secs(600);

/// The read limit: an ordered consumer (the kind every projector uses) reading
/// `stream` from its first message up to `last_sequence`, touching nothing but the
/// payload's length.
pub async fn raw_read(nats_url: &str, stream: &str, last_sequence: u64) -> anyhow::Result<RawRead> {
    let started = Instant::now();
    let mut messages = ordered(nats_url, stream, jetstream::consumer::DeliverPolicy::All).await?;
    let (mut count, mut bytes) = (0u64, 0u64);
    let read = async {
        while let Some(message) = messages.next().await {
            // An error (e.g. a missed heartbeat) does not end an ordered consumer: go on.
            let Ok(message) = message else { continue };
            count += 1;
            bytes += message.payload.len() as u64;
            let sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
            if sequence >= last_sequence {
                break;
            }
        }
    };
    tokio::time::timeout(RAW_READ_TIMEOUT, read)
        .await
        .with_context(|| format!("the raw read did not finish within {RAW_READ_TIMEOUT:?}"))?;
    Ok(RawRead {
        messages: count,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// An ordered consumer of `stream` (the kind the projectors and the live hub use),
/// starting where `deliver_policy` says.
pub async fn ordered(
    nats_url: &str,
    stream: &str,
    deliver_policy: jetstream::consumer::DeliverPolicy,
) -> anyhow::Result<jetstream::consumer::pull::Ordered> {
    let context = jetstream::new(connect(nats_url).await?);
    let stream = context
        .get_stream(stream)
        .await
        .with_context(|| format!("looking up stream {stream}"))?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy,
            ..Default::default()
        })
        .await
        .context("creating an ordered consumer")?;
    consumer
        .messages()
        .await
        .context("opening an ordered consumer's messages")
}
