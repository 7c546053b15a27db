//! Property: whatever a client sends on the live feed's WebSocket, the query service
//! answers `ERROR_PROTOCOL` (or `SUBSCRIBED` for a valid subscribe) or closes with a
//! close frame whose code says why, nothing panics, and other clients go on receiving
//! live events.

use futures::{SinkExt, StreamExt};
use proptest::prelude::*;
use query_service::live::protocol::ClientMessage;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;
use synapse_tests::apps::System;
use synapse_tests::arbitrary::json_non_strings;
use synapse_tests::ws::{self, Socket};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// The server's limit on one client message (`live/socket.rs`).
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;
/// Close codes a refused client may get: protocol error, invalid payload (not UTF-8),
/// policy violation, message too big (RFC 6455 §7.4.1).
const PROPER_CLOSE_CODES: [u16; 4] = [1002, 1007, 1008, 1009];
const PATIENCE: Duration = Duration::from_secs(10);

/// One client frame.
#[derive(Debug, Clone)]
enum Sent {
    /// Any text.
    Text(String),
    /// JSON shaped more or less like a subscribe message.
    Json(Value),
    /// Any bytes in a binary frame.
    Binary(Vec<u8>),
    /// A text frame whose payload is not UTF-8 (sent as a raw frame: the client library
    /// refuses to build such a message).
    NotUtf8(Vec<u8>),
    /// A frame no WebSocket peer may send: a data frame with a reserved opcode (3..=7)
    /// or, for 0, a continuation frame with no message to continue.
    ForbiddenFrame(u8),
    /// A subscribe whose filter holds an array of this many numbers (beyond the limit
    /// from a few thousand).
    HugeArray(usize),
    /// JSON arrays nested this deep.
    Nested(usize),
}

impl Sent {
    fn message(&self) -> Message {
        match self {
            Sent::Text(text) => Message::Text(text.clone().into()),
            Sent::Json(value) => Message::Text(value.to_string().into()),
            Sent::Binary(bytes) => Message::Binary(bytes.clone().into()),
            Sent::NotUtf8(bytes) => Message::Frame(Frame::message(
                bytes.clone(),
                OpCode::Data(Data::Text),
                true,
            )),
            Sent::ForbiddenFrame(opcode) => {
                let opcode = match opcode {
                    0 => Data::Continue,
                    reserved => Data::Reserved(*reserved),
                };
                Message::Frame(Frame::message(b"{}".to_vec(), OpCode::Data(opcode), true))
            }
            Sent::HugeArray(length) => {
                let numbers: Vec<usize> = (0..*length).collect();
                let value = json!({"type": "subscribe", "filters": {"asset_id": numbers}});
                Message::Text(value.to_string().into())
            }
            Sent::Nested(depth) => {
                let text = format!(
                    "{{\"type\":\"subscribe\",\"after\":{}{}}}",
                    "[".repeat(*depth),
                    "]".repeat(*depth)
                );
                Message::Text(text.into())
            }
        }
    }

    /// What the server must answer, decided from the frame alone.
    fn expected(&self) -> Expected {
        let message = self.message();
        if message.len() > MAX_CLIENT_MESSAGE {
            return Expected::Close(1009);
        }
        match message {
            Message::Text(text) => match serde_json::from_str::<ClientMessage>(text.as_str()) {
                Ok(ClientMessage::Subscribe {
                    after: Some(after), ..
                }) if after < 0 => Expected::ProtocolError,
                Ok(ClientMessage::Subscribe { .. }) => Expected::Subscribed,
                Err(_) => Expected::ProtocolError,
            },
            Message::Binary(_) => Expected::ProtocolError,
            _ if matches!(self, Sent::ForbiddenFrame(_)) => Expected::Close(1002),
            _ => Expected::Close(1007),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Subscribed,
    ProtocolError,
    Close(u16),
}

/// JSON biased to the subscribe message's fields, with wrong types, unknown fields,
/// bad positions and deep values.
fn subscribe_like() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        4 => json_non_strings(),
        1 => "\\PC{0,12}".prop_map(Value::String),
        1 => Just(json!("0190a1b2-0000-7000-8000-000000000001")),
        1 => Just(json!("ELECTRICAL")),
    ];
    let value = scalar.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,10}", inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    });
    let filter_name = prop_oneof![
        Just("correlation_id".to_owned()),
        Just("asset_id".to_owned()),
        Just("rule_id".to_owned()),
        Just("discipline".to_owned()),
        "[a-z_]{1,10}",
    ];
    let filters = prop_oneof![
        prop::collection::vec((filter_name, value.clone()), 0..4)
            .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        value.clone(),
    ];
    let position = prop_oneof![
        Just(json!(-1)),
        Just(json!(i64::MIN)),
        Just(json!(i64::MAX)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        Just(json!(0.5)),
        Just(json!("5")),
        (0i64..1_000).prop_map(|n| json!(n)),
        value.clone(),
    ];
    let kind = prop_oneof![
        4 => Just(json!("subscribe")),
        1 => Just(json!("SUBSCRIBE")),
        1 => Just(json!("unsubscribe")),
        1 => value.clone(),
    ];
    (
        prop::option::of(kind),
        prop::option::of(filters),
        prop::option::of(position),
        prop::collection::vec(("[a-z_]{1,8}", value), 0..2),
    )
        .prop_map(|(kind, filters, after, extra)| {
            let mut message = Map::new();
            for (name, field) in [("type", kind), ("filters", filters), ("after", after)] {
                if let Some(field) = field {
                    message.insert(name.to_owned(), field);
                }
            }
            message.extend(extra);
            Value::Object(message)
        })
}

/// Valid subscribe messages, with positions at the edges (0, far beyond the log, the
/// largest there is): a fuzzed session must go on working between bad frames.
fn valid_subscribe() -> impl Strategy<Value = Value> {
    let after = prop_oneof![
        Just(None),
        Just(Some(0i64)),
        Just(Some(i64::MAX)),
        (0i64..1_000_000).prop_map(Some),
    ];
    let discipline = prop::option::of("[A-Z_]{1,12}");
    (after, discipline, any::<bool>()).prop_map(|(after, discipline, asset)| {
        let mut filters = Map::new();
        if let Some(discipline) = discipline {
            filters.insert("discipline".to_owned(), json!(discipline));
        }
        if asset {
            filters.insert("asset_id".to_owned(), json!(uuid::Uuid::now_v7()));
        }
        let mut message = json!({"type": "subscribe", "filters": filters});
        if let Some(after) = after {
            message["after"] = json!(after);
        }
        message
    })
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        4 => subscribe_like().prop_map(Sent::Json),
        2 => valid_subscribe().prop_map(Sent::Json),
        2 => "\\PC{0,40}".prop_map(Sent::Text),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Sent::Binary),
        1 => prop::collection::vec(any::<u8>(), 0..32).prop_map(|mut bytes| {
            // 0xFF never occurs in UTF-8.
            bytes.push(0xFF);
            Sent::NotUtf8(bytes)
        }),
        1 => prop_oneof![Just(0u8), 3u8..=7].prop_map(Sent::ForbiddenFrame),
        1 => (1usize..6_000).prop_map(Sent::HugeArray),
        1 => (1usize..400).prop_map(Sent::Nested),
    ]
}

/// Panics anywhere in this process (the services run in it), counted by a hook that
/// still prints them.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

/// The server's answer to one frame: the first control message, skipping events a
/// subscription may be replaying, or the close frame.
async fn answer(socket: &mut Socket) -> anyhow::Result<Expected> {
    loop {
        let next = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {PATIENCE:?}"))?;
        match next {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(text.as_str())?;
                match message["type"].as_str() {
                    Some("SUBSCRIBED") => return Ok(Expected::Subscribed),
                    Some("ERROR_PROTOCOL") => {
                        anyhow::ensure!(
                            message["detail"]
                                .as_str()
                                .is_some_and(|detail| !detail.is_empty()),
                            "a protocol error without a detail: {message}"
                        );
                        return Ok(Expected::ProtocolError);
                    }
                    // An event of a subscription made by an earlier frame.
                    Some(_) if message["position"].is_i64() => continue,
                    _ => anyhow::bail!("unexpected message {message}"),
                }
            }
            Some(Ok(Message::Close(Some(frame)))) => return Ok(Expected::Close(frame.code.into())),
            Some(Ok(Message::Close(None))) => anyhow::bail!("closed without a code"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => anyhow::bail!("unexpected frame {other:?}"),
            Some(Err(error)) => anyhow::bail!("connection failed without a close frame: {error}"),
            None => anyhow::bail!("connection ended without a close frame"),
        }
    }
}

async fn check(frames: Vec<Sent>) -> anyhow::Result<()> {
    count_panics();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let system = System::start().await?;
    let port = system.query.port;
    let mut control = ws::subscribe(port, json!({"type": "subscribe"})).await?;
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut fuzzed = ws::connect(&url).await?;
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for frame in &frames {
        let expected = frame.expected();
        fuzzed.send(frame.message()).await?;
        let got = answer(&mut fuzzed).await?;
        *tally.entry(format!("{got:?}")).or_default() += 1;
        match (expected, got) {
            (Expected::Close(_), Expected::Close(code)) => {
                anyhow::ensure!(
                    PROPER_CLOSE_CODES.contains(&code),
                    "{frame:?} closed with {code}"
                );
                anyhow::ensure!(
                    got == expected,
                    "{frame:?}: expected {expected:?}, got {got:?}"
                );
                // That session is over; the next frame goes to a new one.
                fuzzed = ws::connect(&url).await?;
            }
            _ => anyhow::ensure!(
                got == expected,
                "{frame:?}: expected {expected:?}, got {got:?}"
            ),
        }
    }

    // The server still serves: the control client gets the events of a new change, and
    // a new client can subscribe.
    let created = system
        .http
        .post(system.command.url("/assets"))
        .json(&json!({"tag": "FUZZ-1", "asset_type": "MOTOR", "discipline": "ELECTRICAL"}))
        .send()
        .await?;
    anyhow::ensure!(created.status() == 201, "create: {}", created.status());
    let live = ws::next_json(&mut control, PATIENCE).await?;
    anyhow::ensure!(live["type"] == "STARTED", "control client got {live}");
    ws::subscribe(port, json!({"type": "subscribe", "after": 0})).await?;
    let panics = PANICS.load(Ordering::SeqCst) - panics_before;
    anyhow::ensure!(panics == 0, "{panics} panics while fuzzing");
    // For docs/faults.md: what the frames of this case got (`--no-capture` shows it).
    println!(
        "WS-FUZZ-OUTCOME frames={} answers={tally:?} panics={panics}",
        frames.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 20, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_websocket_frames_get_a_protocol_error_or_a_proper_close_and_others_keep_their_feed(
        frames in prop::collection::vec(sent(), 1..40)
    ) {
        let runtime = tokio::runtime::Runtime::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime.block_on(check(frames)).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }
}
