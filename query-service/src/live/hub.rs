//! The process-wide live hub: the last events seen on JetStream, fanned out to every
//! WebSocket session.
//!
//! One consumer per process ([`super::consumer`]) feeds the hub; each session holds a
//! `broadcast` receiver, so a slow session only ever lags itself. The hub also keeps a
//! ring of recent events and `evicted_upto`, the highest position no longer in the ring
//! (or older than the hub): a resuming client reads the read models at least up to
//! `evicted_upto`, then the ring, then the broadcast (see [`super::subscription`]).

use super::protocol::EventMessage;
use super::LiveLimits;
use axum::extract::ws::Utf8Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use synapse_shared::EventEnvelope;
use tokio::sync::{broadcast, watch};

/// An event as the hub hands it out: the envelope for filtering, and the frame every
/// client receives, encoded once rather than once per client.
#[derive(Debug)]
pub struct LiveEvent {
    pub envelope: EventEnvelope,
    pub frame: Utf8Bytes,
}

impl LiveEvent {
    pub fn new(envelope: EventEnvelope) -> Result<Self, serde_json::Error> {
        let frame = serde_json::to_string(&EventMessage::new(&envelope))?;
        Ok(Self {
            envelope,
            frame: frame.into(),
        })
    }

    pub fn position(&self) -> i64 {
        self.envelope.position
    }
}

/// A handle to the hub; clones share it.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    /// The stream's name, a label of the hub's metrics (one hub per stream).
    stream: String,
    window: Mutex<Window>,
    sender: broadcast::Sender<Arc<LiveEvent>>,
    /// Becomes true once the hub knows where the stream stood when it started; before
    /// that a subscriber could not know which events it must replay.
    ready: watch::Sender<bool>,
    ring_capacity: usize,
    broadcast_capacity: usize,
}

/// What the hub remembers. Changed only under the mutex, together with the broadcast
/// send, so a subscriber sees a consistent cut: every event is either in its snapshot
/// of the ring, at or below its `evicted_upto`, or delivered to its receiver.
struct Window {
    ring: VecDeque<Arc<LiveEvent>>,
    evicted_upto: i64,
    latest: i64,
}

/// A session's view of the hub at the moment it subscribed.
pub struct Subscription {
    /// Every event published after the moment of subscribing.
    pub receiver: broadcast::Receiver<Arc<LiveEvent>>,
    /// Events above this position and up to `latest` are in `recent`; those at or
    /// below it must come from the read models.
    pub evicted_upto: i64,
    /// The highest position the hub had published when the session subscribed.
    pub latest: i64,
    /// The ring at the moment of subscribing, oldest first. A snapshot rather than a
    /// later read, because the ring may evict entries while the session replays.
    pub recent: Vec<Arc<LiveEvent>>,
    /// How many events the receiver holds before it lags.
    capacity: usize,
}

impl Subscription {
    /// Whether the receiver is half full or more: events go by live faster than the
    /// session takes them (a long replay), and it will soon have lost some.
    pub fn filling_up(&self) -> bool {
        self.receiver.len() * 2 >= self.capacity
    }
}

impl Hub {
    pub fn new(stream: &str, limits: &LiveLimits) -> Self {
        let broadcast_capacity = limits.broadcast_capacity.max(1);
        let (sender, _) = broadcast::channel(broadcast_capacity);
        let (ready, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                stream: stream.to_owned(),
                window: Mutex::new(Window {
                    ring: VecDeque::with_capacity(limits.ring_capacity),
                    evicted_upto: 0,
                    latest: 0,
                }),
                sender,
                ready,
                ring_capacity: limits.ring_capacity.max(1),
                broadcast_capacity,
            }),
        }
    }

    /// Record where the stream stood when the hub started: everything up to `position`
    /// predates the hub and is served from the read models.
    pub fn start_at(&self, position: i64) {
        let latest = {
            let mut window = self.lock();
            window.evicted_upto = window.evicted_upto.max(position);
            window.latest = window.latest.max(position);
            window.latest
        };
        self.record_position(latest);
        self.shared.ready.send_replace(true);
    }

    /// How far the live feed has got, to compare with the relay's published position:
    /// from the start (where the stream stood), then with every event.
    fn record_position(&self, position: i64) {
        metrics::gauge!("synapse_live_hub_position", "stream" => self.shared.stream.clone())
            .set(position as f64);
    }

    /// Whether the hub has started following the stream.
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Publish an event to every session. An event at or below the latest position is a
    /// redelivery (a relay republishing after its duplicate window) and is dropped, so
    /// clients see each event once.
    pub fn publish(&self, envelope: EventEnvelope) {
        let position = envelope.position;
        if position <= self.lock().latest {
            tracing::debug!(position, "live hub: dropping an event it already published");
            return;
        }
        let event = match LiveEvent::new(envelope) {
            Ok(event) => Arc::new(event),
            Err(error) => {
                tracing::error!(%error, position, "live hub: cannot encode an event");
                return;
            }
        };
        let mut window = self.lock();
        if position <= window.latest {
            return;
        }
        window.latest = position;
        window.ring.push_back(event.clone());
        while window.ring.len() > self.shared.ring_capacity {
            if let Some(evicted) = window.ring.pop_front() {
                window.evicted_upto = evicted.position();
            }
        }
        // An error only means no session is listening right now.
        let _ = self.shared.sender.send(event);
        drop(window);
        self.record_position(position);
    }

    /// Subscribe, waiting until the hub has started. With `snapshot`, the ring's
    /// content is copied for a resuming session.
    pub async fn subscribe(&self, snapshot: bool) -> Subscription {
        let mut ready = self.shared.ready.subscribe();
        // The sender lives in `self.shared`, so the channel cannot close while we wait.
        let _ = ready.wait_for(|ready| *ready).await;
        let window = self.lock();
        Subscription {
            receiver: self.shared.sender.subscribe(),
            evicted_upto: window.evicted_upto,
            latest: window.latest,
            recent: if snapshot {
                window.ring.iter().cloned().collect()
            } else {
                Vec::new()
            },
            capacity: self.shared.broadcast_capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // Nothing panics while holding the lock; if something ever did, the window is
        // still consistent (every mutation is a single field or push/pop).
        self.shared
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use synapse_shared::{AggregateType, EventType};
    use uuid::Uuid;

    fn envelope(position: i64) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            position,
            event_type: EventType::AssetUpdated,
            aggregate_type: AggregateType::Asset,
            aggregate_id: Uuid::now_v7(),
            aggregate_version: 1,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            rule_id: None,
            rule_version: None,
            discipline: None,
            actor: "tester".to_owned(),
            occurred_at: Utc::now(),
            schema_version: 1,
            payload: serde_json::json!({}),
        }
    }

    fn hub(ring_capacity: usize) -> Hub {
        Hub::new(
            "TEST",
            &LiveLimits {
                ring_capacity,
                broadcast_capacity: 16,
                client_queue: 4,
            },
        )
    }

    #[tokio::test]
    async fn the_ring_keeps_the_newest_events_and_remembers_what_it_evicted() {
        let hub = hub(2);
        hub.start_at(10);
        for position in [11, 12, 13] {
            hub.publish(envelope(position));
        }
        let subscription = hub.subscribe(true).await;
        let recent: Vec<i64> = subscription.recent.iter().map(|e| e.position()).collect();
        assert_eq!(recent, vec![12, 13]);
        assert_eq!(subscription.evicted_upto, 11);
        assert_eq!(subscription.latest, 13);
    }

    #[tokio::test]
    async fn a_redelivered_event_is_published_once() {
        let hub = hub(8);
        hub.start_at(0);
        let mut subscription = hub.subscribe(false).await;
        hub.publish(envelope(1));
        hub.publish(envelope(1));
        hub.publish(envelope(2));
        assert_eq!(subscription.receiver.recv().await.unwrap().position(), 1);
        assert_eq!(subscription.receiver.recv().await.unwrap().position(), 2);
        assert!(subscription.receiver.try_recv().is_err());
    }
}
