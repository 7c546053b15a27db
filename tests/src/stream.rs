//! Reading a test's JetStream stream the way a downstream consumer would: a plain
//! async-nats pull consumer, nothing from the services.

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use std::time::Duration;
use synapse_shared::config::NatsArgs;
use synapse_shared::EventEnvelope;
use tokio::time::Instant;

/// One message as it sits in the stream.
#[derive(Debug, Clone)]
pub struct StreamedEvent {
    pub subject: String,
    pub headers: async_nats::HeaderMap,
    pub stream_sequence: u64,
    pub envelope: EventEnvelope,
}

/// A JetStream context connected as `nats`'s credentials say (none on the shared
/// server; a user of `deploy/nats/synapse-auth.conf` on a test's own server). Fails at
/// once if the server is down or refuses the credentials, unlike the services' client.
pub async fn context(nats: &NatsArgs) -> anyhow::Result<jetstream::Context> {
    let options = nats
        .credentials
        .apply(async_nats::ConnectOptions::new().name("synapse-tests"))
        .await?;
    Ok(jetstream::new(options.connect(&nats.nats_url).await?))
}

/// Wait (up to `patience`) until the stream holds at least `count` messages.
pub async fn wait_for_messages(
    nats: &NatsArgs,
    count: u64,
    patience: Duration,
) -> anyhow::Result<u64> {
    let context = context(nats).await?;
    let deadline = Instant::now() + patience;
    loop {
        let held = match context.get_stream(&nats.nats_stream).await {
            Ok(mut stream) => stream
                .info()
                .await
                .map(|info| info.state.messages)
                .unwrap_or(0),
            Err(_) => 0,
        };
        if held >= count {
            return Ok(held);
        }
        if Instant::now() > deadline {
            anyhow::bail!("stream holds {held} messages, expected {count} within {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message in the stream, in stream order, read with a durable pull consumer of
/// the test's own (as a downstream system would create).
pub async fn read_all(nats: &NatsArgs) -> anyhow::Result<Vec<StreamedEvent>> {
    let context = context(nats).await?;
    let mut stream = context.get_stream(&nats.nats_stream).await?;
    let total = stream.info().await?.state.messages as usize;
    let consumer = stream
        .get_or_create_consumer(
            "downstream-test",
            consumer::pull::Config {
                durable_name: Some("downstream-test".into()),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let mut received = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.len() < total && Instant::now() < deadline {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(500))
            .messages()
            .await?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|error| anyhow::anyhow!(error))?;
            let info = message.info().map_err(|error| anyhow::anyhow!(error))?;
            let stream_sequence = info.stream_sequence;
            let envelope = synapse_shared::nats::decode(&message.payload)?;
            received.push(StreamedEvent {
                subject: message.subject.to_string(),
                headers: message.headers.clone().unwrap_or_default(),
                stream_sequence,
                envelope,
            });
            message
                .ack()
                .await
                .map_err(|error| anyhow::anyhow!(error))?;
        }
    }
    Ok(received)
}
