//! JetStream plumbing shared by the relay (publisher) and every consumer.
//!
//! A message is a CloudEvents 1.0 event in *binary* mode: the `ce-*` attributes are NATS
//! headers and the data is the JSON [`EventEnvelope`]. Extra headers (`Synapse-*`) let a
//! consumer route on position or batch without parsing the body.

use crate::config::NatsArgs;
use crate::event::EventEnvelope;
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use std::time::Duration;

pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
pub const HEADER_POSITION: &str = "Synapse-Position";
pub const HEADER_CORRELATION_ID: &str = "Synapse-Correlation-Id";
pub const HEADER_AGGREGATE_ID: &str = "Synapse-Aggregate-Id";
pub const CE_SOURCE: &str = "/synapse/command-service";
pub const CE_TYPE_PREFIX: &str = "io.synapse.";

/// How long JetStream remembers a `Nats-Msg-Id`. Longer than any relay retry: a relay
/// that dies between a publish ack and its checkpoint republishes within seconds, and
/// the relay also resumes from the stream's own last message, so this is a second line.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(30 * 60);

/// Connect, retrying in the background if NATS is not up yet (off by default in
/// async-nats: a service started before NATS would otherwise fail).
pub async fn connect(
    args: &NatsArgs,
    name: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2));
    if let Some(creds) = &args.nats_creds {
        options = options.credentials_file(creds).await.map_err(|error| {
            async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::Io, error)
        })?;
    }
    options.connect(&args.nats_url).await
}

/// The stream configuration: file storage, every subject under the prefix, a generous
/// duplicate window, and no message deletion (the stream mirrors an immutable log).
pub fn stream_config(args: &NatsArgs) -> stream::Config {
    stream::Config {
        name: args.nats_stream.clone(),
        subjects: vec![args.subjects().all()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: DUPLICATE_WINDOW,
        deny_delete: true,
        ..Default::default()
    }
}

/// Create the stream if it does not exist (idempotent across replicas).
pub async fn ensure_stream(
    context: &jetstream::Context,
    args: &NatsArgs,
) -> Result<stream::Stream, async_nats::jetstream::context::CreateStreamError> {
    context.get_or_create_stream(stream_config(args)).await
}

/// The headers a published event carries.
pub fn headers_for(event: &EventEnvelope) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_MSG_ID, event.event_id.to_string().as_str());
    headers.insert("ce-specversion", "1.0");
    headers.insert("ce-id", event.event_id.to_string().as_str());
    headers.insert("ce-source", CE_SOURCE);
    headers.insert(
        "ce-type",
        format!("{CE_TYPE_PREFIX}{}", event.event_type.as_str()).as_str(),
    );
    headers.insert(
        "ce-subject",
        format!("{}/{}", event.aggregate_type.as_str(), event.aggregate_id).as_str(),
    );
    headers.insert("ce-time", event.occurred_at.to_rfc3339().as_str());
    headers.insert("content-type", "application/json");
    headers.insert(HEADER_POSITION, event.position.to_string().as_str());
    headers.insert(
        HEADER_CORRELATION_ID,
        event.correlation_id.to_string().as_str(),
    );
    headers.insert(HEADER_AGGREGATE_ID, event.aggregate_id.to_string().as_str());
    headers
}

/// Why a message could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message body is not an event envelope: {0}")]
    Body(#[from] serde_json::Error),
}

/// Parse a message body as an event envelope.
pub fn decode(payload: &[u8]) -> Result<EventEnvelope, DecodeError> {
    Ok(serde_json::from_slice(payload)?)
}

/// The log position recorded in a message's headers, if any.
pub fn position_header(headers: Option<&HeaderMap>) -> Option<i64> {
    headers?.get(HEADER_POSITION)?.as_str().parse().ok()
}
