//! A WebSocket client of the live feed, for tests.

use crate::auth::{self, Role};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open `url` (a `ws://` URL) with an admin bearer token, as a non-browser client
/// does (no `Origin` header).
pub async fn connect(url: &str) -> anyhow::Result<Socket> {
    connect_with(
        url,
        Some(&auth::bearer(Role::Admin, auth::TEST_ADMIN)),
        None,
    )
    .await
}

/// Open `url` with the given `Authorization` and `Origin` headers (either may be left
/// out); the handshake's refusal is an error carrying the HTTP status.
pub async fn connect_with(
    url: &str,
    authorization: Option<&str>,
    origin: Option<&str>,
) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    if let Some(authorization) = authorization {
        request
            .headers_mut()
            .insert("authorization", authorization.parse()?);
    }
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse()?);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// Connect to `/ws` and subscribe; returns once the server confirmed the subscription.
pub async fn subscribe(port: u16, subscription: Value) -> anyhow::Result<Socket> {
    let mut socket = connect(&format!("ws://127.0.0.1:{port}/ws")).await?;
    socket
        .send(Message::Text(subscription.to_string().into()))
        .await?;
    let confirmation = next_json(&mut socket, Duration::from_secs(10)).await?;
    anyhow::ensure!(
        confirmation["type"] == "SUBSCRIBED",
        "expected SUBSCRIBED, got {confirmation}"
    );
    Ok(socket)
}

/// The next JSON text message, waiting at most `patience`.
pub async fn next_json(socket: &mut Socket, patience: Duration) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = tokio::time::timeout(remaining, socket.next())
            .await
            .map_err(|_| anyhow::anyhow!("no message within {patience:?}"))?
            .ok_or_else(|| anyhow::anyhow!("socket closed"))??;
        if let Message::Text(text) = message {
            return Ok(serde_json::from_str(&text)?);
        }
    }
}

/// Collect messages until `count` arrived (or fail after `patience`).
pub async fn collect(
    socket: &mut Socket,
    count: usize,
    patience: Duration,
) -> anyhow::Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        messages.push(next_json(socket, remaining).await?);
    }
    Ok(messages)
}
