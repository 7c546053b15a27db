//! Publishing envelopes to the stream, in order, with fencing.

use async_nats::jetstream::{self, message::PublishMessage, stream::Stream};
use sqlx::PgPool;
use synapse_shared::config::NatsArgs;
use synapse_shared::event_log::StoredEvent;
use synapse_shared::{nats, SubjectScheme};
use uuid::Uuid;

/// Where the stream ends: its last sequence and the log position of that message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTail {
    pub sequence: u64,
    pub position: i64,
}

/// The stream's last message is not this log's event at its position.
#[derive(Debug, thiserror::Error)]
#[error(
    "the stream does not follow this event log: its last message (sequence {sequence}) \
     is event {streamed:?} at position {position}, where the log holds {logged:?}; \
     the relay publishes nothing until the stream matches (a fresh stream, or the \
     database the stream was filled from)"
)]
pub struct StreamMismatch {
    pub sequence: u64,
    pub position: i64,
    pub streamed: Option<Uuid>,
    pub logged: Option<Uuid>,
}

/// What a publish round achieved.
pub struct RoundOutcome {
    /// The tail after the last acknowledged message.
    pub reached: StreamTail,
    pub published: u64,
    pub error: Option<anyhow::Error>,
}

/// A JetStream publisher bound to the events stream.
pub struct Publisher {
    context: jetstream::Context,
    stream: Stream,
    subjects: SubjectScheme,
}

impl Publisher {
    /// Bind to the stream, creating it if needed.
    pub async fn connect(client: &async_nats::Client, args: &NatsArgs) -> anyhow::Result<Self> {
        let context = jetstream::new(client.clone());
        let stream = nats::ensure_stream(&context, args).await?;
        Ok(Self {
            context,
            stream,
            subjects: args.subjects(),
        })
    }

    /// The stream's tail, read from the stream itself. If the stream has sequences but
    /// its last message is gone (limits removed it), the relay's own checkpoint row says
    /// which position that was.
    ///
    /// Fails with [`StreamMismatch`] if the last message is not the log's event at its
    /// position: the stream was filled from another log (a database restored from an
    /// older backup, or another database given the same stream). Continuing after it
    /// would skip every event of this log up to that position, so the relay stops.
    pub async fn tail(&self, pool: &PgPool) -> anyhow::Result<StreamTail> {
        let mut stream = self.stream.clone();
        let info = stream.info().await?;
        let sequence = info.state.last_sequence;
        if sequence == 0 {
            return Ok(StreamTail {
                sequence: 0,
                position: 0,
            });
        }
        if let Ok(message) = stream.get_raw_message(sequence).await {
            if let Some(position) = nats::position_header(Some(&message.headers)) {
                let streamed = nats::event_id_header(Some(&message.headers));
                let logged: Option<(Uuid,)> =
                    sqlx::query_as("select event_id from workflow_events where position = $1")
                        .bind(position)
                        .fetch_optional(pool)
                        .await?;
                if streamed.is_none() || streamed != logged.map(|(id,)| id) {
                    return Err(StreamMismatch {
                        sequence,
                        position,
                        streamed,
                        logged: logged.map(|(id,)| id),
                    }
                    .into());
                }
                return Ok(StreamTail { sequence, position });
            }
        }
        let checkpoint: Option<(i64,)> =
            sqlx::query_as("select position from relay_checkpoint where relay = 'relay'")
                .fetch_optional(pool)
                .await?;
        Ok(StreamTail {
            sequence,
            position: checkpoint.map(|(position,)| position).unwrap_or(0),
        })
    }

    /// Publish `events` (positions above `tail.position`, in order), pipelined. Each
    /// message expects the sequence of the one before it, so the stream accepts them
    /// only in order: if one fails, every later one in flight fails too.
    pub async fn publish(&self, tail: StreamTail, events: &[StoredEvent]) -> RoundOutcome {
        let mut acks = Vec::with_capacity(events.len());
        let mut error = None;
        for (offset, stored) in events.iter().enumerate() {
            let event = &stored.envelope;
            let payload = match stored.body() {
                Ok(payload) => payload,
                Err(serialize_error) => {
                    error = Some(serialize_error.into());
                    break;
                }
            };
            let publish = PublishMessage::build()
                .payload(payload.into())
                .headers(nats::headers_for(event))
                .expected_last_sequence(tail.sequence + offset as u64);
            match self
                .context
                .send_publish(self.subjects.for_event(event), publish)
                .await
            {
                Ok(ack) => acks.push((event.position, ack)),
                Err(publish_error) => {
                    error = Some(publish_error.into());
                    break;
                }
            }
        }
        // Acks arrive for a prefix of what was sent; the first failed ack ends the
        // prefix (later ones were fenced by their expected sequence anyway). Stop
        // there: each ack's timeout starts when it is awaited, so awaiting the rest
        // after a connection loss would stall the relay for one timeout per lost ack
        // (500 x 5 s). The dropped futures hand their permits to the context's acker.
        let send_error = error;
        let mut ack_error = None;
        let mut reached = tail;
        let mut published = 0;
        for (position, ack) in acks {
            match ack.await {
                Ok(ack) => {
                    reached = StreamTail {
                        sequence: reached.sequence.max(ack.sequence),
                        position,
                    };
                    if !ack.duplicate {
                        published += 1;
                    }
                }
                Err(failure) => {
                    ack_error = Some(anyhow::Error::from(failure));
                    break;
                }
            }
        }
        let error = ack_error.or(send_error);
        RoundOutcome {
            reached,
            published,
            error,
        }
    }
}
