//! One subscription of one session: replay what the client missed, then follow live.
//!
//! The order is what makes "no gap, no duplicate" hold:
//! 1. subscribe to the hub first, so nothing published from now on can be missed;
//! 2. with `after`, page through `rm_events` above it, repeating until the projectors'
//!    checkpoint has reached the hub's `evicted_upto` (everything older than the hub's
//!    memory is then in the read models); while the projectors are behind, subscribe
//!    afresh before each wait, so live events piling up meanwhile never overflow the
//!    receiver (the new subscription's ring and `evicted_upto` cover what the old one
//!    had buffered);
//! 3. send the hub's ring snapshot above the last position sent (it covers
//!    `evicted_upto..latest`);
//! 4. forward live events, skipping anything at or below the last position covered.

use super::hub::{Hub, Subscription};
use super::protocol::{ControlMessage, EventMessage, Filters};
use crate::read::{checkpoints, events};
use axum::extract::ws::Utf8Bytes;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Rows per replay query: each query stays short and a page's memory small, and the
/// session's bounded queue paces the replay to the client's reading speed anyway.
const REPLAY_PAGE: i64 = 500;

/// How often a replay re-checks the projectors while they are behind the hub's window.
/// Projection normally trails by milliseconds; this keeps a waiting client cheap.
const PROJECTOR_POLL: Duration = Duration::from_millis(100);

/// What a session's writer sends next.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// A text frame (JSON).
    Frame(Utf8Bytes),
    /// Close the connection with this code and reason, after the frames before it.
    Close { code: u16, reason: &'static str },
}

/// Close code for a client that fell behind (RFC 6455 "policy violation").
pub const CLOSE_LAGGED: u16 = 1008;
/// Close code when the read models cannot be queried (RFC 6455 "internal error").
pub const CLOSE_UNAVAILABLE: u16 = 1011;

/// Why a subscription stopped early.
enum Stop {
    /// The session is gone: nothing left to do.
    SessionClosed,
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Stop {
    fn from(error: sqlx::Error) -> Self {
        Stop::Database(error)
    }
}

/// Serve one subscription until the session ends, the client lags, or the read models
/// fail during a replay.
pub async fn run(
    hub: Hub,
    pool: PgPool,
    filters: Filters,
    after: Option<i64>,
    outbound: mpsc::Sender<Outbound>,
) {
    let mut subscription = hub.subscribe(after.is_some()).await;
    if send_control(&outbound, &ControlMessage::Subscribed { after })
        .await
        .is_err()
    {
        return;
    }
    let covered_upto = match after {
        None => subscription.latest,
        Some(after) => {
            match catch_up(&hub, &pool, &filters, after, &mut subscription, &outbound).await {
                Ok(covered_upto) => covered_upto,
                Err(Stop::SessionClosed) => return,
                Err(Stop::Database(error)) => {
                    tracing::error!(%error, "live feed: replay from the read models failed");
                    let _ = outbound
                        .send(Outbound::Close {
                            code: CLOSE_UNAVAILABLE,
                            reason: "read models unavailable; resume later",
                        })
                        .await;
                    return;
                }
            }
        }
    };
    follow(subscription, &filters, covered_upto, &outbound).await;
}

/// Steps 2 and 3: returns the position up to which every matching event has been sent.
async fn catch_up(
    hub: &Hub,
    pool: &PgPool,
    filters: &Filters,
    after: i64,
    subscription: &mut Subscription,
    outbound: &mpsc::Sender<Outbound>,
) -> Result<i64, Stop> {
    let filter = filters.to_event_filter();
    let mut last_sent = after;
    loop {
        // Read the checkpoint before paging: a projector commits rows and checkpoint
        // together, so every row at or below it is visible to the pages that follow.
        let projected = checkpoints::events_projected_upto(pool).await?;
        loop {
            let rows = events::page(pool, &filter, last_sent, REPLAY_PAGE).await?;
            for row in &rows {
                match row.to_envelope() {
                    Ok(envelope) => send_event(outbound, &EventMessage::new(&envelope)).await?,
                    Err(error) => {
                        tracing::warn!(%error, position = row.position, "live feed: skipping an event it cannot replay")
                    }
                }
                last_sent = row.position;
            }
            if (rows.len() as i64) < REPLAY_PAGE {
                break;
            }
        }
        // Done once the read models reach the ring, unless live events piled up in the
        // receiver meanwhile: a long replay (a client resuming from far back during a
        // large batch) overflowed it, and the client was told it lagged although it
        // was reading as fast as it could.
        let projected_enough = projected >= subscription.evicted_upto;
        if projected_enough && !subscription.filling_up() {
            break;
        }
        if !projected_enough {
            tokio::time::sleep(PROJECTOR_POLL).await;
        }
        // Everything the old receiver buffered is in the new ring or at or below the new
        // `evicted_upto`, which the read models must reach before the ring is sent.
        *subscription = hub.subscribe(true).await;
    }
    for event in subscription.recent.drain(..) {
        if event.position() > last_sent && filters.matches(&event.envelope) {
            send_frame(outbound, event.frame.clone()).await?;
            last_sent = event.position();
        }
    }
    // The read models covered everything up to `evicted_upto` and the snapshot the rest
    // up to `latest`: every matching event up to there has been sent.
    Ok(last_sent.max(subscription.latest))
}

/// Step 4: forward live events until the session ends or the client lags.
async fn follow(
    mut subscription: Subscription,
    filters: &Filters,
    mut covered_upto: i64,
    outbound: &mpsc::Sender<Outbound>,
) {
    loop {
        match subscription.receiver.recv().await {
            Ok(event) => {
                if event.position() <= covered_upto {
                    continue;
                }
                if filters.matches(&event.envelope)
                    && send_frame(outbound, event.frame.clone()).await.is_err()
                {
                    return;
                }
                covered_upto = event.position();
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::info!(
                    missed,
                    resume_after = covered_upto,
                    "live feed: client lagged; disconnecting"
                );
                metrics::counter!("synapse_ws_lagged_clients_total").increment(1);
                let lagged = ControlMessage::Lagged {
                    resume_after: covered_upto,
                };
                if send_control(outbound, &lagged).await.is_ok() {
                    let _ = outbound
                        .send(Outbound::Close {
                            code: CLOSE_LAGGED,
                            reason: "too far behind; resume with `after`",
                        })
                        .await;
                }
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Encode a control message as a text frame.
pub fn encode_control(message: &ControlMessage) -> Option<Utf8Bytes> {
    match serde_json::to_string(message) {
        Ok(text) => Some(text.into()),
        Err(error) => {
            tracing::error!(%error, "live feed: cannot encode a control message");
            None
        }
    }
}

async fn send_control(
    outbound: &mpsc::Sender<Outbound>,
    message: &ControlMessage,
) -> Result<(), Stop> {
    match encode_control(message) {
        Some(frame) => send_frame(outbound, frame).await,
        None => Ok(()),
    }
}

async fn send_event(
    outbound: &mpsc::Sender<Outbound>,
    message: &EventMessage<'_>,
) -> Result<(), Stop> {
    match serde_json::to_string(message) {
        Ok(text) => send_frame(outbound, text.into()).await,
        Err(error) => {
            tracing::error!(%error, position = message.position, "live feed: cannot encode an event");
            Ok(())
        }
    }
}

async fn send_frame(outbound: &mpsc::Sender<Outbound>, frame: Utf8Bytes) -> Result<(), Stop> {
    outbound
        .send(Outbound::Frame(frame))
        .await
        .map_err(|_| Stop::SessionClosed)
}
