//! JetStream plumbing shared by the relay (publisher) and every consumer.
//!
//! A message is a CloudEvents 1.0 event in *binary* mode: the `ce-*` attributes are NATS
//! headers and the data is the JSON [`EventEnvelope`]. Extra headers (`Synapse-*`) let a
//! consumer route on position or batch without parsing the body.

use crate::config::NatsArgs;
use crate::event::EventEnvelope;
use crate::nats_credentials::{CredentialsError, NatsAuth};
use async_nats::header::{HeaderName, HeaderValue};
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

/// Why a service could not set up its NATS connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid NATS credentials settings")]
    Credentials(#[from] CredentialsError),
    #[error("connecting to {url}")]
    Nats {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

/// The connection options every service uses: its name, its own credentials, a
/// retry in the background if NATS is not up yet (off by default in async-nats: a
/// service started before NATS would otherwise fail), and reconnect attempts at most
/// [`MAX_RECONNECT_DELAY`] apart.
pub async fn connect_options(
    args: &NatsArgs,
    name: &str,
) -> Result<async_nats::ConnectOptions, CredentialsError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(reconnect_delay);
    if args.credentials.auth()? == NatsAuth::Anonymous {
        if let Some((user, password)) = user_in_url(&args.nats_url) {
            options = options.user_and_password(user, password);
        }
    }
    args.credentials.apply(options).await
}

/// The longest wait between two attempts to reconnect. async-nats doubles its wait
/// up to 4 s: a NATS restarted after an outage of half a minute was reached 3.9 s
/// later (the projection then followed it; the relay and the live feed waited as
/// long). An attempt a second costs a NATS server nothing.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// The wait before reconnect attempt `attempts` (1 for the first): none, then 2, 4,
/// 8 ... ms, up to [`MAX_RECONNECT_DELAY`].
fn reconnect_delay(attempts: usize) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    match attempts {
        0 | 1 => Duration::ZERO,
        _ => Duration::from_millis(2u64.saturating_pow(doublings)).min(MAX_RECONNECT_DELAY),
    }
}

/// Whether a NATS client reconnected since a moment (a consumer's creation): a server
/// restart drops ephemeral consumers, and an ordered consumer only notices when its
/// idle heartbeats lapse, 15 s or more later.
pub struct Reconnects {
    statistics: std::sync::Arc<async_nats::Statistics>,
    at_start: u64,
}

impl Reconnects {
    pub fn since_now(client: &async_nats::Client) -> Self {
        let statistics = client.statistics();
        let at_start = statistics
            .connects
            .load(std::sync::atomic::Ordering::Relaxed);
        Self {
            statistics,
            at_start,
        }
    }

    pub fn happened(&self) -> bool {
        self.statistics
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
            != self.at_start
    }
}

/// The user and password in `nats://user:pass@host:4222` (the first server that has
/// them): async-nats 0.51 parses but does not send them, which would silently connect
/// anonymously. Explicit credentials settings take precedence.
fn user_in_url(urls: &str) -> Option<(String, String)> {
    urls.split(',').find_map(|url| {
        let address: async_nats::ServerAddr = url.trim().parse().ok()?;
        Some((
            address.username()?.to_owned(),
            address.password().unwrap_or_default().to_owned(),
        ))
    })
}

/// Connect as `name`. Contradictory credentials settings or an unreadable credentials
/// file fail here; a refused login does not (the server may be mid-rollout of new
/// users): the client keeps retrying, `/readyz` reports NATS as not ready, and the log
/// says why at error level.
pub async fn connect(args: &NatsArgs, name: &str) -> Result<async_nats::Client, ConnectError> {
    let service = name.to_owned();
    let options = connect_options(args, name)
        .await?
        .event_callback(move |event| {
            report_event(&service, &event);
            std::future::ready(())
        });
    options
        .connect(&args.nats_url)
        .await
        .map_err(|source| ConnectError::Nats {
            url: args.nats_url.clone(),
            source,
        })
}

/// Log what operators must act on with the service's name and what to check: refused
/// credentials and subjects the server denies (async-nats itself logs every event at
/// info level only, without saying whose).
fn report_event(service: &str, event: &async_nats::Event) {
    use async_nats::{ClientError, Event, ServerError};
    match event {
        Event::ServerError(ServerError::AuthorizationViolation) => tracing::error!(
            service,
            "NATS refused this service's credentials (authorization violation); check \
             NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_FILE or NATS_CREDS"
        ),
        Event::ClientError(ClientError::Other(error)) if error == "authorization violation" => {
            tracing::error!(
                service,
                "NATS refused this service's credentials while connecting; retrying. \
                 Check NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_FILE or NATS_CREDS"
            )
        }
        Event::ServerError(ServerError::Other(error))
            if error.to_lowercase().contains("permissions violation") =>
        {
            tracing::error!(
                service,
                error = %error,
                "NATS denied a subject to this service's user; see deploy/nats/synapse-auth.conf"
            )
        }
        Event::Disconnected => tracing::warn!(service, "disconnected from NATS; reconnecting"),
        _ => tracing::debug!(service, %event, "nats connection event"),
    }
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

/// The headers a published event carries. Runs once per published event: names are
/// static and values are moved in, not copied.
pub fn headers_for(event: &EventEnvelope) -> HeaderMap {
    let name = HeaderName::from_static;
    let event_id = event.event_id.to_string();
    let mut headers = HeaderMap::new();
    headers.insert(name(HEADER_MSG_ID), HeaderValue::from(event_id.clone()));
    headers.insert(name("ce-specversion"), "1.0");
    headers.insert(name("ce-id"), HeaderValue::from(event_id));
    headers.insert(name("ce-source"), CE_SOURCE);
    headers.insert(
        name("ce-type"),
        HeaderValue::from(format!("{CE_TYPE_PREFIX}{}", event.event_type.as_str())),
    );
    headers.insert(
        name("ce-subject"),
        HeaderValue::from(format!(
            "{}/{}",
            event.aggregate_type.as_str(),
            event.aggregate_id
        )),
    );
    headers.insert(
        name("ce-time"),
        HeaderValue::from(event.occurred_at.to_rfc3339()),
    );
    headers.insert(name("content-type"), "application/json");
    headers.insert(
        name(HEADER_POSITION),
        HeaderValue::from(event.position.to_string()),
    );
    headers.insert(
        name(HEADER_CORRELATION_ID),
        HeaderValue::from(event.correlation_id.to_string()),
    );
    headers.insert(
        name(HEADER_AGGREGATE_ID),
        HeaderValue::from(event.aggregate_id.to_string()),
    );
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

/// The event id a message carries as its `Nats-Msg-Id`, if any.
pub fn event_id_header(headers: Option<&HeaderMap>) -> Option<uuid::Uuid> {
    headers?.get(HEADER_MSG_ID)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{reconnect_delay, user_in_url, MAX_RECONNECT_DELAY};
    use std::time::Duration;

    #[test]
    fn reconnect_attempts_come_at_once_then_doubling_up_to_a_second_apart() {
        let delays: Vec<Duration> = [1, 2, 3, 10, 11, 12, 100, usize::MAX]
            .into_iter()
            .map(reconnect_delay)
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(
            delays,
            [
                ms(0),
                ms(2),
                ms(4),
                ms(512),
                MAX_RECONNECT_DELAY,
                MAX_RECONNECT_DELAY,
                MAX_RECONNECT_DELAY,
                MAX_RECONNECT_DELAY
            ]
        );
    }

    #[test]
    fn a_user_and_password_in_the_url_are_found_in_any_server_of_the_list() {
        assert_eq!(user_in_url("nats://127.0.0.1:4222"), None);
        assert_eq!(
            user_in_url("nats://a:4222, nats://synapse-query:pw1@b:4222"),
            Some(("synapse-query".to_owned(), "pw1".to_owned()))
        );
    }
}
