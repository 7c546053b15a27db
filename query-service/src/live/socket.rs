//! `WS /ws`: one WebSocket session.
//!
//! A session is three parts: this reader (client messages, idle timeout), a writer task
//! that owns the socket's sending half and its bounded queue, and at most one
//! [`subscription`](super::subscription) task feeding that queue. A client that does
//! not read only fills its own queue and lags its own broadcast receiver: nobody else
//! waits for it.

use super::handshake::{authenticate, HandshakeParams};
use super::protocol::{ClientMessage, ControlMessage};
use super::subscription::{self, encode_control, Outbound};
use crate::state::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use synapse_shared::problem::ApiQuery;
use synapse_shared::Problem;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Largest client message: a subscribe request is well under 1 KiB; anything bigger is
/// refused by the WebSocket layer before we buffer it.
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;
/// How often the server pings: keeps idle proxies from dropping the connection and
/// makes the client answer, which the idle timeout below relies on.
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// A client silent (not even a pong) for this long is gone: three missed pings.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A write the peer does not accept within this time means it stopped reading for
/// good; its connection is dropped so it holds no resources.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client that broke the protocol gets to receive what is queued for it and
/// the close frame saying why: it is being dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Upgrade to a WebSocket session.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "live",
    description = "The live feed over WebSocket. Send `{\"type\":\"subscribe\",\"filters\":\
        {\"correlation_id\"?,\"asset_id\"?,\"rule_id\"?,\"discipline\"?},\"after\"?:<position>}`; \
        the server answers `SUBSCRIBED`, then (with `after`) every matching event after that \
        position, then live events, as `{\"type\":<kind>,\"position\":n,\"event\":<EventEnvelope>}` \
        where kind is STARTED, RULE_START, ACTION, PROGRESS, RULE_COMPLETE, COMPLETED, ERROR or \
        ROLLED_BACK. A `correlation_id` filter keeps the batch's events and the ROLLED_BACK of \
        every rollback of that batch; a `discipline` filter is a code in any case, never \
        blank. Authenticate with `Authorization: Bearer <token>` or \
        `?ticket=` from `POST /ws/ticket`; the session ends (close 1008) when that token \
        (or the token the ticket was got with) expires. `LAGGED` (`resume_after`) precedes a close for a \
        client too far behind; `ERROR_PROTOCOL` answers an invalid message. A new `subscribe` \
        replaces the previous one.",
    params(HandshakeParams),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 401, description = "No valid ticket or bearer token", body = synapse_shared::Problem, content_type = "application/problem+json"),
        (status = 400, description = "Not a WebSocket handshake", body = synapse_shared::Problem, content_type = "application/problem+json"),
        (status = 403, description = "A browser origin that may not open the feed", body = synapse_shared::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<HandshakeParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let principal = match authenticate(&state, &headers, &params) {
        Ok(principal) => principal,
        Err(refused) => return refused.into_response(),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        // Not a WebSocket handshake (a plain GET, a missing key, another version): a
        // problem like every other refusal, with the status axum chose (400 or 426).
        Err(rejection) => {
            return Problem::new(
                rejection.status(),
                "not-a-websocket-handshake",
                "the request is not a WebSocket handshake",
            )
            .with_detail(rejection.body_text())
            .into_response()
        }
    };
    let sessions = state.sessions.clone();
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        // A single frame is refused at its header, before its payload is buffered.
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| {
            sessions.track_future(session(socket, state, principal.expires_at))
        })
}

/// Counts connected clients in the `synapse_ws_clients` gauge for as long as it lives.
struct ClientGauge;

impl ClientGauge {
    fn connect() -> Self {
        metrics::gauge!("synapse_ws_clients").increment(1.0);
        Self
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        metrics::gauge!("synapse_ws_clients").decrement(1.0);
    }
}

/// Returns when the token that opened a session expires (never without one): the
/// session ends then, as a request with that token would be refused. Before, a
/// session (or a ticket's) went on serving for as long as the client stayed.
async fn token_expiry(expires_at: Option<u64>) {
    let Some(expires_at) = expires_at else {
        return std::future::pending().await;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    tokio::time::sleep(Duration::from_secs(expires_at.saturating_sub(now))).await;
}

async fn session(socket: WebSocket, state: AppState, expires_at: Option<u64>) {
    let _gauge = ClientGauge::connect();
    let (sink, mut incoming) = socket.split();
    let (outbound, queue) = mpsc::channel(state.live_limits.client_queue.max(1));
    // Ends the session: cancelled by shutdown, by the writer when the socket fails, or
    // here when the client leaves.
    let session_end = state.shutdown.child_token();
    let mut writer = tokio::spawn(write(
        sink,
        queue,
        session_end.clone(),
        state.shutdown.clone(),
    ));
    let mut current: Option<JoinHandle<()>> = None;
    // Why the session ends, when the client broke the protocol: sent as the close frame.
    let mut farewell = None;
    let expiry = token_expiry(expires_at);
    tokio::pin!(expiry);
    loop {
        let received = tokio::select! {
            () = session_end.cancelled() => break,
            () = &mut expiry => {
                farewell = Some((close_code::POLICY, "the token expired: reconnect with a new one"));
                break;
            }
            received = tokio::time::timeout(IDLE_TIMEOUT, incoming.next()) => received,
        };
        let message = match received {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(error))) => {
                tracing::debug!(%error, "live feed: client socket failed");
                farewell = close_for(&error);
                break;
            }
            Ok(None) => break,
            Err(_) => {
                tracing::info!("live feed: client idle too long; closing");
                break;
            }
        };
        let reply = match message {
            // Filters end up in read-model queries, and Postgres refuses NUL in text.
            Message::Text(text) if synapse_shared::problem::nul::in_json(text.as_bytes()) => {
                Some(ControlMessage::ProtocolError {
                    detail:
                        "the message contains U+0000 (NUL), which no filter can match; remove it"
                            .to_owned(),
                })
            }
            Message::Text(text) => match serde_json::from_str::<ClientMessage>(text.as_str()) {
                Ok(ClientMessage::Subscribe {
                    after: Some(after), ..
                }) if after < 0 => Some(ControlMessage::ProtocolError {
                    detail: "`after` must be a position, 0 or more".to_owned(),
                }),
                Ok(ClientMessage::Subscribe { filters, after }) => {
                    // A new subscription replaces the previous one, once that one has
                    // stopped: aborting only asks a task to stop at its next wait, and one
                    // sending a replay into a queue with room does not wait, so frames of
                    // the old subscription followed the new one's `SUBSCRIBED`.
                    if let Some(previous) = current.take() {
                        previous.abort();
                        let _ = previous.await;
                    }
                    current = Some(tokio::spawn(subscription::run(
                        state.hub.clone(),
                        state.pool.clone(),
                        filters,
                        after,
                        outbound.clone(),
                    )));
                    None
                }
                Err(error) => Some(ControlMessage::ProtocolError {
                    detail: error.to_string(),
                }),
            },
            Message::Binary(_) => Some(ControlMessage::ProtocolError {
                detail: "binary messages are not supported; send JSON text".to_owned(),
            }),
            Message::Close(_) => break,
            // Pings are answered by the WebSocket layer; pongs only prove liveness.
            Message::Ping(_) | Message::Pong(_) => None,
        };
        if let Some(frame) = reply.as_ref().and_then(encode_control) {
            tokio::select! {
                () = session_end.cancelled() => break,
                _ = outbound.send(Outbound::Frame(frame)) => {}
            }
        }
    }
    if let Some(current) = current {
        current.abort();
    }
    if let Some((code, reason)) = farewell {
        // The writer sends what is queued, then the close frame, and stops.
        let closing = async {
            let _ = outbound.send(Outbound::Close { code, reason }).await;
            drop(outbound);
            let _ = (&mut writer).await;
        };
        if tokio::time::timeout(CLOSE_GRACE, closing).await.is_ok() {
            return;
        }
    }
    session_end.cancel();
    let _ = writer.await;
}

/// The close frame for a client whose socket failed because it broke the WebSocket
/// protocol; `None` when the connection itself is gone (there is no one to tell).
/// Without it the client would see a reset and could not tell a refused message from
/// a network failure.
fn close_for(error: &axum::Error) -> Option<(u16, &'static str)> {
    use std::error::Error as _;
    use tungstenite::error::{Error, ProtocolError};
    match error.source()?.downcast_ref::<Error>()? {
        Error::Capacity(_) => Some((close_code::SIZE, "message too big (16 KiB at most)")),
        Error::Utf8(_) => Some((close_code::INVALID, "a text message must be UTF-8")),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Error::Protocol(_) => Some((close_code::PROTOCOL, "WebSocket protocol violation")),
        _ => None,
    }
}

/// Owns the sending half: sends queued frames and pings, and the close frame at the end.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outbound>,
    session_end: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut closed = false;
    loop {
        let message = tokio::select! {
            biased;
            () = session_end.cancelled() => break,
            next = queue.recv() => match next {
                Some(Outbound::Frame(frame)) => Message::Text(frame),
                Some(Outbound::Close { code, reason }) => {
                    send_close(&mut sink, code, reason).await;
                    closed = true;
                    break;
                }
                None => break,
            },
            _ = ping.tick() => Message::Ping(bytes::Bytes::new()),
        };
        // A write to a client that stopped reading blocks until its socket drains; the
        // session may end meanwhile (shutdown, client gone), so both are watched.
        let written = tokio::select! {
            () = session_end.cancelled() => break,
            written = tokio::time::timeout(WRITE_TIMEOUT, sink.send(message)) => written,
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "live feed: cannot write to the client");
                break;
            }
            Err(_) => {
                tracing::info!("live feed: client stopped reading; dropping it");
                break;
            }
        }
    }
    if shutdown.is_cancelled() && !closed {
        send_close(&mut sink, close_code::AWAY, "server shutting down").await;
    }
    session_end.cancel();
}

/// Send a close frame, giving a stalled client only a moment: it is being dropped
/// anyway, and shutdown must not wait for it.
async fn send_close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &'static str) {
    const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(close(code, reason))).await;
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::error::{CapacityError, Error, ProtocolError};

    fn code(error: Error) -> Option<u16> {
        close_for(&axum::Error::new(error)).map(|(code, _)| code)
    }

    #[test]
    fn a_client_breaking_the_protocol_is_told_why_and_a_vanished_one_is_not() {
        let too_long = CapacityError::MessageTooLong {
            size: 20_000,
            max_size: MAX_CLIENT_MESSAGE,
        };
        assert_eq!(code(Error::Capacity(too_long)), Some(1009));
        assert_eq!(code(Error::Utf8("bad byte".to_owned())), Some(1007));
        let reserved = ProtocolError::UnknownDataFrameType(3);
        assert_eq!(code(Error::Protocol(reserved)), Some(1002));
        let reset = ProtocolError::ResetWithoutClosingHandshake;
        assert_eq!(code(Error::Protocol(reset)), None);
        assert_eq!(code(Error::ConnectionClosed), None);
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(code(Error::Io(io)), None);
    }
}
