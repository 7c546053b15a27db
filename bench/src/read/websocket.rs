//! Live-feed subscribers: many WebSocket clients of the query service, each subscribed
//! with a filter, recording when each event reaches them; and the bench's own ordered
//! consumer of the stream, recording when each event reached NATS consumers, so the
//! query service's own share of the delay can be told apart.

use super::plant::DISCIPLINES;
use crate::stream;
use anyhow::{bail, Context};
use async_nats::jetstream;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// Clients that open their connection at the same time: enough to connect 500 in a few
/// seconds, few enough not to overflow the listen backlog.
const CONNECT_WAVE: usize = 50;
/// How long a client waits for `SUBSCRIBED`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Who subscribes to what: one client in `discipline_every` follows a whole discipline
/// (a lead engineer's dashboard: a quarter of the flow), the others one asset each that
/// the load changes (a person with one tag open).
#[derive(Debug, Clone)]
pub struct Audience {
    pub discipline_every: usize,
    pub watched_assets: Vec<Uuid>,
}

impl Audience {
    /// Whether client `client` follows a discipline.
    pub fn follows_discipline(&self, client: usize) -> bool {
        self.watched_assets.is_empty() || client.is_multiple_of(self.discipline_every.max(1))
    }

    /// The subscribe message of client `client`.
    pub fn subscription(&self, client: usize) -> Value {
        let every = self.discipline_every.max(1);
        let filters = if self.follows_discipline(client) {
            json!({"discipline": DISCIPLINES[(client / every) % DISCIPLINES.len()]})
        } else {
            // The how-manyth asset watcher this client is, so watchers spread over
            // every watched asset.
            let watcher = client - (client / every + 1);
            json!({"asset_id": self.watched_assets[watcher % self.watched_assets.len()]})
        };
        json!({"type": "subscribe", "filters": filters})
    }
}

/// What one client received.
#[derive(Debug, Default)]
pub struct Received {
    pub client: usize,
    /// `(position, received at)` of every event message.
    pub deliveries: Vec<(i64, Instant)>,
    /// The server said `LAGGED`.
    pub lagged: bool,
    /// The connection ended before the benchmark closed it.
    pub closed_early: bool,
}

/// Connected, subscribed clients reading in the background.
pub struct Subscribers {
    readers: Vec<JoinHandle<Received>>,
    stop: watch::Sender<bool>,
    pub connect_time: Duration,
}

/// The part of a server message the clients read.
#[derive(serde::Deserialize)]
struct ServerMessage {
    #[serde(rename = "type")]
    kind: String,
    position: Option<i64>,
}

/// Connect `subscriptions.len()` clients to `ws_url` and subscribe each; returns once
/// every one is subscribed.
pub async fn connect(ws_url: &str, subscriptions: Vec<Value>) -> anyhow::Result<Subscribers> {
    let started = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let mut readers = Vec::with_capacity(subscriptions.len());
    let mut subscriptions = subscriptions.into_iter().enumerate().peekable();
    while subscriptions.peek().is_some() {
        let wave: Vec<_> = subscriptions.by_ref().take(CONNECT_WAVE).collect();
        let opened = futures::future::join_all(
            wave.into_iter()
                .map(|(client, subscription)| open(ws_url, client, subscription)),
        )
        .await;
        for socket in opened {
            let (client, socket) = socket?;
            readers.push(tokio::spawn(read(client, socket, stopped.clone())));
        }
    }
    Ok(Subscribers {
        readers,
        stop,
        connect_time: started.elapsed(),
    })
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(ws_url: &str, client: usize, subscription: Value) -> anyhow::Result<(usize, Socket)> {
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .with_context(|| format!("client {client} connecting to {ws_url}"))?;
    socket
        .send(Message::Text(subscription.to_string().into()))
        .await
        .with_context(|| format!("client {client} subscribing"))?;
    let confirmed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
        while let Some(message) = socket.next().await {
            if let Message::Text(text) = message? {
                let message: ServerMessage = serde_json::from_str(&text)?;
                if message.kind == "SUBSCRIBED" {
                    return anyhow::Ok(());
                }
                bail!("expected SUBSCRIBED, got {text}");
            }
        }
        bail!("the socket closed before SUBSCRIBED")
    })
    .await
    .with_context(|| format!("client {client} got no SUBSCRIBED within {SUBSCRIBE_TIMEOUT:?}"))?;
    confirmed.with_context(|| format!("client {client} subscribing"))?;
    Ok((client, socket))
}

async fn read(client: usize, mut socket: Socket, mut stop: watch::Receiver<bool>) -> Received {
    let mut received = Received {
        client,
        ..Received::default()
    };
    loop {
        let message = tokio::select! {
            _ = stop.changed() => break,
            message = socket.next() => message,
        };
        let at = Instant::now();
        match message {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage {
                    position: Some(position),
                    ..
                }) => received.deliveries.push((position, at)),
                Ok(message) if message.kind == "LAGGED" => received.lagged = true,
                _ => {}
            },
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                received.closed_early = true;
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    let _ = socket.close(None).await;
    received
}

impl Subscribers {
    /// Stop reading, close every socket, hand back what each client received.
    pub async fn finish(self) -> anyhow::Result<Vec<Received>> {
        let _ = self.stop.send(true);
        let mut all = Vec::with_capacity(self.readers.len());
        for reader in self.readers {
            all.push(reader.await.context("a WebSocket client panicked")?);
        }
        Ok(all)
    }
}

/// The bench's own follower of the stream: when each new event reached a consumer.
pub struct StreamArrivals {
    stop: watch::Sender<bool>,
    handle: JoinHandle<anyhow::Result<HashMap<i64, Instant>>>,
}

impl StreamArrivals {
    /// Follow `stream` from its next message on.
    pub async fn start(nats_url: &str, stream: &str) -> anyhow::Result<Self> {
        let mut messages =
            stream::ordered(nats_url, stream, jetstream::consumer::DeliverPolicy::New).await?;
        let (stop, mut stopped) = watch::channel(false);
        let handle = tokio::spawn(async move {
            let mut arrivals = HashMap::new();
            loop {
                let message = tokio::select! {
                    _ = stopped.changed() => break,
                    message = messages.next() => message,
                };
                let at = Instant::now();
                match message {
                    Some(Ok(message)) => {
                        let position =
                            synapse_shared::nats::position_header(message.headers.as_ref());
                        if let Some(position) = position {
                            arrivals.entry(position).or_insert(at);
                        }
                    }
                    // Errors (a missed heartbeat) do not end an ordered consumer.
                    Some(Err(_)) => {}
                    None => bail!("the arrival consumer ended"),
                }
            }
            Ok(arrivals)
        });
        Ok(Self { stop, handle })
    }

    pub async fn finish(self) -> anyhow::Result<HashMap<i64, Instant>> {
        let _ = self.stop.send(true);
        self.handle.await.context("the arrival consumer panicked")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_in_n_follows_a_discipline_and_the_others_one_asset_each() {
        let audience = Audience {
            discipline_every: 10,
            watched_assets: (0..250).map(|_| Uuid::new_v4()).collect(),
        };
        let subscriptions: Vec<Value> = (0..500).map(|c| audience.subscription(c)).collect();
        let by_discipline: Vec<&Value> = subscriptions
            .iter()
            .filter(|s| s["filters"]["discipline"].is_string())
            .collect();
        assert_eq!(by_discipline.len(), 50);
        for discipline in DISCIPLINES {
            let followers = by_discipline
                .iter()
                .filter(|s| s["filters"]["discipline"] == discipline)
                .count();
            assert!((12..=13).contains(&followers), "{discipline}: {followers}");
        }
        let assets: std::collections::HashSet<&Value> = subscriptions
            .iter()
            .map(|s| &s["filters"]["asset_id"])
            .filter(|id| id.is_string())
            .collect();
        assert_eq!(assets.len(), 250, "every watched asset has a watcher");
        assert!((0..500).all(|c| audience.follows_discipline(c) == (c % 10 == 0)));
        let nobody_watched = Audience {
            discipline_every: 10,
            watched_assets: Vec::new(),
        };
        assert!(nobody_watched.subscription(1)["filters"]["discipline"].is_string());
    }
}
