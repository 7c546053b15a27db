//! A WebSocket client of the live feed, for tests.

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connect to `/ws` and subscribe; returns once the server confirmed the subscription.
pub async fn subscribe(port: u16, subscription: Value) -> anyhow::Result<Socket> {
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await?;
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
