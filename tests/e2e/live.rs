//! The live WebSocket feed (SPEC §9) over events real commands produced and the relay
//! published: filters, resuming with no gap and no duplicate, the per-batch message
//! sequence, slow clients; and the protocol's edges (bad messages, tokens, shutdown,
//! a NATS restart). What a client must receive is derived from the command side's log.

use futures::{SinkExt, StreamExt};
use query_service::live::LiveLimits;
use serde_json::{json, Value};
use std::time::Duration;
use synapse_shared::config::NatsArgs;
use synapse_shared::shutdown::CancellationToken;
use synapse_shared::{EventEnvelope, EventType};
use synapse_tests::apps::{self, Running};
use synapse_tests::auth::{bearer, Role, TEST_ADMIN};
use synapse_tests::client::{http_client, send};
use synapse_tests::drive::{
    concerned_asset, created_asset, id_field, message_kind, Stack, ENGINEER, VIEWER,
};
use synapse_tests::nats_server::OwnNatsServer;
use synapse_tests::plant::{
    as_csv, instrument_range_rule, motors, pump_flag_rule, pumps, small_plant, vfd_rule,
};
use synapse_tests::stream::{read_all, wait_for_messages};
use synapse_tests::ws::{self, Socket};
use synapse_tests::{TestDatabase, TestNats};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// How long any wait in these tests may take before it counts as a failure.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------

/// What the server sent next.
#[derive(Debug, PartialEq)]
enum Received {
    Json(Value),
    Closed(Option<u16>),
}

/// The next message or close, within [`PATIENCE`]: one deadline across the pings the
/// server sends every 20 s meanwhile, which a timeout per frame would wait on forever.
async fn receive(socket: &mut Socket) -> Received {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("the server sent nothing in time");
        match next {
            Some(Ok(Message::Text(text))) => {
                return Received::Json(serde_json::from_str(text.as_str()).expect("json frame"))
            }
            Some(Ok(Message::Close(frame))) => {
                return Received::Closed(frame.map(|frame| u16::from(frame.code)))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Received::Closed(None),
        }
    }
}

async fn receive_json(socket: &mut Socket) -> Value {
    match receive(socket).await {
        Received::Json(value) => value,
        closed => panic!("expected a message, the connection closed: {closed:?}"),
    }
}

/// Read `count` event messages.
async fn receive_events(socket: &mut Socket, count: usize) -> Vec<Value> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let message = receive_json(socket).await;
        assert!(
            message.get("event").is_some(),
            "expected an event, got {message}"
        );
        received.push(message);
    }
    received
}

/// Open the live feed as the viewer (a non-browser client: bearer header, no origin)
/// and subscribe.
async fn subscribe(port: u16, subscription: Value) -> Socket {
    let mut socket = ws::connect_with(
        &format!("ws://127.0.0.1:{port}/ws"),
        Some(&bearer(Role::Viewer, VIEWER)),
        None,
    )
    .await
    .expect("ws connect");
    subscribe_on(&mut socket, subscription).await;
    socket
}

/// Send `message` as a text frame.
async fn send_json(socket: &mut Socket, message: Value) -> anyhow::Result<()> {
    socket
        .send(Message::Text(message.to_string().into()))
        .await?;
    Ok(())
}

/// Subscribe on an open socket and wait for the acknowledgement.
async fn subscribe_on(socket: &mut Socket, subscription: Value) {
    socket
        .send(Message::Text(subscription.to_string().into()))
        .await
        .expect("ws send");
    let acknowledgement = receive_json(socket).await;
    assert_eq!(acknowledgement["type"], "SUBSCRIBED", "{acknowledgement}");
}

/// The message a client must receive for a logged event: its kind, position and
/// envelope, whole (a replay from the read models gives the logged envelope too).
fn message(event: &EventEnvelope) -> Value {
    let envelope = serde_json::to_value(event).expect("envelope json");
    json!({"type": message_kind(event.event_type), "position": event.position, "event": envelope})
}

/// Wait until the query service at `query` is ready and its live hub has published
/// `position` (every event up to it is then behind the hub, not ahead of a client).
async fn wait_for_hub(query: &Running, nats: &NatsArgs, position: i64) {
    let needle = format!(
        "synapse_live_hub_position{{stream=\"{}\"}} ",
        nats.nats_stream
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = reqwest::get(query.url("/metrics")).await;
        let reached = match metrics {
            Ok(response) => response.text().await.ok().and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix(&needle))
                    .and_then(|value| value.trim().parse::<f64>().ok())
            }),
            Err(_) => None,
        };
        let ready = reqwest::get(query.url("/readyz"))
            .await
            .is_ok_and(|response| response.status() == 200);
        if ready && (position == 0 || reached.is_some_and(|at| at >= position as f64)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the hub never reached {position}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a live subscription's filters match an event (SPEC §9: correlation_id,
/// asset, rule, discipline; the batch's events and the ROLLED_BACK of each rollback of
/// it; the asset is the aggregate or the one its payload names).
fn matches(filters: &Value, event: &EventEnvelope) -> bool {
    let id = |name: &str| {
        filters[name]
            .as_str()
            .and_then(|id| id.parse::<Uuid>().ok())
    };
    id("correlation_id").is_none_or(|c| event.correlation_id == c || rolls_back(event, c))
        && id("rule_id").is_none_or(|r| event.rule_id == Some(r))
        && id("asset_id")
            .is_none_or(|a| event.aggregate_id == a || concerned_asset(event) == Some(a))
        && filters["discipline"]
            .as_str()
            .is_none_or(|d| event.discipline.as_deref() == Some(d))
}

/// Whether `event` is the BATCH_ROLLED_BACK of a rollback of `batch`: its payload names
/// the batch it undid.
fn rolls_back(event: &EventEnvelope, batch: Uuid) -> bool {
    event.event_type == EventType::BatchRolledBack
        && event.payload["target_correlation_id"] == json!(batch)
}

// ---------------------------------------------------------------------------------
// Filters, order, resuming
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn filtered_subscribers_get_exactly_the_matching_events_of_real_commands_in_order(
) -> anyhow::Result<()> {
    // Arrange: a plant and two rules; subscribers by discipline, rule, asset, a mix,
    // and everything.
    let stack = Stack::start().await?;
    stack.import(&as_csv(&small_plant())).await?;
    let vfd = stack.define_rule(&vfd_rule()).await?;
    let pumps = stack.define_rule(&pump_flag_rule()).await?;
    stack.settle().await?;
    let log = stack.log().await?;
    let (motor, pump) = (
        created_asset(&log, "M-102")?,
        created_asset(&log, "P-101A")?,
    );
    let head = stack.head().await?;
    wait_for_hub(&stack.system.query, &stack.system.nats.args, head).await;
    let all_filters = [
        json!({"discipline": "ELECTRICAL"}),
        json!({"rule_id": vfd}),
        json!({"asset_id": motor}),
        json!({"discipline": "MECHANICAL", "rule_id": pumps}),
        json!({}),
    ];
    let mut sockets = Vec::new();
    for filters in &all_filters {
        sockets.push(
            subscribe(
                stack.system.query.port,
                json!({"type": "subscribe", "filters": filters}),
            )
            .await,
        );
    }

    // Act: a run and an import at the same time, the run's rollback, and a rerun on
    // the motor and the pump (the last events every subscriber matches: anything sent
    // twice earlier would show as a mismatch).
    let (run, correction) = tokio::join!(
        stack.execute(json!({"rule_ids": [vfd, pumps]})),
        stack.import(
            "tag,asset_type,discipline,rated_power_kw\nM-100,ELECTRIC_MOTOR,ELECTRICAL,22\n"
        ),
    );
    let run = id_field(&run?, "correlation_id")?;
    correction?;
    stack.rollback(run).await?;
    stack
        .execute(json!({"rule_ids": [vfd, pumps], "filters": {"asset_ids": [motor, pump]}}))
        .await?;
    let log: Vec<EventEnvelope> = stack
        .log()
        .await?
        .into_iter()
        .filter(|e| e.position > head)
        .collect();

    for (filters, socket) in all_filters.iter().zip(&mut sockets) {
        let expected: Vec<Value> = log
            .iter()
            .filter(|e| matches(filters, e))
            .map(message)
            .collect();
        let received = receive_events(socket, expected.len()).await;

        // Assert: exactly the matching events, in log order, once each.
        assert_eq!(received, expected, "filters {filters}");
        assert!(
            expected.len() >= 3 && (expected.len() < log.len() || filters == &json!({})),
            "filters {filters} keep {} of {}",
            expected.len(),
            log.len()
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_batch_reads_started_rule_start_action_progress_rule_complete_completed_error_and_rolled_back(
) -> anyhow::Result<()> {
    // Arrange
    let stack = Stack::start().await?;
    stack.import(&as_csv(&small_plant())).await?;
    let vfd = stack.define_rule(&vfd_rule()).await?;
    let ranges = stack.define_rule(&instrument_range_rule()).await?;
    stack.settle().await?;
    let head = stack.head().await?;
    wait_for_hub(&stack.system.query, &stack.system.nats.args, head).await;
    let mut socket = subscribe(stack.system.query.port, json!({"type": "subscribe"})).await;

    // Act: a run that derives, a run whose rule errors, a rollback of the first.
    let run = id_field(
        &stack.execute(json!({"rule_ids": [vfd]})).await?,
        "correlation_id",
    )?;
    let failing = id_field(
        &stack.execute(json!({"rule_ids": [ranges]})).await?,
        "correlation_id",
    )?;
    let rollback = stack.rollback(run).await?;
    let log: Vec<EventEnvelope> = stack
        .log()
        .await?
        .into_iter()
        .filter(|e| e.position > head)
        .collect();
    let received = receive_events(&mut socket, log.len()).await;

    // Assert: every event once, in order, with its kind.
    assert_eq!(received, log.iter().map(message).collect::<Vec<_>>());
    // Per batch, repeated kinds folded into one: STARTED, RULE_START, the rule's
    // outcomes with a PROGRESS after each chunk, RULE_COMPLETE, COMPLETED.
    let sequence = |batch: Uuid| {
        let mut kinds: Vec<&str> = Vec::new();
        for message in received
            .iter()
            .filter(|m| m["event"]["correlation_id"] == json!(batch))
        {
            let kind = message["type"].as_str().unwrap_or("?");
            if kinds.last() != Some(&kind) {
                kinds.push(kind);
            }
        }
        kinds
    };
    for (batch, outcome) in [(run, "ACTION"), (failing, "ERROR")] {
        let kinds = sequence(batch);
        let n = kinds.len();
        assert!(n >= 6, "{kinds:?}");
        assert_eq!(kinds[..2], ["STARTED", "RULE_START"], "{kinds:?}");
        assert_eq!(
            kinds[n - 3..],
            ["PROGRESS", "RULE_COMPLETE", "COMPLETED"],
            "{kinds:?}"
        );
        assert!(kinds.contains(&outcome), "{kinds:?}");
        assert!(
            kinds[2..n - 2]
                .iter()
                .all(|k| *k == outcome || *k == "PROGRESS"),
            "{kinds:?}"
        );
    }
    let rolled_back = sequence(rollback);
    assert_eq!(rolled_back.first(), Some(&"STARTED"));
    assert!(rolled_back.contains(&"ROLLED_BACK"), "{rolled_back:?}");
    let announcement = received
        .iter()
        .find(|m| m["type"] == "ROLLED_BACK")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        announcement["event"]["payload"]["target_correlation_id"],
        json!(run)
    );
    assert_eq!(announcement["event"]["actor"], TEST_ADMIN);
    // Progress says how far the rule got, out of the total its RULE_START announced;
    // its last report agrees with RULE_COMPLETE's count.
    for batch in [run, failing] {
        let of_batch = |kind: &str| -> Vec<Value> {
            received
                .iter()
                .filter(|m| m["type"] == kind && m["event"]["correlation_id"] == json!(batch))
                .map(|m| m["event"]["payload"].clone())
                .collect()
        };
        let progress = of_batch("PROGRESS");
        let done: Vec<i64> = progress.iter().filter_map(|p| p["done"].as_i64()).collect();
        let total = of_batch("RULE_START")[0]["total"].as_i64().unwrap_or(0);
        assert_eq!(done.len(), progress.len(), "{progress:?}");
        assert!(done.windows(2).all(|w| w[0] < w[1]), "{done:?}");
        assert!(
            progress.iter().all(|p| p["total"] == json!(total)),
            "{progress:?}"
        );
        assert_eq!(
            done.last(),
            of_batch("RULE_COMPLETE")[0]["counts"]["assets"]
                .as_i64()
                .as_ref()
        );
        // The run ends where RULE_START said it would, although it creates assets
        // (a rule runs over the assets selected when it starts).
        assert_eq!(done.last(), Some(&total), "{done:?} of {total}");
    }
    let ranges_progress = received
        .iter()
        .rfind(|m| m["type"] == "PROGRESS" && m["event"]["correlation_id"] == json!(failing))
        .map(|m| m["event"]["payload"].clone())
        .unwrap_or_default();
    assert_eq!(ranges_progress["done"], ranges_progress["total"]);
    let error = received
        .iter()
        .find(|m| m["type"] == "ERROR")
        .cloned()
        .unwrap_or_default();
    assert_eq!(error["event"]["event_type"], "RULE_ERROR");
    assert_eq!(error["event"]["payload"]["tag"], "FT-1001");
    Ok(())
}

#[tokio::test]
async fn a_subscriber_resuming_mid_batch_gets_every_later_event_once_from_read_models_ring_and_live(
) -> anyhow::Result<()> {
    // Arrange: a run relayed before the query service starts and before anything is
    // projected; then an import the query service's hub sees.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, true).await?;
    let admin = http_client();
    let engineer = synapse_tests::client::http_client_as(Role::Engineer, ENGINEER);
    let pool = sqlx::PgPool::connect(&database.url).await?;
    let csv = as_csv(&small_plant());
    let imported = engineer
        .post(command.url("/assets/import"))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await?;
    assert_eq!(imported.status(), 201);
    let rule = send(
        &admin,
        reqwest::Method::POST,
        &command.url("/rules"),
        Some(&vfd_rule()),
    )
    .await?
    .expect_status(201);
    let run = send(
        &engineer,
        reqwest::Method::POST,
        &command.url("/rules/execute"),
        Some(&json!({"rule_ids": [rule.body["id"]], "wait": true})),
    )
    .await?
    .expect_status(200);
    let run = id_field(&run.body, "correlation_id")?;
    let before_hub = synapse_shared::event_log::head(&pool).await?;
    wait_for_messages(&nats.args, u64::try_from(before_hub)?, PATIENCE).await?;
    let query = apps::query_service(&database, &nats.args).await?;
    // Ready: the hub starts after the stream's last message, so it publishes nothing yet.
    wait_for_hub(&query, &nats.args, 0).await;
    let correction = engineer
        .post(command.url("/assets/import"))
        .header("content-type", "text/csv")
        .body("tag,asset_type,discipline,rated_power_kw\nM-100,ELECTRIC_MOTOR,ELECTRICAL,22\n")
        .send()
        .await?;
    assert_eq!(correction.status(), 200);
    let in_ring = synapse_shared::event_log::head(&pool).await?;
    wait_for_hub(&query, &nats.args, in_ring).await;
    let log = synapse_shared::event_log::read_after(&pool, 0, i64::MAX).await?;
    // Resume after the third outcome of the run: mid-batch.
    let resume = log
        .iter()
        .filter(|e| e.correlation_id == run && e.event_type == EventType::RuleExecuted)
        .nth(2)
        .map(|e| e.position)
        .ok_or_else(|| anyhow::anyhow!("fewer than three outcomes"))?;
    let all_filters = [
        json!({}),
        json!({"correlation_id": run}),
        json!({"discipline": "ELECTRICAL"}),
    ];
    let mut sockets = Vec::new();
    for filters in &all_filters {
        sockets.push(
            subscribe(
                query.port,
                json!({"type": "subscribe", "filters": filters, "after": resume}),
            )
            .await,
        );
    }

    // Act: nothing can be served before the read models reach the hub's memory.
    let early = tokio::time::timeout(Duration::from_millis(500), sockets[0].next()).await;
    let projection = apps::projection_service(&database, &nats.args).await?;
    // ...then the rollback of the run, live.
    let rollback = send(
        &admin,
        reqwest::Method::POST,
        &command.url("/rules/rollback"),
        Some(&json!({"correlation_id": run})),
    )
    .await?
    .expect_status(200);
    let rollback = id_field(&rollback.body, "correlation_id")?;
    let log = synapse_shared::event_log::read_after(&pool, resume, i64::MAX).await?;

    // Assert
    assert!(
        early.is_err(),
        "served before the projection ran: {early:?}"
    );
    for (filters, socket) in all_filters.iter().zip(&mut sockets) {
        let expected: Vec<Value> = log
            .iter()
            .filter(|e| matches(filters, e))
            .map(message)
            .collect();
        let received = receive_events(socket, expected.len()).await;
        assert_eq!(received, expected, "filters {filters}");
    }
    // Every source took part: the read models (before the hub), its ring, live.
    let everything: Vec<&EventEnvelope> = log.iter().collect();
    assert!(everything.iter().any(|e| e.position <= before_hub));
    assert!(everything
        .iter()
        .any(|e| e.position > before_hub && e.position <= in_ring));
    assert!(everything.iter().any(|e| e.correlation_id == rollback));
    projection.stop().await?;
    query.stop().await?;
    command.stop().await
}

#[tokio::test]
async fn a_batchs_subscribers_hear_each_rollback_of_it_live_and_once_when_resuming(
) -> anyhow::Result<()> {
    // Arrange: a hub that remembers two events, so what a resuming client missed comes
    // from the read models; a run that marks every motor, then a change to one of them
    // (which a rollback of the run must then leave alone).
    let limits = LiveLimits {
        ring_capacity: 2,
        ..LiveLimits::default()
    };
    let stack = Stack::start_with_limits(limits).await?;
    let port = stack.system.query.port;
    stack.import(&as_csv(&small_plant())).await?;
    let inspect = stack
        .define_rule(&json!({
            "name": "Motors are due for inspection", "discipline": "ELECTRICAL",
            "when": "asset.asset_type == 'ELECTRIC_MOTOR'",
            "then": [{"type": "set_property", "name": "inspection", "value": "'due'"}]
        }))
        .await?;
    let run = id_field(
        &stack.execute(json!({"rule_ids": [inspect]})).await?,
        "correlation_id",
    )?;
    let motor = created_asset(&stack.log().await?, "M-102")?;
    stack
        .command(
            &stack.engineer,
            reqwest::Method::PATCH,
            &format!("/assets/{motor}"),
            Some(&json!({"properties": {"inspection": "done"}})),
            200,
        )
        .await?;
    let before_rollback = stack.head().await?;
    wait_for_hub(
        &stack.system.query,
        &stack.system.nats.args,
        before_rollback,
    )
    .await;
    let of_the_run = json!({"correlation_id": run});
    let mut live = subscribe(port, json!({"type": "subscribe", "filters": of_the_run})).await;

    // Act: a partial rollback of the run; a later batch pushes it out of the hub's
    // memory; a client resumes from before it; a cascade rolls back the change in the
    // way (a rollback of another batch), then the rest of the run.
    let rollback = |mode: &str| json!({"correlation_id": run, "mode": mode});
    let partial = stack
        .command(
            &stack.system.http,
            reqwest::Method::POST,
            "/rules/rollback",
            Some(&rollback("partial")),
            200,
        )
        .await?;
    stack
        .create_asset(&json!({"tag": "P-201", "asset_type": "CENTRIFUGAL_PUMP",
                              "discipline": "MECHANICAL", "properties": {}}))
        .await?;
    stack.settle().await?;
    let head = stack.head().await?;
    wait_for_hub(&stack.system.query, &stack.system.nats.args, head).await;
    let mut resumed = subscribe(
        port,
        json!({"type": "subscribe", "filters": of_the_run, "after": before_rollback}),
    )
    .await;
    let cascade = stack
        .command(
            &stack.system.http,
            reqwest::Method::POST,
            "/rules/rollback",
            Some(&rollback("cascade")),
            200,
        )
        .await?;
    let log: Vec<EventEnvelope> = stack
        .log()
        .await?
        .into_iter()
        .filter(|e| e.position > before_rollback)
        .collect();
    let expected: Vec<Value> = log
        .iter()
        .filter(|e| matches(&of_the_run, e))
        .map(message)
        .collect();
    let received_live = receive_events(&mut live, expected.len()).await;
    let received_on_resuming = receive_events(&mut resumed, expected.len()).await;

    // Assert: the ROLLED_BACK of each of the two rollbacks of the run (as their own
    // subscribers get it, naming the run), once each and in order, live and resuming;
    // not the cascade's rollback of the change in its way.
    let announced = |message: &Value| {
        (
            message["type"].clone(),
            message["event"]["correlation_id"].clone(),
            message["event"]["payload"]["target_correlation_id"].clone(),
        )
    };
    assert_eq!(
        expected.iter().map(announced).collect::<Vec<_>>(),
        [&partial, &cascade].map(|outcome| (
            json!("ROLLED_BACK"),
            outcome["correlation_id"].clone(),
            json!(run)
        ))
    );
    assert_eq!(cascade["cascaded"].as_array().map(Vec::len), Some(1));
    assert_eq!(received_live, expected);
    assert_eq!(received_on_resuming, expected);
    // The premise: the partial rollback's announcement had left the hub's memory (two
    // events) before the client resumed, so it came from the read models.
    let announced_at = expected[0]["position"].as_i64().unwrap_or(i64::MAX);
    assert!(
        log.iter()
            .filter(|e| e.position > announced_at && e.position <= head)
            .count()
            >= 2
    );
    Ok(())
}

#[tokio::test]
async fn a_subscriber_joining_a_running_batch_by_its_correlation_id_gets_all_of_it_once(
) -> anyhow::Result<()> {
    // Arrange: 2,000 pumps, so the run takes a few chunks.
    let stack = Stack::start().await?;
    stack.import(&as_csv(&pumps(2_000))).await?;
    let rule = stack.define_rule(&pump_flag_rule()).await?;
    let head = stack.head().await?;

    // Act: subscribe once the run has started, from before it.
    let run = stack.start_execution(json!({"rule_ids": [rule]})).await?;
    let mut socket = subscribe(
        stack.system.query.port,
        json!({"type": "subscribe", "filters": {"correlation_id": run}, "after": head}),
    )
    .await;
    let mut received = Vec::new();
    loop {
        let message = receive_json(&mut socket).await;
        let done = message["type"] == "COMPLETED";
        received.push(message);
        if done {
            break;
        }
    }

    // Assert: the whole batch, once, in order.
    let expected: Vec<Value> = stack
        .log()
        .await?
        .iter()
        .filter(|e| e.correlation_id == run)
        .map(message)
        .collect();
    assert!(expected.len() > 4_000, "{}", expected.len());
    assert_eq!(received, expected);
    Ok(())
}

#[tokio::test]
async fn a_client_resuming_from_the_read_models_gets_the_very_envelopes_the_stream_carries(
) -> anyhow::Result<()> {
    // Arrange: real commands, relayed and projected before the query service starts,
    // so its live memory is empty and the replay comes from the read models alone.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, true).await?;
    let projection = apps::projection_service(&database, &nats.args).await?;
    let http = http_client();
    let created = send(
        &http,
        reqwest::Method::POST,
        &command.url("/assets"),
        Some(&json!({
            "tag": "M-301", "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL",
            "properties": {"rated_power_kw": 30}
        })),
    )
    .await?
    .expect_status(201);
    let id = created.body["asset"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for (version, power) in [(1, 45), (2, 55)] {
        send(
            &http,
            reqwest::Method::PATCH,
            &command.url(&format!("/assets/{id}")),
            Some(&json!({"expected_version": version, "properties": {"rated_power_kw": power}})),
        )
        .await?
        .expect_status(200);
    }
    apps::wait_for_projection(&database.url).await?;
    let query = apps::query_service(&database, &nats.args).await?;
    let about_the_motor: Vec<Value> = read_all(&nats.args)
        .await?
        .into_iter()
        .map(|message| message.envelope)
        .filter(|event| {
            event.aggregate_id.to_string() == id
                || event.payload.get("asset_id").and_then(Value::as_str) == Some(id.as_str())
        })
        .map(|event| json!({"type": message_kind(event.event_type), "position": event.position, "event": event}))
        .collect();

    // Act
    let mut socket = subscribe(
        query.port,
        json!({"type": "subscribe", "filters": {"asset_id": id}, "after": 0}),
    )
    .await;
    let replayed = receive_events(&mut socket, about_the_motor.len()).await;

    // Assert: exactly as streamed, but for the version `rm_events` cannot know.
    assert!(
        about_the_motor.len() >= 3,
        "at least the creation and two updates"
    );
    assert_eq!(replayed, about_the_motor);
    query.stop().await?;
    projection.stop().await?;
    command.stop().await
}

// ---------------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------------

/// A CSV of `rows` motors with `columns` text properties of 4,000 characters each (the
/// largest a text property may be): bulky events.
fn bulky_import(rows: usize, columns: usize) -> String {
    let assets: Vec<Value> = (0..rows)
        .map(|index| {
            let properties: serde_json::Map<String, Value> = (0..columns)
                .map(|column| (format!("note_{column}"), json!("x".repeat(4_000))))
                .collect();
            json!({"tag": format!("M-{index:04}"), "asset_type": "ELECTRIC_MOTOR",
                   "discipline": "ELECTRICAL", "area": "U100", "properties": properties})
        })
        .collect();
    as_csv(&assets)
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_delay_another_client() -> anyhow::Result<()> {
    // Arrange: two subscribers; one never reads while ~16 MB of events go by.
    let stack = Stack::start().await?;
    wait_for_hub(&stack.system.query, &stack.system.nats.args, 0).await;
    let stalled = subscribe(stack.system.query.port, json!({"type": "subscribe"})).await;
    let mut reader = subscribe(stack.system.query.port, json!({"type": "subscribe"})).await;
    let reading = tokio::spawn(async move {
        let mut positions = Vec::new();
        loop {
            let message = receive_json(&mut reader).await;
            positions.push(message["position"].as_i64().unwrap_or(0));
            if message["type"] == "COMPLETED" {
                return positions;
            }
        }
    });

    // Act
    stack.import(&bulky_import(500, 8)).await?;
    let received = tokio::time::timeout(PATIENCE, reading).await??;

    // Assert: the import's every event, in order.
    let logged: Vec<i64> = stack.log().await?.iter().map(|e| e.position).collect();
    assert!(logged.len() > 500);
    assert_eq!(received, logged);
    drop(stalled);
    Ok(())
}

#[tokio::test]
async fn a_client_too_far_behind_is_told_where_to_resume_and_resumes_without_a_gap(
) -> anyhow::Result<()> {
    // Arrange: small buffers, a client that does not read while ~13 MB go by.
    let limits = LiveLimits {
        ring_capacity: 16,
        broadcast_capacity: 16,
        client_queue: 2,
    };
    let stack = Stack::start_with_limits(limits).await?;
    wait_for_hub(&stack.system.query, &stack.system.nats.args, 0).await;
    let mut behind = subscribe(stack.system.query.port, json!({"type": "subscribe"})).await;
    stack.import(&bulky_import(200, 16)).await?;
    let head = stack.head().await?;
    wait_for_hub(&stack.system.query, &stack.system.nats.args, head).await;

    // Act: read what the server kept for it, up to the LAGGED notice.
    let mut delivered = Vec::new();
    let resume_after = loop {
        match receive(&mut behind).await {
            Received::Json(message) if message["type"] == "LAGGED" => {
                break message["resume_after"].as_i64().expect("resume_after");
            }
            Received::Json(message) => delivered.push(message["position"].as_i64().unwrap_or(0)),
            Received::Closed(code) => panic!("closed without LAGGED: {code:?}"),
        }
    };
    let closed = receive(&mut behind).await;
    stack.settle().await?;
    let mut resumed = subscribe(
        stack.system.query.port,
        json!({"type": "subscribe", "after": resume_after}),
    )
    .await;
    let log = stack.log().await?;
    let rest: Vec<&EventEnvelope> = log.iter().filter(|e| e.position > resume_after).collect();
    let rest_received = receive_events(&mut resumed, rest.len()).await;

    // Assert
    assert!(resume_after < head, "the client was never behind");
    let before: Vec<i64> = log
        .iter()
        .map(|e| e.position)
        .filter(|p| *p <= resume_after)
        .collect();
    assert_eq!(delivered, before);
    assert_eq!(closed, Received::Closed(Some(1008)));
    assert_eq!(
        rest_received,
        rest.into_iter().map(message).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn a_client_resuming_from_far_back_while_changes_go_by_is_not_told_it_lagged(
) -> anyhow::Result<()> {
    // Arrange: small buffers; a log of some thousand events, projected; then a writer
    // that keeps changing an asset while a client resumes from the start, so that far
    // more than the client's buffer goes by live during its replay.
    let limits = LiveLimits {
        ring_capacity: 16,
        broadcast_capacity: 16,
        ..LiveLimits::default()
    };
    let stack = Stack::start_with_limits(limits).await?;
    stack.import(&as_csv(&pumps(3_000))).await?;
    stack.settle().await?;
    wait_for_hub(
        &stack.system.query,
        &stack.system.nats.args,
        stack.head().await?,
    )
    .await;
    let asset = stack
        .create_asset(&json!({"tag": "P-LIVE", "asset_type": "CENTRIFUGAL_PUMP",
                                           "discipline": "MECHANICAL", "properties": {}}))
        .await?;
    let writing = CancellationToken::new();
    let writer = tokio::spawn({
        let (client, url, writing) = (
            stack.engineer.clone(),
            stack.system.command.url(&format!("/assets/{asset}")),
            writing.clone(),
        );
        async move {
            let mut changes = 0;
            while !writing.is_cancelled() {
                let body = json!({"properties": {"step": changes}});
                send(&client, reqwest::Method::PATCH, &url, Some(&body))
                    .await?
                    .expect_status(200);
                changes += 1;
            }
            anyhow::Ok(changes)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act: resume from the start, reading as fast as possible; the writer stops once
    // the client has got what the log held when it subscribed.
    let subscribed_at = stack.head().await?;
    let mut resumed = subscribe(
        stack.system.query.port,
        json!({"type": "subscribe", "after": 0}),
    )
    .await;
    let mut writer = Some(writer);
    let (mut changes, mut head) = (0, None);
    let mut received: Vec<Value> = Vec::new();
    loop {
        let last = received
            .last()
            .and_then(|message| message["position"].as_i64());
        if last >= Some(subscribed_at) {
            if let Some(writer) = writer.take() {
                writing.cancel();
                changes = writer.await??;
                stack.settle().await?;
                head = Some(stack.head().await?);
            }
        }
        if head.is_some() && last == head {
            break;
        }
        match receive(&mut resumed).await {
            Received::Json(message) if message["type"] == "LAGGED" => {
                panic!("told it lagged after {} events: {message}", received.len())
            }
            Received::Json(message) => received.push(message),
            Received::Closed(code) => panic!("closed after {} events: {code:?}", received.len()),
        }
    }

    // Assert: the whole log once, in order (before: every event up to the head, then
    // LAGGED and close 1008, its buffer having overflowed while it replayed).
    let log = stack.log().await?;
    assert!(changes > 10, "{changes}");
    assert_eq!(received, log.iter().map(message).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn a_client_resuming_while_the_projection_is_stopped_is_not_told_it_lagged(
) -> anyhow::Result<()> {
    // Arrange: small buffers and no projection yet; a batch pushes the hub's memory
    // past the read models, so a client resuming from the start waits for them while a
    // second batch, far larger than its buffer, goes by live.
    let limits = LiveLimits {
        ring_capacity: 16,
        broadcast_capacity: 16,
        ..LiveLimits::default()
    };
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, true).await?;
    let query = apps::query_service_with_limits(&database, &nats.args, limits).await?;
    wait_for_hub(&query, &nats.args, 0).await;
    let pool = sqlx::PgPool::connect(&database.url).await?;
    let http = http_client();
    let import = |assets: Vec<Value>| {
        http.post(command.url("/assets/import"))
            .header("content-type", "text/csv")
            .body(as_csv(&assets))
            .send()
    };
    assert_eq!(import(pumps(100)).await?.status(), 201);
    let head = synapse_shared::event_log::head(&pool).await?;
    wait_for_hub(&query, &nats.args, head).await;
    let mut resumed = subscribe(query.port, json!({"type": "subscribe", "after": 0})).await;
    assert_eq!(import(motors("M-", 100, json!({}))).await?.status(), 201);
    let head = synapse_shared::event_log::head(&pool).await?;
    wait_for_hub(&query, &nats.args, head).await;

    // Act: the projection starts (as after an outage) and catches up.
    let projection = apps::projection_service(&database, &nats.args).await?;
    let log = synapse_shared::event_log::read_after(&pool, 0, i64::MAX).await?;
    let replayed = receive_events(&mut resumed, log.len()).await;
    // ...and the client stays on the live feed.
    let created = send(
        &http,
        reqwest::Method::POST,
        &command.url("/assets"),
        Some(&json!({"tag": "P-9999", "asset_type": "CENTRIFUGAL_PUMP",
                     "discipline": "MECHANICAL", "properties": {}})),
    )
    .await?
    .expect_status(201);
    let live = synapse_shared::event_log::read_after(&pool, head, i64::MAX).await?;
    let followed = receive_events(&mut resumed, live.len()).await;

    // Assert: the whole log once, in order, and no LAGGED although each batch was more
    // than six times the client's buffer.
    assert!(log.len() > 2 * 100, "{}", log.len());
    assert_eq!(replayed, log.iter().map(message).collect::<Vec<_>>());
    assert_eq!(created.body["asset"]["tag"], "P-9999");
    assert_eq!(followed, live.iter().map(message).collect::<Vec<_>>());
    projection.stop().await?;
    query.stop().await?;
    command.stop().await
}

// ---------------------------------------------------------------------------------
// Protocol edges
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_bad_message_gets_a_protocol_error_and_the_session_stays_usable() -> anyhow::Result<()> {
    // Arrange
    let stack = Stack::start().await?;
    wait_for_hub(&stack.system.query, &stack.system.nats.args, 0).await;
    let mut socket = ws::connect_with(
        &format!("ws://127.0.0.1:{}/ws", stack.system.query.port),
        Some(&bearer(Role::Viewer, VIEWER)),
        None,
    )
    .await?;

    // Act
    socket
        .send(Message::Text(
            json!({"type": "subscribe", "filters": {"tag": "P-101"}})
                .to_string()
                .into(),
        ))
        .await?;
    let unknown_filter = receive_json(&mut socket).await;
    socket.send(Message::Text("{not json".into())).await?;
    let malformed = receive_json(&mut socket).await;
    socket
        .send(Message::Text(
            json!({"type": "subscribe", "filters": {"discipline": "MECHANICAL\u{0}"}, "after": 0})
                .to_string()
                .into(),
        ))
        .await?;
    let nul = receive_json(&mut socket).await;
    subscribe_on(&mut socket, json!({"type": "subscribe"})).await;
    stack
        .create_asset(&json!({"tag": "P-101", "asset_type": "CENTRIFUGAL_PUMP",
                              "discipline": "MECHANICAL", "properties": {}}))
        .await?;
    let started = receive_json(&mut socket).await;

    // Assert
    assert_eq!(unknown_filter["type"], "ERROR_PROTOCOL");
    assert!(
        unknown_filter["detail"]
            .as_str()
            .is_some_and(|d| d.contains("tag")),
        "{unknown_filter}"
    );
    assert_eq!(malformed["type"], "ERROR_PROTOCOL");
    assert_eq!(nul["type"], "ERROR_PROTOCOL");
    assert!(
        nul["detail"].as_str().is_some_and(|d| d.contains("NUL")),
        "{nul}"
    );
    let log = stack.log().await?;
    assert_eq!(vec![started], vec![message(&log[0])]);
    assert_eq!(log[0].event_type, EventType::BatchStarted);
    Ok(())
}

#[tokio::test]
async fn a_discipline_filter_is_a_code_in_any_case_live_and_resuming_and_nothing_else(
) -> anyhow::Result<()> {
    // Arrange: a live subscriber by a lower-case discipline, before anything happens.
    let stack = Stack::start().await?;
    wait_for_hub(&stack.system.query, &stack.system.nats.args, 0).await;
    let lower_case = json!({"type": "subscribe", "filters": {"discipline": "electrical"}});
    let mut live = subscribe(stack.system.query.port, lower_case.clone()).await;
    let mut unsubscribed = ws::connect_with(
        &format!("ws://127.0.0.1:{}/ws", stack.system.query.port),
        Some(&bearer(Role::Viewer, VIEWER)),
        None,
    )
    .await?;
    let asset = |tag: &str, discipline: &str| {
        json!({"tag": tag, "asset_type": "ELECTRIC_MOTOR", "discipline": discipline,
               "properties": {}})
    };

    // Act: electrical, mechanical, electrical again, so a leak would come first.
    stack.create_asset(&asset("M-101", "ELECTRICAL")).await?;
    stack.create_asset(&asset("P-101", "MECHANICAL")).await?;
    stack.create_asset(&asset("M-102", "ELECTRICAL")).await?;
    stack.settle().await?;
    let mut resumed = subscribe(
        stack.system.query.port,
        json!({"type": "subscribe", "filters": {"discipline": "Electrical"}, "after": 0}),
    )
    .await;
    let mut refusals = Vec::new();
    for blank in ["", "  \t", " ELECTRICAL", "E/I"] {
        unsubscribed
            .send(Message::Text(
                json!({"type": "subscribe", "filters": {"discipline": blank}})
                    .to_string()
                    .into(),
            ))
            .await?;
        refusals.push(receive_json(&mut unsubscribed).await);
    }

    // Assert
    let log = stack.log().await?;
    let expected: Vec<Value> = log
        .iter()
        .filter(|event| event.discipline.as_deref() == Some("ELECTRICAL"))
        .map(message)
        .collect();
    assert!(expected.len() >= 2, "{expected:?}");
    assert!(log
        .iter()
        .any(|event| event.discipline.as_deref() == Some("MECHANICAL")));
    assert_eq!(receive_events(&mut live, expected.len()).await, expected);
    assert_eq!(receive_events(&mut resumed, expected.len()).await, expected);
    for refusal in refusals {
        assert_eq!(refusal["type"], "ERROR_PROTOCOL", "{refusal}");
        assert!(
            refusal["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("discipline")),
            "{refusal}"
        );
    }
    // The refusals left the session usable.
    subscribe_on(&mut unsubscribed, lower_case).await;
    Ok(())
}

/// On a multi-threaded runtime, as the service runs: a replaced subscription's task
/// may be sending on another thread when the new one starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscription_on_a_socket_gets_nothing_of_the_one_it_replaces_after_its_ack(
) -> anyhow::Result<()> {
    // Arrange: 2,000 mechanical pumps, then two electrical motors, all in the read models.
    let stack = Stack::start().await?;
    stack.import(&as_csv(&pumps(2_000))).await?;
    for tag in ["M-301", "M-302"] {
        stack
            .create_asset(&json!({"tag": tag, "asset_type": "ELECTRIC_MOTOR",
                                  "discipline": "ELECTRICAL", "properties": {}}))
            .await?;
    }
    stack.settle().await?;
    let log = stack.log().await?;
    wait_for_hub(
        &stack.system.query,
        &stack.system.nats.args,
        log.last().map_or(0, |event| event.position),
    )
    .await;
    let expected: Vec<Value> = log
        .iter()
        .filter(|event| event.discipline.as_deref() == Some("ELECTRICAL"))
        .map(message)
        .collect();
    assert_eq!(expected.len(), 2);

    // Act: ten times, a replay of everything, replaced 100 frames in by the electrical
    // events alone.
    let mut socket = subscribe(stack.system.query.port, json!({"type": "subscribe"})).await;
    let mut rounds = Vec::new();
    for _ in 0..10 {
        send_json(
            &mut socket,
            json!({"type": "subscribe", "filters": {}, "after": 0}),
        )
        .await?;
        let mut frames = Vec::new();
        while frames.len() < 100 {
            frames.push(receive_json(&mut socket).await);
        }
        send_json(
            &mut socket,
            json!({"type": "subscribe", "filters": {"discipline": "ELECTRICAL"}, "after": 0}),
        )
        .await?;
        while receive_json(&mut socket).await["type"] != "SUBSCRIBED" {}
        let after_ack = receive_events(&mut socket, expected.len()).await;
        send_json(
            &mut socket,
            json!({"type": "subscribe", "filters": {"discipline": "NONE"}}),
        )
        .await?;
        rounds.push((after_ack, receive_json(&mut socket).await["type"].clone()));
    }

    // Assert: after each ack, the two electrical events and then nothing but the next
    // ack (before: frames of the replaced replay of pumps, up to 80, came after it).
    let positions = |messages: &[Value]| -> Vec<(Value, Value)> {
        let of = |m: &Value| (m["position"].clone(), m["event"]["discipline"].clone());
        messages.iter().map(of).collect()
    };
    for (after_ack, next) in rounds {
        assert_eq!(positions(&after_ack), positions(&expected));
        assert_eq!(after_ack, expected);
        assert_eq!(next, "SUBSCRIBED");
    }
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_every_websocket_with_going_away() -> anyhow::Result<()> {
    // Arrange
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let query = apps::query_service(&database, &nats.args).await?;
    wait_for_hub(&query, &nats.args, 0).await;
    let mut socket = subscribe(query.port, json!({"type": "subscribe"})).await;

    // Act
    let stopping = tokio::spawn(query.stop());
    let closed = receive(&mut socket).await;

    // Assert
    assert_eq!(closed, Received::Closed(Some(1001)));
    tokio::time::timeout(PATIENCE, stopping).await???;
    Ok(())
}

#[tokio::test]
async fn the_live_feed_carries_on_after_nats_restarts() -> anyhow::Result<()> {
    // Arrange: a nats-server of this test's own, so stopping it disturbs no other test;
    // the command service relays to it, the query service follows it.
    let mut server = OwnNatsServer::start().await?;
    let nats = NatsArgs::isolated(&server.url(), &Uuid::new_v4().simple().to_string());
    let database = TestDatabase::create().await?;
    let command = apps::command_service(&database, &nats, true).await?;
    let query = apps::query_service(&database, &nats).await?;
    wait_for_hub(&query, &nats, 0).await;
    let pool = sqlx::PgPool::connect(&database.url).await?;
    let engineer = synapse_tests::client::http_client_as(Role::Engineer, ENGINEER);
    let create = |tag: &str| json!({"tag": tag, "asset_type": "CENTRIFUGAL_PUMP", "discipline": "MECHANICAL", "properties": {}});
    let mut socket = subscribe(query.port, json!({"type": "subscribe"})).await;
    send(
        &engineer,
        reqwest::Method::POST,
        &command.url("/assets"),
        Some(&create("P-1")),
    )
    .await?
    .expect_status(201);
    let before = receive_events(&mut socket, 3).await;

    // Act: NATS dies and comes back (same store); another command is relayed.
    server.kill().await?;
    server.restart().await?;
    send(
        &engineer,
        reqwest::Method::POST,
        &command.url("/assets"),
        Some(&create("P-2")),
    )
    .await?
    .expect_status(201);
    let after = receive_events(&mut socket, 3).await;

    // Assert: both batches, each event once, as logged.
    let log = synapse_shared::event_log::read_after(&pool, 0, 100).await?;
    assert_eq!(log.len(), 6);
    let expected: Vec<Value> = log.iter().map(message).collect();
    assert_eq!(before, expected[..3]);
    assert_eq!(after, expected[3..]);
    query.stop().await?;
    command.stop().await
}

#[tokio::test]
async fn a_page_from_a_listed_origin_may_ask_for_a_ticket_across_origins_and_others_may_not(
) -> anyhow::Result<()> {
    // Arrange: a query service that lists one browser origin. Before, a page there
    // could not get a ticket: the browser's preflight for `POST /ws/ticket` (it
    // carries `Authorization`) was a 405.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let query =
        apps::query_service_with_origins(&database, &nats.args, &["https://ops.example.com"])
            .await?;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, query.url("/ws/ticket"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .send()
    };

    // Act
    let listed = preflight("https://ops.example.com").await?;
    let other = preflight("https://evil.example").await?;
    let ticket = http
        .post(query.url("/ws/ticket"))
        .header("origin", "https://ops.example.com")
        .header("authorization", bearer(Role::Viewer, "browser"))
        .send()
        .await?;

    // Assert
    let allowed = |response: &reqwest::Response| {
        response
            .headers()
            .get("access-control-allow-origin")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    assert!(listed.status().is_success(), "{}", listed.status());
    assert_eq!(allowed(&listed).as_deref(), Some("https://ops.example.com"));
    let methods = listed
        .headers()
        .get("access-control-allow-methods")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    assert_eq!(allowed(&other), None);
    assert_eq!(ticket.status(), 200);
    assert_eq!(allowed(&ticket).as_deref(), Some("https://ops.example.com"));
    query.stop().await
}

#[tokio::test]
async fn a_session_ends_when_the_token_that_opened_it_expires_and_so_does_a_tickets(
) -> anyhow::Result<()> {
    // Arrange: a viewer token valid for 3 s more. Before, a session it opened went
    // on serving after it expired, and a ticket got with it outlived it by 30 s.
    let stack = Stack::start().await?;
    wait_for_hub(&stack.system.query, &stack.system.nats.args, 0).await;
    let ws_url = format!("ws://127.0.0.1:{}/ws", stack.system.query.port);
    let short = synapse_shared::auth::issue_token(
        synapse_tests::auth::TEST_SECRET,
        "short-lived",
        Role::Viewer,
        Duration::from_secs(3),
        synapse_shared::auth::DEFAULT_ISSUER,
        synapse_shared::auth::DEFAULT_AUDIENCE,
    )?;
    let bearer = format!("Bearer {short}");

    // Act
    let mut socket = ws::connect_with(&ws_url, Some(&bearer), None).await?;
    subscribe_on(&mut socket, json!({"type": "subscribe"})).await;
    let ticket: Value = reqwest::Client::new()
        .post(stack.system.query.url("/ws/ticket"))
        .header("authorization", &bearer)
        .send()
        .await?
        .json()
        .await?;
    let ticket = ticket["ticket"].as_str().unwrap_or_default().to_owned();
    let mut by_ticket = ws::connect_with(&format!("{ws_url}?ticket={ticket}"), None, None).await?;
    subscribe_on(&mut by_ticket, json!({"type": "subscribe"})).await;
    let closed = receive(&mut socket).await;
    let ticket_closed = receive(&mut by_ticket).await;

    // Assert: both closed with "policy violation" once the token expired.
    assert_eq!(closed, Received::Closed(Some(1008)));
    assert_eq!(ticket_closed, Received::Closed(Some(1008)));
    Ok(())
}

#[tokio::test]
async fn the_feed_needs_a_token_and_a_browser_opens_it_with_a_ticket_from_its_own_origin(
) -> anyhow::Result<()> {
    // Arrange
    let stack = Stack::start().await?;
    wait_for_hub(&stack.system.query, &stack.system.nats.args, 0).await;
    let ws_url = format!("ws://127.0.0.1:{}/ws", stack.system.query.port);

    // Act
    let without_token = ws::connect_with(&ws_url, None, None).await;
    let ticket: Value = stack
        .viewer
        .post(stack.system.query.url("/ws/ticket"))
        .send()
        .await?
        .json()
        .await?;
    let ticket = ticket["ticket"].as_str().unwrap_or_default().to_owned();
    let own_origin = format!("http://127.0.0.1:{}", stack.system.query.port);
    let mut browser = ws::connect_with(
        &format!("{ws_url}?ticket={ticket}"),
        None,
        Some(&own_origin),
    )
    .await?;
    let foreign_origin = ws::connect_with(
        &format!("{ws_url}?ticket={ticket}"),
        None,
        Some("https://evil.example"),
    )
    .await;
    subscribe_on(&mut browser, json!({"type": "subscribe"})).await;
    stack
        .create_asset(&json!({"tag": "P-7", "asset_type": "CENTRIFUGAL_PUMP",
                              "discipline": "MECHANICAL", "properties": {}}))
        .await?;
    let started = receive_json(&mut browser).await;

    // Assert
    let refusal = without_token
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(refusal.contains("401"), "{refusal}");
    let refusal = foreign_origin
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(refusal.contains("403"), "{refusal}");
    let log = stack.log().await?;
    assert_eq!(vec![started], vec![message(&log[0])]);
    Ok(())
}
