//! The live feed: JetStream events fanned out to WebSocket clients.
//!
//! [`hub`] consumes the stream once per process and broadcasts; [`socket`] runs one
//! WebSocket session; [`subscription`] brings a resuming client from its position up to the
//! live feed with no gap and no duplicate; [`protocol`] is the wire format.

pub mod consumer;
pub mod handshake;
pub mod hub;
pub mod protocol;
pub mod socket;
pub mod subscription;
pub mod ticket;

/// Sizes of the live feed's buffers, configurable so tests can provoke lag cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct LiveLimits {
    /// Recent events the hub keeps for resuming clients. A client resuming within this
    /// window is served from memory once the read models reach the window's start;
    /// 4096 envelopes of ~1 KiB each cost ~4 MiB.
    #[arg(long, env = "WS_RING_CAPACITY", default_value_t = 4096)]
    pub ring_capacity: usize,
    /// Events a client may fall behind the hub before it is told `LAGGED` and closed.
    /// Large enough to absorb a burst of a big batch (thousands of events per second)
    /// for a client that reads normally; a slower one resumes from its position.
    #[arg(long, env = "WS_BROADCAST_CAPACITY", default_value_t = 4096)]
    pub broadcast_capacity: usize,
    /// Frames queued for one client's socket writer. Small: the broadcast buffer is the
    /// real slack, this queue only decouples filtering from the socket write.
    #[arg(long, env = "WS_CLIENT_QUEUE", default_value_t = 64)]
    pub client_queue: usize,
}

impl Default for LiveLimits {
    fn default() -> Self {
        Self {
            ring_capacity: 4096,
            broadcast_capacity: 4096,
            client_queue: 64,
        }
    }
}
