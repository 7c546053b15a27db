//! The query service's HTTP API (SPEC §9) over data real commands produced: imports,
//! rule definitions, executions, rollbacks and single changes go through the command
//! service, its relay, JetStream and the projection service. What each answer must
//! hold is derived from the command side's event log, never from rows a test wrote.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use synapse_shared::{AggregateType, EventEnvelope, EventType};
use synapse_tests::apps;
use synapse_tests::auth::{bearer, Role, TEST_ADMIN};
use synapse_tests::client::{http_client_as, send, Reply};
use synapse_tests::drive::{
    concerned_asset, created_asset, id_field, positions, side, timeline_entry, Stack, ENGINEER,
    VIEWER,
};
use synapse_tests::plant::{
    as_csv, instrument_range_rule, pump_flag_rule, pumps, small_plant, vfd_rule,
};
use synapse_tests::{ws, TestDatabase, TestNats};
use uuid::Uuid;

// ---------------------------------------------------------------------------------
// The story every test reads
// ---------------------------------------------------------------------------------

/// A plant's day: the engineer imports the plant; the admin defines two rules; the
/// engineer runs them; the engineer imports a correction; the admin rolls the run back;
/// the engineer deletes the transmitter.
struct Story {
    stack: Stack,
    log: Vec<EventEnvelope>,
    import: Uuid,
    vfd: Uuid,
    execution: Uuid,
    reimport: Uuid,
    rollback: Uuid,
    /// M-102, 75 kW: created, updated by the VFD rule, restored by the rollback.
    motor: Uuid,
    /// FT-1001: created, updated by the second import, deleted.
    transmitter: Uuid,
}

/// The second import: M-100 grows to 22 kW, FT-1001 gets a range.
const CORRECTION: &str = "tag,asset_type,discipline,rated_power_kw,range_m3h\n\
                          M-100,ELECTRIC_MOTOR,ELECTRICAL,22,\n\
                          FT-1001,FLOW_TRANSMITTER,INSTRUMENTATION,,80\n";

async fn story() -> anyhow::Result<Story> {
    let stack = Stack::start().await?;
    let import = stack.import(&as_csv(&small_plant())).await?;
    let vfd = stack.define_rule(&vfd_rule()).await?;
    let pumps = stack.define_rule(&pump_flag_rule()).await?;
    let report = stack.execute(json!({"rule_ids": [vfd, pumps]})).await?;
    let execution = id_field(&report, "correlation_id")?;
    let reimport = stack.import(CORRECTION).await?;
    let rollback = stack.rollback(execution).await?;
    let transmitter = created_asset(&stack.log().await?, "FT-1001")?;
    stack.delete_asset(transmitter).await?;
    stack.settle().await?;
    let log = stack.log().await?;
    let motor = created_asset(&log, "M-102")?;
    Ok(Story {
        stack,
        log,
        import,
        vfd,
        execution,
        reimport,
        rollback,
        motor,
        transmitter,
    })
}

impl Story {
    /// The rollback that undid an event: the execution's every event is undone.
    fn rolled_back_by(&self, event: &EventEnvelope) -> Option<Uuid> {
        (event.correlation_id == self.execution).then_some(self.rollback)
    }

    /// The timeline entries of the logged events `keep` selects, in log order.
    fn expected(&self, keep: &dyn Fn(&EventEnvelope) -> bool) -> Vec<Value> {
        self.log
            .iter()
            .filter(|event| keep(event))
            .map(|event| timeline_entry(event, self.rolled_back_by(event)))
            .collect()
    }

    /// The first logged event of `correlation_id` with `event_type`.
    fn first(&self, correlation_id: Uuid, event_type: EventType) -> &EventEnvelope {
        self.log
            .iter()
            .find(|e| e.correlation_id == correlation_id && e.event_type == event_type)
            .unwrap_or_else(|| panic!("no {event_type} in {correlation_id}"))
    }

    /// The correlation id of the last batch (the deletion).
    fn last_batch(&self) -> Uuid {
        self.log
            .iter()
            .rev()
            .find(|e| e.event_type == EventType::BatchStarted)
            .map(|e| e.correlation_id)
            .unwrap_or_default()
    }
}

/// Every entry of a timeline query (without `after`), page by page of `limit`,
/// checking that each page's `next_after` is its last position; and the page count.
async fn timeline(stack: &Stack, query: &str, limit: u32) -> anyhow::Result<(Vec<Value>, usize)> {
    every_page(stack, &format!("/events/timeline?{query}&"), limit).await
}

/// Every entry of the event pages at `path` (with its query so far, ending in `?` or
/// `&`), page by page of `limit`, checking that each full page ends at its
/// `next_after`; and the page count.
async fn every_page(stack: &Stack, path: &str, limit: u32) -> anyhow::Result<(Vec<Value>, usize)> {
    let mut entries = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = stack
            .read(&format!("{path}limit={limit}&after={after}"))
            .await?;
        pages += 1;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        match page["next_after"].as_i64() {
            Some(next) => {
                anyhow::ensure!(
                    events.len() == limit as usize
                        && events.last().map(|e| &e["position"]) == Some(&json!(next)),
                    "{path}: a full page must end at next_after {next}: {page}"
                );
                after = next;
                entries.extend(events);
            }
            None => {
                entries.extend(events);
                return Ok((entries, pages));
            }
        }
    }
}

/// A time as a query parameter.
fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339().replace('+', "%2B").replace(':', "%3A")
}

// ---------------------------------------------------------------------------------
// Timeline
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_timeline_pages_through_every_logged_event_exactly_as_logged() -> anyhow::Result<()> {
    // Arrange
    let story = story().await?;

    // Act
    let (entries, pages) = timeline(&story.stack, "", 7).await?;

    // Assert: every event once, in position order, each field as logged, the execution's
    // events marked as undone by the rollback.
    assert_eq!(entries, story.expected(&|_| true));
    assert_eq!(pages, story.log.len().div_ceil(7));
    assert!(entries
        .iter()
        .any(|e| e["rolled_back"] == true && e["rolled_back_by"] == json!(story.rollback)));
    Ok(())
}

#[tokio::test]
async fn each_timeline_filter_alone_selects_exactly_the_logged_events_it_names(
) -> anyhow::Result<()> {
    // Arrange
    let story = story().await?;
    let (motor, vfd, execution) = (story.motor, story.vfd, story.execution);
    let execution_started = story.first(execution, EventType::BatchStarted).occurred_at;
    let reimport_started = story
        .first(story.reimport, EventType::BatchStarted)
        .occurred_at;
    type Keep = Box<dyn Fn(&EventEnvelope) -> bool>;
    let cases: Vec<(String, Keep)> = vec![
        (
            format!("asset_id={motor}"),
            Box::new(move |e| concerned_asset(e) == Some(motor)),
        ),
        (
            format!("aggregate_id={motor}"),
            Box::new(move |e| e.aggregate_id == motor),
        ),
        (
            format!("rule_id={vfd}"),
            Box::new(move |e| e.rule_id == Some(vfd)),
        ),
        (
            "discipline=MECHANICAL".to_owned(),
            Box::new(|e| e.discipline.as_deref() == Some("MECHANICAL")),
        ),
        (
            "discipline=INSTRUMENTATION".to_owned(),
            Box::new(|e| e.discipline.as_deref() == Some("INSTRUMENTATION")),
        ),
        (
            format!("correlation_id={execution}"),
            Box::new(move |e| e.correlation_id == execution),
        ),
        (
            "event_type=ASSET_UPDATED".to_owned(),
            Box::new(|e| e.event_type == EventType::AssetUpdated),
        ),
        (
            "event_type=ASSET_CREATED,CABLE_CREATED,ROLLBACK".to_owned(),
            Box::new(|e| {
                matches!(
                    e.event_type,
                    EventType::AssetCreated | EventType::CableCreated | EventType::Rollback
                )
            }),
        ),
        (
            format!("actor={ENGINEER}"),
            Box::new(|e| e.actor == ENGINEER),
        ),
        (
            format!("actor={TEST_ADMIN}"),
            Box::new(|e| e.actor == TEST_ADMIN),
        ),
        (
            format!("from={}", time(execution_started)),
            Box::new(move |e| e.occurred_at >= execution_started),
        ),
        (
            format!("to={}", time(reimport_started)),
            Box::new(move |e| e.occurred_at <= reimport_started),
        ),
        (
            format!(
                "from={}&to={}",
                time(execution_started),
                time(reimport_started)
            ),
            Box::new(move |e| {
                e.occurred_at >= execution_started && e.occurred_at <= reimport_started
            }),
        ),
        (
            "include_rolled_back=false".to_owned(),
            Box::new(move |e| e.correlation_id != execution),
        ),
        ("include_rolled_back=true".to_owned(), Box::new(|_| true)),
    ];

    for (query, keep) in cases {
        // Act
        let (entries, _) = timeline(&story.stack, &query, 1000).await?;

        // Assert: exactly the logged events the filter names, each as logged; and the
        // filter is a real one (it keeps something, and not everything, unless asked).
        let expected = story.expected(&keep);
        assert_eq!(entries, expected, "{query}");
        assert!(!expected.is_empty(), "{query} selects nothing");
        if query != "include_rolled_back=true" {
            assert!(
                expected.len() < story.log.len(),
                "{query} selects everything"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn timeline_filters_combine_and_a_combined_query_pages_without_gap_or_duplicate(
) -> anyhow::Result<()> {
    // Arrange
    let story = story().await?;
    let (motor, vfd, execution) = (story.motor, story.vfd, story.execution);
    let from = story.first(execution, EventType::BatchStarted).occurred_at;
    let to = story
        .first(execution, EventType::BatchCompleted)
        .occurred_at;
    type Keep = Box<dyn Fn(&EventEnvelope) -> bool>;
    let cases: Vec<(String, Keep, bool)> = vec![
        (
            format!("correlation_id={execution}&discipline=ELECTRICAL&rule_id={vfd}"),
            Box::new(move |e| {
                e.correlation_id == execution
                    && e.discipline.as_deref() == Some("ELECTRICAL")
                    && e.rule_id == Some(vfd)
            }),
            false,
        ),
        (
            format!("actor={ENGINEER}&event_type=ASSET_UPDATED,ASSET_CREATED"),
            Box::new(|e| {
                e.actor == ENGINEER
                    && matches!(
                        e.event_type,
                        EventType::AssetUpdated | EventType::AssetCreated
                    )
            }),
            false,
        ),
        (
            format!("discipline=ELECTRICAL&actor={TEST_ADMIN}"),
            Box::new(|e| e.discipline.as_deref() == Some("ELECTRICAL") && e.actor == TEST_ADMIN),
            false,
        ),
        (
            format!("asset_id={motor}&include_rolled_back=false"),
            Box::new(move |e| concerned_asset(e) == Some(motor) && e.correlation_id != execution),
            false,
        ),
        (
            format!(
                "correlation_id={execution}&event_type=RULE_EXECUTED&from={}&to={}",
                time(from),
                time(to)
            ),
            Box::new(move |e| {
                e.correlation_id == execution
                    && e.event_type == EventType::RuleExecuted
                    && e.occurred_at >= from
                    && e.occurred_at <= to
            }),
            false,
        ),
        (
            format!(
                "asset_id={motor}&aggregate_id={motor}&rule_id={vfd}&discipline=ELECTRICAL\
                 &correlation_id={execution}&event_type=ASSET_UPDATED,RULE_EXECUTED\
                 &actor={ENGINEER}&from={}&to={}&include_rolled_back=true",
                time(from),
                time(to)
            ),
            Box::new(move |e| {
                concerned_asset(e) == Some(motor)
                    && e.aggregate_id == motor
                    && e.rule_id == Some(vfd)
                    && e.discipline.as_deref() == Some("ELECTRICAL")
                    && e.correlation_id == execution
                    && matches!(
                        e.event_type,
                        EventType::AssetUpdated | EventType::RuleExecuted
                    )
                    && e.actor == ENGINEER
                    && e.occurred_at >= from
                    && e.occurred_at <= to
            }),
            false,
        ),
        // Every event of the motor in the execution was undone: nothing is left.
        (
            format!("asset_id={motor}&correlation_id={execution}&include_rolled_back=false"),
            Box::new(|_| false),
            true,
        ),
    ];

    for (query, keep, empty) in cases {
        // Act
        let (entries, _) = timeline(&story.stack, &query, 1000).await?;

        // Assert
        let expected = story.expected(&keep);
        assert_eq!(entries, expected, "{query}");
        assert_eq!(expected.is_empty(), empty, "{query}: {}", expected.len());
    }

    // Act: a combined filter, two events a page.
    let query = "discipline=ELECTRICAL&include_rolled_back=false";
    let (paged, pages) = timeline(&story.stack, query, 2).await?;

    // Assert: the same events as in one page, no gap, no duplicate.
    let expected = story.expected(&|e| {
        e.discipline.as_deref() == Some("ELECTRICAL") && e.correlation_id != execution
    });
    assert!(expected.len() > 4, "several pages: {}", expected.len());
    assert_eq!(positions(&json!(paged)), positions(&json!(expected)));
    assert_eq!(paged, expected);
    assert_eq!(pages, expected.len().div_ceil(2));
    Ok(())
}

#[tokio::test]
async fn bad_query_input_and_unknown_filters_are_refused_with_a_400_problem() -> anyhow::Result<()>
{
    // Arrange: the refusals concern the request alone.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let query = apps::query_service(&database, &nats.args).await?;
    let http = http_client_as(Role::Viewer, VIEWER);
    let asset = Uuid::now_v7();

    // Act + Assert: every one is a problem, none a 500 or plain text.
    for path in [
        "/events/timeline?asset=1".to_owned(),
        "/events/timeline?tag=P-101".to_owned(),
        "/events/timeline?sort=desc".to_owned(),
        "/events/timeline?correlation_id=not-a-uuid".to_owned(),
        "/events/timeline?asset_id=42".to_owned(),
        "/events/timeline?rule_id=x".to_owned(),
        "/events/timeline?limit=1001".to_owned(),
        "/events/timeline?limit=0".to_owned(),
        "/events/timeline?after=-1".to_owned(),
        "/events/timeline?event_type=ASSET_EXPLODED".to_owned(),
        "/events/timeline?event_type=ASSET_CREATED,NOPE".to_owned(),
        "/events/timeline?from=yesterday".to_owned(),
        "/events/timeline?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z".to_owned(),
        "/events/timeline?include_rolled_back=maybe".to_owned(),
        // A blank actor asks for nobody (before: 200 and an empty page).
        "/events/timeline?actor=".to_owned(),
        "/batches?actor=%20".to_owned(),
        "/events/assets/not-a-uuid/history".to_owned(),
        format!("/events/assets/{asset}/history?limit=5000"),
        format!("/events/assets/{asset}/history?sort=desc"),
        "/assets/42".to_owned(),
        format!("/assets/{asset}?as_of=last-tuesday"),
        format!("/assets/{asset}?at=2026-01-01T00:00:00Z"),
    ] {
        let reply =
            synapse_tests::client::send(&http, reqwest::Method::GET, &query.url(&path), None)
                .await?;
        assert_eq!(reply.status, 400, "GET {path}: {reply:?}");
        assert!(reply.is_problem(), "GET {path}: {reply:?}");
        assert_eq!(reply.body["status"], 400, "GET {path}: {reply:?}");
    }
    query.stop().await
}

/// A GET on `query` as the viewer.
async fn get_as_viewer(query: &apps::Running, path: &str) -> anyhow::Result<Reply> {
    let http = http_client_as(Role::Viewer, VIEWER);
    send(&http, reqwest::Method::GET, &query.url(path), None).await
}

#[tokio::test]
async fn times_before_what_postgres_holds_are_refused_like_years_too_large_to_parse(
) -> anyhow::Result<()> {
    // Arrange: every time parameter of every route, at a given time.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let query = apps::query_service(&database, &nats.args).await?;
    let asset = Uuid::now_v7();
    let every_time_parameter = |time: &str| {
        [
            ("from", format!("/events/timeline?from={time}")),
            ("to", format!("/events/timeline?to={time}")),
            (
                "from",
                format!("/events/timeline?from={time}&asset_id={asset}"),
            ),
            ("to", format!("/events/timeline?to={time}&asset_id={asset}")),
            ("as_of", format!("/assets/{asset}?as_of={time}")),
        ]
    };
    // The earliest instant Postgres holds is 4714-11-24 BC, year -4713 in RFC 3339's
    // astronomical numbering; `%2B` is a `+` that the query string does not turn into
    // a space.
    let earliest = "-4713-11-24T00:00:00Z";
    let too_early = [
        "-4713-11-23T23:59:59.999999Z",
        "-4713-11-24T00:00:00%2B00:01",
        "-4714-01-01T00:00:00Z",
        "-262143-01-01T00:00:00Z",
    ];

    // Act + Assert: each is the very problem a year too large to parse gets.
    for ((parameter, too_large), index) in every_time_parameter("200000-01-01T00:00:00Z")
        .into_iter()
        .zip(0..)
    {
        let reference = get_as_viewer(&query, &too_large).await?;
        assert_eq!(reference.status, 400, "GET {too_large}: {reference:?}");
        for time in too_early {
            let (_, path) = &every_time_parameter(time)[index];
            let reply = get_as_viewer(&query, path).await?;
            assert_eq!(reply.status, 400, "GET {path}: {reply:?}");
            assert!(reply.is_problem(), "GET {path}: {reply:?}");
            assert_eq!(reply.body["type"], reference.body["type"], "GET {path}");
            assert_eq!(reply.body["title"], reference.body["title"], "GET {path}");
            assert!(
                reply.body["detail"]
                    .as_str()
                    .is_some_and(|detail| detail.contains(parameter)),
                "GET {path}: {reply:?}"
            );
        }
    }
    for (parameter, path) in every_time_parameter(earliest) {
        let reply = get_as_viewer(&query, &path).await?;
        let expected = if parameter == "as_of" { 404 } else { 200 };
        assert_eq!(reply.status, expected, "GET {path}: {reply:?}");
    }
    query.stop().await
}

/// `GET path` is a 400 `invalid-query` problem whose detail says `why`.
async fn refused_query(query: &apps::Running, path: &str, why: &str) -> anyhow::Result<()> {
    let reply = get_as_viewer(query, path).await?;
    assert_eq!(reply.status, 400, "GET {path}: {reply:?}");
    assert!(reply.is_problem(), "GET {path}: {reply:?}");
    assert_eq!(reply.body["type"], "/problems/invalid-query", "GET {path}");
    assert!(
        reply.body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains(why)),
        "GET {path}: {reply:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_discipline_filter_that_is_not_a_code_is_a_400_problem() -> anyhow::Result<()> {
    // Arrange: no event can have such a discipline, so the answer was an empty page.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let query = apps::query_service(&database, &nats.args).await?;

    // Act + Assert
    for route in ["/events/timeline", "/findings"] {
        for discipline in [
            "E%2FI",
            "%20ELECTRICAL",
            "ELECTRICAL%20",
            "x".repeat(65).as_str(),
        ] {
            let path = format!("{route}?discipline={discipline}");
            refused_query(&query, &path, "discipline code").await?;
        }
        let lower_case = get_as_viewer(&query, &format!("{route}?discipline=electrical")).await?;
        assert_eq!(lower_case.status, 200, "{lower_case:?}");
    }
    query.stop().await
}

#[tokio::test]
async fn every_route_refuses_a_parameter_it_does_not_know_with_a_400_problem() -> anyhow::Result<()>
{
    // Arrange
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let query = apps::query_service(&database, &nats.args).await?;
    let id = Uuid::now_v7();

    // Act + Assert
    for route in [
        "/events/timeline".to_owned(),
        format!("/events/assets/{id}/history"),
        format!("/assets/{id}"),
        "/assets/export.csv".to_owned(),
        "/batches".to_owned(),
        format!("/batches/{id}"),
        "/disciplines".to_owned(),
        "/disciplines/ELECTRICAL".to_owned(),
        "/findings".to_owned(),
    ] {
        refused_query(&query, &format!("{route}?x=1"), "`x`").await?;
    }
    query.stop().await
}

#[tokio::test]
async fn time_windows_over_thousands_of_events_find_a_late_committed_event_and_skip_nothing(
) -> anyhow::Result<()> {
    // Arrange: 1,500 motors and pumps (three summary buckets of events with the run
    // below).
    let stack = Stack::start().await?;
    let assets: Vec<Value> = (0..1_500)
        .map(|index| {
            if index % 2 == 0 {
                json!({"tag": format!("M-{index:04}"), "asset_type": "ELECTRIC_MOTOR",
                       "discipline": "ELECTRICAL", "area": "U100", "properties": {"rated_power_kw": 11}})
            } else {
                json!({"tag": format!("P-{index:04}"), "asset_type": "CENTRIFUGAL_PUMP",
                       "discipline": "MECHANICAL", "area": "U100", "properties": {}})
            }
        })
        .collect();
    stack.import(&as_csv(&assets)).await?;
    let pumps = stack.define_rule(&pump_flag_rule()).await?;
    // A single change that starts now but cannot commit before the run below has: the
    // test holds back every write of a pre-batch snapshot, which the single change (an
    // edit of an existing motor) makes after building its BATCH_STARTED and a flagging
    // run never makes.
    let (motor,): (uuid::Uuid,) = sqlx::query_as("select id from assets where tag = 'M-0000'")
        .fetch_one(stack.pool())
        .await?;
    let mut hold = stack.pool().begin().await?;
    sqlx::query("lock table execution_snapshots in share mode")
        .execute(&mut *hold)
        .await?;
    let late = {
        let client = stack.engineer.clone();
        let url = stack.system.command.url(&format!("/assets/{motor}"));
        tokio::spawn(async move {
            let edit = json!({"properties": {"rated_power_kw": 15}});
            synapse_tests::client::send(&client, reqwest::Method::PATCH, &url, Some(&edit)).await
        })
    };
    wait_for_snapshot_writer(&stack).await?;
    // Bounded: were the run ever to write a snapshot, it would wait for the hold too.
    // Over the pumps only: the run locks the assets it reads, and the motor's lock is
    // the single change's until it commits.
    let run = tokio::time::timeout(
        Duration::from_secs(30),
        stack.execute(
            json!({"rule_ids": [pumps], "filters": {"asset_types": ["CENTRIFUGAL_PUMP"]}}),
        ),
    )
    .await??;
    let run = id_field(&run, "correlation_id")?;
    hold.rollback().await?;
    late.await??.expect_status(200);
    stack.settle().await?;
    let log = stack.log().await?;
    let late = log
        .iter()
        .rev()
        .find(|e| e.event_type == EventType::BatchStarted)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no batch"))?;
    let run_started = log
        .iter()
        .find(|e| e.correlation_id == run && e.event_type == EventType::BatchStarted)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no run"))?;
    // The premise: the late BATCH_STARTED occurred before the whole run, in a later
    // bucket than most of it, and is positioned after it.
    assert!(late.occurred_at < run_started.occurred_at);
    assert!(late.position > run_started.position + 1_024);
    assert!(log.len() > 2 * 1_024, "{} events", log.len());
    let at = |position: i64| {
        log.iter()
            .find(|e| e.position == position)
            .map(|e| e.occurred_at)
            .unwrap_or_default()
    };
    let window = |from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| {
        let expected: Vec<i64> = log
            .iter()
            .filter(|e| from.is_none_or(|from| e.occurred_at >= from))
            .filter(|e| to.is_none_or(|to| e.occurred_at <= to))
            .map(|e| e.position)
            .collect();
        let mut query = Vec::new();
        if let Some(from) = from {
            query.push(format!("from={}", time(from)));
        }
        if let Some(to) = to {
            query.push(format!("to={}", time(to)));
        }
        (query.join("&"), expected)
    };
    let cases = [
        window(Some(late.occurred_at), Some(late.occurred_at)),
        window(Some(at(1_000)), Some(late.occurred_at)),
        window(Some(at(1_400)), Some(run_started.occurred_at)),
        window(Some(run_started.occurred_at), None),
        window(None, Some(at(700))),
        window(None, Some(late.occurred_at)),
    ];

    for (query, expected) in cases {
        // Act
        let (entries, _) = timeline(&stack, &query, 500).await?;

        // Assert
        assert_eq!(positions(&json!(entries)), expected, "{query}");
    }
    let (around_late, _) = timeline(
        &stack,
        &window(Some(late.occurred_at), Some(late.occurred_at)).0,
        500,
    )
    .await?;
    assert!(positions(&json!(around_late)).contains(&late.position));
    let since = at(1_200);
    let (mechanical, _) = timeline(
        &stack,
        &format!(
            "discipline=MECHANICAL&event_type=ASSET_CREATED&from={}",
            time(since)
        ),
        500,
    )
    .await?;
    let expected: Vec<i64> = log
        .iter()
        .filter(|e| e.discipline.as_deref() == Some("MECHANICAL"))
        .filter(|e| e.event_type == EventType::AssetCreated && e.occurred_at >= since)
        .map(|e| e.position)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(positions(&json!(mechanical)), expected);

    // Act: events projected after the time summary was last brought up to date.
    stack
        .create_asset(&json!({"tag": "FT-9001", "asset_type": "FLOW_TRANSMITTER",
                              "discipline": "INSTRUMENTATION", "properties": {}}))
        .await?;
    stack.settle().await?;
    let newest = stack.log().await?;
    let newest_at = newest.last().map(|e| e.occurred_at).unwrap_or_default();
    let (recent, _) = timeline(&stack, &format!("from={}", time(newest_at)), 500).await?;

    // Assert: read anyway.
    let expected: Vec<i64> = newest
        .iter()
        .filter(|e| e.occurred_at >= newest_at)
        .map(|e| e.position)
        .collect();
    assert_eq!(positions(&json!(recent)), expected);
    assert!(expected.contains(&newest.last().map(|e| e.position).unwrap_or(0)));
    Ok(())
}

/// Wait until a command-service connection waits for the lock on pre-batch snapshots.
async fn wait_for_snapshot_writer(stack: &Stack) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "select count(*) from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock'
               and query ilike '%insert into execution_snapshots%'",
        )
        .fetch_one(stack.pool())
        .await?;
        if waiting > 0 {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the single change never reached its snapshot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------
// Asset history and state
// ---------------------------------------------------------------------------------

/// The assets a cable or relationship change names at either end, before or after it:
/// the assets whose histories list it. None for any other event.
fn link_ends(event: &EventEnvelope) -> BTreeSet<Uuid> {
    if !matches!(
        event.aggregate_type,
        AggregateType::Cable | AggregateType::Relationship
    ) {
        return BTreeSet::new();
    }
    ["before", "after"]
        .iter()
        .flat_map(|side| ["from_asset", "to_asset"].map(|end| &event.payload[side][end]))
        .filter_map(|end| end.as_str()?.parse().ok())
        .collect()
}

/// Whether the history of `asset` lists `event`: about the asset or naming it, and with
/// `links` also a change of a cable or relationship the asset is an end of.
fn in_history(event: &EventEnvelope, asset: Uuid, links: bool) -> bool {
    event.aggregate_id == asset
        || concerned_asset(event) == Some(asset)
        || (links && link_ends(event).contains(&asset))
}

impl Story {
    /// The history entries of `asset` the log gives (its timeline entries with both
    /// sides of each change), with or without its links' changes.
    fn history(&self, asset: Uuid, links: bool) -> Vec<Value> {
        self.log
            .iter()
            .filter(|event| in_history(event, asset, links))
            .map(|event| {
                let mut entry = timeline_entry(event, self.rolled_back_by(event));
                entry["before"] = json!(side(event, "before"));
                entry["after"] = json!(side(event, "after"));
                entry
            })
            .collect()
    }
}

/// Every entry of an asset's history with `query` (ending in `&` if not empty), page by
/// page of `limit`, checking that each full page ends at its `next_after`.
async fn history(
    stack: &Stack,
    asset: Uuid,
    query: &str,
    limit: u32,
) -> anyhow::Result<Vec<Value>> {
    let path = format!("/events/assets/{asset}/history?{query}");
    Ok(every_page(stack, &path, limit).await?.0)
}

#[tokio::test]
async fn an_asset_history_lists_every_change_with_diff_rule_batch_actor_and_rollback(
) -> anyhow::Result<()> {
    // Arrange
    let story = story().await?;
    let motor = story.motor;

    // Act: two events a page.
    let history = history(&story.stack, motor, "", 2).await?;
    let stranger = story
        .stack
        .get(&format!("/events/assets/{}/history", Uuid::now_v7()))
        .await?;
    // Ids that events have, but no asset: a batch's, a rule's.
    let mut not_assets = Vec::new();
    for id in [story.import.to_string(), story.vfd.to_string()] {
        not_assets.push(
            story
                .stack
                .get(&format!("/events/assets/{id}/history"))
                .await?,
        );
    }

    // Assert: every event about the motor, naming it or changing one of its links, as
    // logged, with both sides.
    assert_eq!(history, story.history(motor, true));
    // What the story did to the motor, in order: imported by the engineer; the VFD
    // rule's outcome and update in the execution (undone by the admin's rollback); the
    // rollback restoring it.
    let changes: Vec<(&str, &str, &Value, bool)> = history
        .iter()
        .filter(|e| e["aggregate_id"] == json!(motor))
        .map(|e| {
            (
                e["event_type"].as_str().unwrap_or(""),
                e["actor"].as_str().unwrap_or(""),
                &e["correlation_id"],
                e["rolled_back"] == true,
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("ASSET_CREATED", ENGINEER, &json!(story.import), false),
            ("ASSET_UPDATED", ENGINEER, &json!(story.execution), true),
            ("ROLLBACK", TEST_ADMIN, &json!(story.rollback), false),
        ]
    );
    let update = history
        .iter()
        .find(|e| e["event_type"] == "ASSET_UPDATED")
        .cloned()
        .unwrap_or_default();
    assert_eq!(update["rule_id"], json!(story.vfd));
    assert_eq!(update["rolled_back_by"], json!(story.rollback));
    assert_eq!(update["before"]["properties"].get("needs_vfd"), None);
    assert_eq!(update["after"]["properties"]["needs_vfd"], true);
    assert!(
        update["diff"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|op| op["op"] == "add" && op["path"] == "/properties/needs_vfd"),
        "{update}"
    );
    assert!(history
        .iter()
        .any(|e| e["event_type"] == "RULE_EXECUTED" && e["aggregate_type"] == "batch"));
    for refused in not_assets.iter().chain([&stranger]) {
        assert_eq!(refused.status, 404, "{refused:?}");
        assert!(refused.is_problem());
        assert_eq!(refused.body["type"], "/problems/asset-not-found");
    }
    Ok(())
}

#[tokio::test]
async fn an_asset_history_merges_the_changes_of_its_cables_and_relationships_with_rule_batch_and_rollback(
) -> anyhow::Result<()> {
    // Arrange: the VFD rule gave M-102 a power cable from MCC-U100-01 and a FEEDS
    // relationship from its new VFD; the rollback undid all three.
    let story = story().await?;
    let stack = &story.stack;
    let motor = story.motor;
    let mcc = created_asset(&story.log, "MCC-U100-01")?;
    let drive = created_asset(&story.log, "VFD-M-102")?;

    // Act: one event a page, across the merged list; the asset's own events alone; the
    // MCC's history.
    let merged = history(stack, motor, "", 1).await?;
    let all_at_once = history(stack, motor, "", 1000).await?;
    let own = history(stack, motor, "links=false&", 3).await?;
    let feeder = history(stack, mcc, "", 4).await?;

    // Assert: each history is what the log gives, one page at a time or all at once,
    // in ascending positions without a repeat; `links=false` is the asset's own events.
    assert_eq!(merged, story.history(motor, true));
    assert_eq!(all_at_once, merged);
    let positions = positions(&json!(merged));
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{positions:?}"
    );
    assert_eq!(own, story.history(motor, false));
    assert!(own
        .iter()
        .all(|e| e["aggregate_type"] != "cable" && e["aggregate_type"] != "relationship"));
    assert_eq!(feeder, story.history(mcc, true));
    // Each change of the motor and its links: which aggregate, by which rule and batch,
    // and whether (and by which batch) it was rolled back.
    let changes = |entries: &[Value]| -> BTreeSet<(String, String, String, String, String)> {
        entries
            .iter()
            .filter(|e| e["diff"].is_array())
            .map(|e| {
                (
                    e["event_type"].as_str().unwrap_or_default().to_owned(),
                    e["aggregate_type"].as_str().unwrap_or_default().to_owned(),
                    e["rule_id"].to_string(),
                    e["correlation_id"].to_string(),
                    e["rolled_back_by"].to_string(),
                )
            })
            .collect()
    };
    let change = |event_type: &str, aggregate_type: &str, rule: Value, batch: Uuid| {
        let rolled_back_by = (batch == story.execution).then_some(story.rollback);
        (
            event_type.to_owned(),
            aggregate_type.to_owned(),
            rule.to_string(),
            json!(batch).to_string(),
            json!(rolled_back_by).to_string(),
        )
    };
    let vfd = json!(story.vfd);
    assert_eq!(
        changes(&merged),
        BTreeSet::from([
            change("ASSET_CREATED", "asset", Value::Null, story.import),
            change("ASSET_UPDATED", "asset", vfd.clone(), story.execution),
            change("CABLE_CREATED", "cable", vfd.clone(), story.execution),
            change(
                "RELATIONSHIP_CREATED",
                "relationship",
                vfd.clone(),
                story.execution
            ),
            change("ROLLBACK", "asset", Value::Null, story.rollback),
            change("ROLLBACK", "cable", Value::Null, story.rollback),
            change("ROLLBACK", "relationship", Value::Null, story.rollback),
        ])
    );
    let entry = |entries: &[Value], event_type: &str, aggregate_type: &str| {
        entries
            .iter()
            .find(|e| e["event_type"] == event_type && e["aggregate_type"] == aggregate_type)
            .cloned()
            .unwrap_or_default()
    };
    let cable = entry(&merged, "CABLE_CREATED", "cable");
    assert_eq!(
        (&cable["after"]["from_asset"], &cable["after"]["to_asset"]),
        (&json!(mcc), &json!(motor))
    );
    assert_eq!(cable["after"]["tag"], "W-M-102-PWR");
    assert_eq!(cable["rolled_back"], true);
    let feeds = entry(&merged, "RELATIONSHIP_CREATED", "relationship");
    assert_eq!(feeds["after"]["kind"], "FEEDS");
    assert_eq!(
        (&feeds["after"]["from_asset"], &feeds["after"]["to_asset"]),
        (&json!(drive), &json!(motor))
    );
    // The rollback deleted what the run created: each link's ROLLBACK goes from the
    // link to nothing, and names the link.
    for created in [&cable, &feeds] {
        let undone = merged
            .iter()
            .find(|e| e["event_type"] == "ROLLBACK" && e["aggregate_id"] == created["aggregate_id"])
            .cloned()
            .unwrap_or_default();
        assert_eq!(undone["before"], created["after"], "{undone}");
        assert_eq!(undone["after"], Value::Null, "{undone}");
        assert_eq!(undone["rolled_back"], false);
    }
    // The MCC sees the motor's cable and its rollback, not the motor's relationship.
    let in_feeder = |id: &Value| feeder.iter().filter(|e| &e["aggregate_id"] == id).count();
    assert_eq!(in_feeder(&cable["aggregate_id"]), 2);
    assert_eq!(in_feeder(&feeds["aggregate_id"]), 0);
    Ok(())
}

#[tokio::test]
async fn a_cable_moved_to_another_asset_is_in_the_history_of_its_old_and_new_ends_and_a_rebuild_agrees(
) -> anyhow::Result<()> {
    // Arrange: a cable from one junction box to a transmitter, then moved to another box.
    let stack = Stack::start().await?;
    let asset = |tag: &str, asset_type: &str| json!({"tag": tag, "asset_type": asset_type, "discipline": "INSTRUMENTATION"});
    let old_box = stack.create_asset(&asset("JB-01", "JUNCTION_BOX")).await?;
    let new_box = stack.create_asset(&asset("JB-02", "JUNCTION_BOX")).await?;
    let transmitter = stack
        .create_asset(&asset("FT-01", "FLOW_TRANSMITTER"))
        .await?;
    let created = stack
        .command(
            &stack.engineer,
            Method::POST,
            "/cables",
            Some(
                &json!({"tag": "W-FT-01", "cable_type": "SIGNAL", "discipline": "INSTRUMENTATION",
                         "from_asset": old_box, "to_asset": transmitter}),
            ),
            201,
        )
        .await?;
    let cable = id_field(&created["cable"], "id")?;

    // Act
    stack
        .command(
            &stack.engineer,
            Method::PATCH,
            &format!("/cables/{cable}"),
            Some(&json!({"from_asset": new_box})),
            200,
        )
        .await?;
    stack.settle().await?;
    let cable_events = |entries: Vec<Value>| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["aggregate_id"] == json!(cable))
            .map(|e| e["event_type"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let at_old_box = cable_events(history(&stack, old_box, "", 100).await?);
    let at_new_box = cable_events(history(&stack, new_box, "", 100).await?);
    let at_transmitter = cable_events(history(&stack, transmitter, "", 100).await?);
    let new_box_own = history(&stack, new_box, "links=false&", 100).await?;

    // Assert: the move is in the history of both boxes; the creation only in the
    // old box's and the transmitter's.
    assert_eq!(at_old_box, ["CABLE_CREATED", "CABLE_UPDATED"]);
    assert_eq!(at_new_box, ["CABLE_UPDATED"]);
    assert_eq!(at_transmitter, ["CABLE_CREATED", "CABLE_UPDATED"]);
    let own_types: Vec<&Value> = new_box_own.iter().map(|e| &e["event_type"]).collect();
    assert!(
        !own_types.contains(&&json!("CABLE_UPDATED")),
        "{own_types:?}"
    );
    // A rebuild of the asset history from the log gives the same rows, links included.
    let pool = sqlx::PgPool::connect(&stack.system.database.url).await?;
    let live = synapse_tests::read_models::snapshot(&pool).await?;
    let url = &stack.system.database.url;
    projection_service::rebuild::rebuild(url, url, "asset_history").await?;
    let rebuilt = synapse_tests::read_models::snapshot(&pool).await?;
    assert_eq!(
        synapse_tests::read_models::differences(&live, &rebuilt),
        BTreeMap::new()
    );
    // So does the migration that fills the table from the events projected before it.
    let migration = include_str!("../../migrations/read/2009_rm_asset_links.sql");
    let backfill = migration
        .find("insert into rm_asset_links")
        .map(|start| &migration[start..])
        .unwrap_or_default();
    sqlx::query("delete from rm_asset_links")
        .execute(&pool)
        .await?;
    sqlx::raw_sql(backfill).execute(&pool).await?;
    let backfilled = synapse_tests::read_models::snapshot(&pool).await?;
    assert_eq!(backfilled["rm_asset_links"], live["rm_asset_links"]);
    assert!(!live["rm_asset_links"].is_empty());
    Ok(())
}

#[tokio::test]
async fn an_asset_is_shown_current_or_as_of_a_time_and_a_deleted_or_unknown_one_is_not(
) -> anyhow::Result<()> {
    // Arrange
    let story = story().await?;
    let stack = &story.stack;
    let change_of = |aggregate: Uuid, correlation: Uuid| {
        story
            .log
            .iter()
            .find(|e| e.aggregate_id == aggregate && e.correlation_id == correlation)
            .cloned()
            .unwrap_or_else(|| panic!("no change of {aggregate} in {correlation}"))
    };
    let between = |earlier: &EventEnvelope, later: &EventEnvelope| {
        earlier.occurred_at + (later.occurred_at - earlier.occurred_at) / 2
    };
    let (motor, transmitter) = (story.motor, story.transmitter);
    let motor_created = change_of(motor, story.import);
    let motor_updated = change_of(motor, story.execution);
    let motor_restored = change_of(motor, story.rollback);
    let ft_created = change_of(transmitter, story.import);
    let ft_updated = change_of(transmitter, story.reimport);
    let ft_deleted = change_of(transmitter, story.last_batch());
    let (state, version): (Value, i64) =
        sqlx::query_as("select to_jsonb(a) - 'id', version from assets a where id = $1")
            .bind(motor)
            .fetch_one(story.stack.pool())
            .await?;
    let cable = story
        .log
        .iter()
        .find(|e| e.event_type == EventType::CableCreated)
        .map(|e| e.aggregate_id)
        .unwrap_or_default();

    // Act
    let current = stack.read(&format!("/assets/{motor}")).await?;
    let as_of = |at: DateTime<Utc>, id: Uuid| format!("/assets/{id}?as_of={}", time(at));
    let while_run = stack
        .read(&as_of(between(&motor_updated, &motor_restored), motor))
        .await?;
    let before_run = stack
        .read(&as_of(between(&motor_created, &motor_updated), motor))
        .await?;
    let ft_first = stack
        .read(&as_of(between(&ft_created, &ft_updated), transmitter))
        .await?;
    let ft_second = stack
        .read(&as_of(between(&ft_updated, &ft_deleted), transmitter))
        .await?;
    let ft_gone = stack.get(&format!("/assets/{transmitter}")).await?;
    let ft_gone_then = stack
        .get(&as_of(ft_deleted.occurred_at, transmitter))
        .await?;
    let ft_not_yet = stack
        .get(&as_of(
            ft_created.occurred_at - chrono::Duration::milliseconds(1),
            transmitter,
        ))
        .await?;
    let unknown = stack.get(&format!("/assets/{}", Uuid::now_v7())).await?;
    let not_an_asset = stack.get(&format!("/assets/{cable}")).await?;

    // Assert: the current state is the command side's, after the rollback.
    assert_eq!(current["id"], json!(motor));
    assert_eq!(current["version"], version);
    assert_eq!(current["last_position"], motor_restored.position);
    assert_eq!(current["as_of"], Value::Null);
    for field in ["tag", "asset_type", "discipline", "area", "properties"] {
        assert_eq!(current["state"][field], state[field], "{field}");
    }
    assert_eq!(
        Some(&current["state"]),
        side(&motor_restored, "after").as_ref()
    );
    // As of a time: the state after the last change by then.
    for (view, change) in [
        (&while_run, &motor_updated),
        (&before_run, &motor_created),
        (&ft_first, &ft_created),
        (&ft_second, &ft_updated),
    ] {
        assert_eq!(Some(&view["state"]), side(change, "after").as_ref());
        assert_eq!(view["last_position"], change.position);
        assert_eq!(view["version"], change.aggregate_version);
    }
    assert_eq!(while_run["state"]["properties"]["needs_vfd"], true);
    assert_eq!(before_run["state"]["properties"].get("needs_vfd"), None);
    assert_eq!(ft_first["state"]["properties"].get("range_m3h"), None);
    assert_eq!(ft_second["state"]["properties"]["range_m3h"], 80);
    // Deleted (now, and as of its deletion), not yet created, unknown, not an asset.
    for (reply, status, problem) in [
        (&ft_gone, 410, "/problems/asset-deleted"),
        (&ft_gone_then, 410, "/problems/asset-deleted"),
        (&ft_not_yet, 404, "/problems/asset-not-found"),
        (&unknown, 404, "/problems/asset-not-found"),
        (&not_an_asset, 404, "/problems/asset-not-found"),
    ] {
        assert_eq!(reply.status, status, "{reply:?}");
        assert!(reply.is_problem(), "{reply:?}");
        assert_eq!(reply.body["type"], problem, "{reply:?}");
    }

    // By tag (a helper, area A: an engineer found no way to an asset's id but psql):
    // the current asset, nothing for a deleted one's tag or an unknown one.
    let motor_tag = state["tag"].as_str().unwrap_or_default();
    let by_tag = stack
        .read(&format!("/assets?tag={}", urlencoding(motor_tag)))
        .await?;
    assert_eq!(
        by_tag["assets"].as_array().map(Vec::len),
        Some(1),
        "{by_tag}"
    );
    assert_eq!(by_tag["assets"][0]["id"], json!(motor));
    assert_eq!(by_tag["assets"][0]["state"], current["state"]);
    assert_eq!(by_tag["assets"][0]["version"], version);
    let ft_tag = side(&ft_updated, "after")
        .and_then(|after| after["tag"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let gone = stack
        .read(&format!("/assets?tag={}", urlencoding(&ft_tag)))
        .await?;
    assert_eq!(gone, json!({"assets": []}));
    let lower = stack
        .read(&format!(
            "/assets?tag={}",
            urlencoding(&motor_tag.to_lowercase())
        ))
        .await?;
    assert_eq!(lower, json!({"assets": []}), "tags are exact");
    // ... and a tag no asset can have: `A` and a combining diaeresis (looks like `Ä`).
    for query in [
        "",
        "?tag=",
        "?tag=%20",
        "?tag=M-1&area=U1",
        "?tag=A%CC%88-1",
    ] {
        let reply = stack.get(&format!("/assets{query}")).await?;
        assert_eq!(reply.status, 400, "{query}: {reply:?}");
        assert!(reply.is_problem(), "{reply:?}");
    }
    Ok(())
}

/// `text` for a query string.
fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Batches and disciplines
// ---------------------------------------------------------------------------------

/// A rule outcome of an asset whose condition did not hold: its findings resolved, or
/// the condition could not be evaluated.
fn unmatched(event: &EventEnvelope) -> bool {
    matches!(
        event.event_type,
        EventType::RuleExecuted | EventType::RuleError
    ) && event.payload["matched"] == false
}

/// What `/batches` must show of a batch, from the log.
fn expected_batch(log: &[EventEnvelope], correlation_id: Uuid) -> Value {
    let events: Vec<&EventEnvelope> = log
        .iter()
        .filter(|e| e.correlation_id == correlation_id)
        .filter(|e| {
            e.aggregate_type == synapse_shared::AggregateType::Batch
                || e.event_type.is_state_change()
        })
        .collect();
    let of = |event_type: EventType| events.iter().find(|e| e.event_type == event_type);
    let count =
        |event_type: EventType| events.iter().filter(|e| e.event_type == event_type).count();
    let started = of(EventType::BatchStarted);
    let failed = of(EventType::BatchFailed);
    let completed = of(EventType::BatchCompleted).or(failed);
    let rollback = log.iter().find(|e| {
        e.event_type == EventType::BatchRolledBack
            && e.payload["target_correlation_id"] == json!(correlation_id)
    });
    let (executed, skipped, errors) = (
        count(EventType::RuleExecuted),
        count(EventType::RuleSkipped),
        count(EventType::RuleError),
    );
    json!({
        "correlation_id": correlation_id,
        "kind": started.map(|e| e.payload["kind"].clone()),
        "status": if rollback.is_some() { "rolled_back" } else if failed.is_some() { "failed" } else if completed.is_some() { "completed" } else { "running" },
        "actor": events.first().map(|e| e.actor.clone()),
        "rolled_back_by": rollback.map(|e| e.correlation_id),
        "rolled_back_by_actor": rollback.map(|e| e.actor.clone()),
        "first_position": events.first().map(|e| e.position),
        "started_at": started.map(|e| e.occurred_at),
        "finished_at": completed.map(|e| e.occurred_at),
        "duration_ms": completed.and_then(|c| c.payload["duration_ms"].as_i64().or_else(|| {
            started.map(|s| (c.occurred_at - s.occurred_at).num_milliseconds())
        })),
        "counts": {
            "executed": executed, "skipped": skipped, "errors": errors,
            "matched": executed + skipped + errors - events.iter().filter(|e| unmatched(e)).count(),
            "findings": count(EventType::FindingRaised),
            "findings_resolved": count(EventType::FindingResolved),
            "changes": events.iter().filter(|e| e.event_type.is_state_change()).count(),
        },
        "error": failed.map(|e| e.payload["error"].clone()),
    })
}

/// Every batch of the list (with `query`), two a page.
async fn all_batches(stack: &Stack, query: &str) -> anyhow::Result<Vec<Value>> {
    every_item(stack, "/batches", query, "batches").await
}

/// Every item of a keyset-paginated list (`{items: [...], next_after}` at `path`, with
/// `query`), two a page.
async fn every_item(
    stack: &Stack,
    path: &str,
    query: &str,
    items: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = stack
            .read(&format!("{path}?{query}&limit=2&after={after}"))
            .await?;
        all.extend(page[items].as_array().cloned().unwrap_or_default());
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => return Ok(all),
        }
    }
}

#[tokio::test]
async fn batches_show_status_rules_counts_errors_timings_and_who_ran_and_rolled_back_them(
) -> anyhow::Result<()> {
    // Arrange: the engineer imports and runs three rules (the range rule errors for the
    // transmitter without a range), and runs the range rule again; the admin rolls the
    // first run back.
    let stack = Stack::start().await?;
    let import = stack.import(&as_csv(&small_plant())).await?;
    let vfd = stack.define_rule(&vfd_rule()).await?;
    let pumps = stack.define_rule(&pump_flag_rule()).await?;
    let ranges = stack.define_rule(&instrument_range_rule()).await?;
    let report = stack
        .execute(json!({"rule_ids": [vfd, pumps, ranges]}))
        .await?;
    let execution = id_field(&report, "correlation_id")?;
    let rerun = id_field(
        &stack.execute(json!({"rule_ids": [ranges]})).await?,
        "correlation_id",
    )?;
    let rollback = stack.rollback(execution).await?;
    stack.settle().await?;
    let log = stack.log().await?;
    let batch_ids: Vec<Uuid> = log
        .iter()
        .filter(|e| e.event_type == EventType::BatchStarted)
        .map(|e| e.correlation_id)
        .collect();
    let expected =
        |ids: &[Uuid]| -> Vec<Value> { ids.iter().map(|id| expected_batch(&log, *id)).collect() };

    // Act
    let listed = all_batches(&stack, "").await?;
    let rolled_back = all_batches(&stack, "status=rolled_back").await?;
    let completed_runs = all_batches(&stack, "status=completed&kind=rule_execution").await?;
    let engineers_runs =
        all_batches(&stack, &format!("kind=rule_execution&actor={ENGINEER}")).await?;
    let admins = all_batches(&stack, &format!("actor={TEST_ADMIN}")).await?;
    let imports = all_batches(&stack, "kind=csv_import").await?;
    let detail = stack.read(&format!("/batches/{execution}")).await?;
    let rerun_detail = stack.read(&format!("/batches/{rerun}")).await?;
    let unknown = stack.get(&format!("/batches/{}", Uuid::now_v7())).await?;

    // Assert: the list is every batch once, in start order, as the log says.
    assert_eq!(batch_ids, vec![import, execution, rerun, rollback]);
    assert_eq!(listed, expected(&batch_ids));
    assert_eq!(rolled_back, expected(&[execution]));
    assert_eq!(completed_runs, expected(&[rerun]));
    assert_eq!(engineers_runs, expected(&[execution, rerun]));
    assert_eq!(admins, expected(&[rollback]));
    assert_eq!(imports, expected(&[import]));
    // Who ran it, who rolled it back, and the counts the runner reported.
    assert_eq!(detail["actor"], ENGINEER);
    assert_eq!(detail["status"], "rolled_back");
    assert_eq!(detail["rolled_back_by"], json!(rollback));
    assert_eq!(detail["rolled_back_by_actor"], TEST_ADMIN);
    assert_eq!(detail["kind"], "rule_execution");
    assert_eq!(detail["counts"]["errors"], 1, "{detail}");
    for count in ["executed", "skipped", "errors", "matched"] {
        assert_eq!(detail["counts"][count], report["totals"][count], "{count}");
    }
    // Per rule, in the order they ran: as the log's rule events say.
    for (batch, detail) in [(execution, &detail), (rerun, &rerun_detail)] {
        let mut rules = Vec::new();
        for started in log.iter().filter(|e| {
            e.correlation_id == batch && e.event_type == EventType::RuleExecutionStarted
        }) {
            let rule = started.rule_id;
            let of_rule = |t: EventType| {
                log.iter()
                    .filter(|e| e.correlation_id == batch && e.rule_id == rule && e.event_type == t)
                    .count()
            };
            let completed = log
                .iter()
                .find(|e| {
                    e.correlation_id == batch
                        && e.rule_id == rule
                        && e.event_type == EventType::RuleExecutionCompleted
                })
                .map(|e| e.occurred_at);
            let (executed, skipped, errors) = (
                of_rule(EventType::RuleExecuted),
                of_rule(EventType::RuleSkipped),
                of_rule(EventType::RuleError),
            );
            let unmatched = log
                .iter()
                .filter(|e| e.correlation_id == batch && e.rule_id == rule && unmatched(e))
                .count();
            // How far it got: its final count, or its last BATCH_PROGRESS.
            let done = log
                .iter()
                .filter(|e| e.correlation_id == batch && e.rule_id == rule)
                .filter_map(|e| match e.event_type {
                    EventType::BatchProgress => Some(e.payload["done"].clone()),
                    EventType::RuleExecutionCompleted => {
                        Some(e.payload["counts"]["assets"].clone())
                    }
                    _ => None,
                })
                .next_back();
            rules.push(json!({
                "rule_id": rule, "rule_version": started.rule_version,
                "name": started.payload["name"], "total": started.payload["total"],
                "done": done,
                "executed": executed, "skipped": skipped, "errors": errors,
                "matched": executed + skipped + errors - unmatched,
                "started_at": started.occurred_at, "completed_at": completed,
            }));
        }
        let mut whole = expected_batch(&log, batch);
        whole["rules"] = json!(rules);
        assert_eq!(detail, &whole);
    }
    let rules = detail["rules"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&Value> = rules.iter().map(|r| &r["rule_id"]).collect();
    assert_eq!(ids, [&json!(vfd), &json!(pumps), &json!(ranges)]);
    assert_eq!(rules[2]["errors"], 1);
    assert_eq!(rules[0]["executed"], 4, "motors of 75, 90, 110 and 160 kW");
    assert_eq!(rerun_detail["status"], "completed");
    assert_eq!(rerun_detail["rolled_back_by"], Value::Null);
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(unknown.is_problem());
    // A batch accepted a moment ago is not projected yet: the answer says to retry.
    let detail = unknown.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.ends_with("appears here within moments: retry"),
        "{detail}"
    );
    Ok(())
}

#[tokio::test]
async fn a_run_cut_short_by_a_shutdown_is_failed_with_its_error_and_the_feed_says_error(
) -> anyhow::Result<()> {
    // Arrange: 4,000 pumps, so the run takes several chunks; a subscriber to everything.
    let mut stack = Stack::start().await?;
    stack.import(&as_csv(&pumps(4_000))).await?;
    let rule = stack.define_rule(&pump_flag_rule()).await?;
    stack.settle().await?;
    let head = stack.head().await?;
    wait_until_ready(&stack.system.query).await?;
    let mut socket = ws::subscribe(
        stack.system.query.port,
        json!({"type": "subscribe", "after": head}),
    )
    .await?;
    let run = stack.start_execution(json!({"rule_ids": [rule]})).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (chunks,): (i64,) = sqlx::query_as(
            "select count(*) from workflow_events
             where correlation_id = $1 and event_type = 'BATCH_PROGRESS'",
        )
        .bind(run)
        .fetch_one(stack.pool())
        .await?;
        if chunks > 0 {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no chunk committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Act: the command service stops after the run's first chunk; a new one takes
    // over (its relay publishes what the old one's could not).
    stack.system.command.shutdown.cancel();
    let replacement =
        apps::command_service(&stack.system.database, &stack.system.nats.args, true).await?;
    std::mem::replace(&mut stack.system.command, replacement)
        .stop()
        .await?;
    let mut received = Vec::new();
    loop {
        let message = ws::next_json(&mut socket, Duration::from_secs(30)).await?;
        let failed = message["event"]["event_type"] == "BATCH_FAILED";
        received.push(message);
        if failed {
            break;
        }
    }
    stack.settle().await?;
    let failed = stack.read("/batches?status=failed").await?;
    let detail = stack.read(&format!("/batches/{run}")).await?;

    // Assert: the feed carried the run up to its failure, which reads ERROR.
    let log = stack.log().await?;
    let since: Vec<&EventEnvelope> = log.iter().filter(|e| e.position > head).collect();
    let kinds: Vec<(i64, &str)> = received
        .iter()
        .map(|m| {
            (
                m["position"].as_i64().unwrap_or(0),
                m["type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let expected: Vec<(i64, &str)> = since
        .iter()
        .map(|e| (e.position, synapse_tests::drive::message_kind(e.event_type)))
        .collect();
    assert_eq!(kinds, expected);
    assert_eq!(kinds.last().map(|k| k.1), Some("ERROR"));
    // The batch list and detail: failed, with the runner's error, part of the pumps done.
    assert_eq!(failed["batches"], json!([expected_batch(&log, run)]));
    assert_eq!(detail["status"], "failed");
    assert!(
        detail["error"]
            .as_str()
            .is_some_and(|e| e.contains("shut down")),
        "{detail}"
    );
    let executed = detail["counts"]["executed"].as_i64().unwrap_or(0);
    assert!(executed > 0 && executed < 4_000, "{detail}");
    assert_eq!(detail["rules"][0]["total"], 4_000);
    assert_eq!(detail["rules"][0]["completed_at"], Value::Null);
    // How far it got: the last progress the log holds, short of the 4,000.
    let progressed = log
        .iter()
        .filter(|e| e.correlation_id == run && e.event_type == EventType::BatchProgress)
        .map(|e| e.payload["done"].clone())
        .next_back();
    assert_eq!(Some(&detail["rules"][0]["done"]), progressed.as_ref());
    let done = detail["rules"][0]["done"].as_i64().unwrap_or(0);
    assert!(done >= executed && done < 4_000, "{detail}");
    Ok(())
}

#[tokio::test]
async fn disciplines_summarise_the_logged_events_errors_and_batches_of_each_discipline(
) -> anyhow::Result<()> {
    // Arrange
    let stack = Stack::start().await?;
    stack.import(&as_csv(&small_plant())).await?;
    let vfd = stack.define_rule(&vfd_rule()).await?;
    let ranges = stack.define_rule(&instrument_range_rule()).await?;
    let execution = id_field(
        &stack.execute(json!({"rule_ids": [vfd, ranges]})).await?,
        "correlation_id",
    )?;
    stack.execute(json!({"rule_ids": [ranges]})).await?;
    stack.rollback(execution).await?;
    stack.settle().await?;
    let log = stack.log().await?;
    let mut expected: BTreeMap<String, Value> = BTreeMap::new();
    let mut recent: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let disciplines: BTreeSet<&str> = log.iter().filter_map(|e| e.discipline.as_deref()).collect();
    for discipline in &disciplines {
        let events: Vec<&EventEnvelope> = log
            .iter()
            .filter(|e| e.discipline.as_deref() == Some(discipline))
            .collect();
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for event in &events {
            *counts.entry(event.event_type.as_str()).or_default() += 1;
        }
        let errors = |events: &[&EventEnvelope]| {
            events
                .iter()
                .filter(|e| e.event_type == EventType::RuleError)
                .count()
        };
        let mut batches: Vec<Uuid> = Vec::new();
        // A rule definition is no batch.
        for event in events
            .iter()
            .rev()
            .filter(|e| e.event_type != EventType::RuleDefined)
        {
            if !batches.contains(&event.correlation_id) {
                batches.push(event.correlation_id);
            }
        }
        expected.insert(
            discipline.to_string(),
            json!({
                "discipline": discipline, "events": events.len(), "counts": counts,
                "errors": errors(&events), "batches": batches.len(),
                "last_activity": events.iter().map(|e| e.occurred_at).max(),
            }),
        );
        recent.insert(
            discipline.to_string(),
            batches
                .iter()
                .map(|batch| {
                    let of_batch: Vec<&EventEnvelope> = events
                        .iter()
                        .copied()
                        .filter(|e| e.correlation_id == *batch)
                        .collect();
                    json!({
                        "correlation_id": batch, "events": of_batch.len(),
                        "errors": errors(&of_batch),
                        "last_at": of_batch.iter().map(|e| e.occurred_at).max(),
                    })
                })
                .collect(),
        );
    }

    // Act
    let list = stack.read("/disciplines").await?;
    let instrumentation = stack
        .read("/disciplines/INSTRUMENTATION?limit=1000")
        .await?;
    let electrical_newest = stack.read("/disciplines/ELECTRICAL?limit=1").await?;
    let lower_case = stack.read("/disciplines/electrical?limit=1").await?;
    let nobody = stack.get("/disciplines/NOBODY").await?;

    // Assert
    assert_eq!(
        list,
        json!({"disciplines": expected.values().cloned().collect::<Vec<_>>()})
    );
    assert_eq!(
        disciplines.into_iter().collect::<Vec<_>>(),
        ["ELECTRICAL", "INSTRUMENTATION", "MECHANICAL"]
    );
    let mut whole = expected["INSTRUMENTATION"].clone();
    whole["recent_batches"] = json!(recent["INSTRUMENTATION"]);
    assert_eq!(instrumentation, whole);
    assert_eq!(instrumentation["errors"], 2, "the transmitter in both runs");
    let mut newest = expected["ELECTRICAL"].clone();
    newest["recent_batches"] = json!(recent["ELECTRICAL"][..1]);
    assert_eq!(electrical_newest, newest);
    assert_eq!(
        lower_case, newest,
        "a discipline is a code, whatever its case"
    );
    assert_eq!(nobody.status, 404, "{nobody:?}");
    assert!(nobody.is_problem());
    Ok(())
}

// ---------------------------------------------------------------------------------
// Documentation, health, authentication
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_service_documents_its_api_and_reports_health_and_metrics() -> anyhow::Result<()> {
    // Arrange
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let query = apps::query_service(&database, &nats.args).await?;
    let http = http_client_as(Role::Viewer, VIEWER);
    let get = |path: &str| {
        let request = http.get(query.url(path));
        async move { anyhow::Ok(request.send().await?) }
    };
    wait_until_ready(&query).await?;

    // Act
    let openapi: Value = get("/openapi.json").await?.json().await?;
    let health: Value = get("/healthz").await?.json().await?;
    let ready: Value = get("/readyz").await?.json().await?;
    let _socket = ws::subscribe(query.port, json!({"type": "subscribe"})).await?;
    let metrics = get("/metrics").await?.text().await?;

    // Assert
    for path in [
        "/events/timeline",
        "/events/assets/{id}/history",
        "/assets/{id}",
        "/batches",
        "/batches/{correlation_id}",
        "/disciplines",
        "/disciplines/{discipline}",
        "/ws",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert!(openapi["components"]["schemas"]
        .get("TimelineEntry")
        .is_some());
    // Page bounds are in the schema, where a generated client checks them (before:
    // only in the prose, `limit` documented as any integer from 0).
    for (path, parameter, bounds) in [
        ("/events/timeline", "limit", json!([1, 1000])),
        ("/events/timeline", "after", json!([0, null])),
        ("/batches", "limit", json!([1, 1000])),
        ("/findings", "after", json!([0, null])),
        ("/events/assets/{id}/history", "limit", json!([1, 1000])),
        ("/disciplines/{discipline}", "limit", json!([1, 1000])),
    ] {
        let parameters = openapi["paths"][path]["get"]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let schema = parameters
            .iter()
            .find(|found| found["name"] == parameter)
            .map(|found| found["schema"].clone())
            .unwrap_or_default();
        assert_eq!(
            json!([schema["minimum"], schema["maximum"]]),
            bounds,
            "{path} {parameter}: {schema}"
        );
    }
    let retry_after =
        &openapi["paths"]["/events/timeline"]["get"]["responses"]["503"]["headers"]["Retry-After"];
    assert_eq!(retry_after["schema"]["type"], "integer", "{retry_after}");
    assert_eq!(health["status"], "ok");
    assert_eq!(ready["status"], "ready");
    // At least this test's client (other tests share the process's recorder).
    let clients = metrics
        .lines()
        .find(|line| line.starts_with("synapse_ws_clients "))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok());
    assert!(clients.is_some_and(|clients| clients >= 1.0), "{metrics}");
    query.stop().await
}

/// Wait (bounded) until the query service's live feed is ready.
pub async fn wait_until_ready(query: &apps::Running) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = reqwest::get(query.url("/readyz")).await;
        if ready.is_ok_and(|response| response.status() == 200) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the query service never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn queries_need_a_token_and_health_does_not() -> anyhow::Result<()> {
    // Arrange
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let query = apps::query_service(&database, &nats.args).await?;
    let anonymous = reqwest::Client::new();
    let forged = synapse_shared::auth::issue_token(
        "some-other-secret-that-is-long-enough-0123456789",
        "mallory",
        Role::Admin,
        Duration::from_secs(60),
        synapse_shared::auth::DEFAULT_ISSUER,
        synapse_shared::auth::DEFAULT_AUDIENCE,
    )?;

    // Act
    let without_token = anonymous.get(query.url("/events/timeline")).send().await?;
    let with_forged_token = anonymous
        .get(query.url("/assets/00000000-0000-0000-0000-000000000000"))
        .bearer_auth(&forged)
        .send()
        .await?;
    let with_token = anonymous
        .get(query.url("/batches"))
        .header("authorization", bearer(Role::Viewer, VIEWER))
        .send()
        .await?;
    let health = anonymous.get(query.url("/healthz")).send().await?;

    // Assert
    assert_eq!(without_token.status(), 401);
    assert!(without_token.headers().contains_key("www-authenticate"));
    assert_eq!(with_forged_token.status(), 401);
    assert_eq!(with_token.status(), 200);
    assert_eq!(health.status(), 200);
    query.stop().await
}

// ---------------------------------------------------------------------------------
// Open findings
// ---------------------------------------------------------------------------------

/// The open findings as the command side holds them, as `/findings` must list them:
/// in the order they were opened (the position of the last FINDING_RAISED of each in
/// the log: a rollback that reopens a finding raises it again).
async fn expected_findings(stack: &Stack, log: &[EventEnvelope]) -> anyhow::Result<Vec<Value>> {
    type Row = (
        Uuid,
        String,
        Uuid,
        String,
        String,
        Uuid,
        chrono::DateTime<chrono::Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select f.asset_id, a.tag, f.rule_id, f.severity, f.message, f.correlation_id, f.raised_at
         from findings f join assets a on a.id = f.asset_id",
    )
    .fetch_all(stack.pool())
    .await?;
    let mut expected: Vec<(i64, Value)> = rows
        .into_iter()
        .map(
            |(asset_id, tag, rule_id, severity, message, raised_in, raised_at)| {
                let raised = log
                    .iter()
                    .rev()
                    .find(|e| {
                        e.event_type == EventType::FindingRaised
                            && e.rule_id == Some(rule_id)
                            && e.payload["asset_id"] == json!(asset_id)
                            && e.payload["message"] == json!(message)
                    })
                    .unwrap_or_else(|| panic!("no FINDING_RAISED of {message}"));
                let row = json!({
                    "asset_id": asset_id, "tag": tag, "rule_id": rule_id,
                    "rule_version": raised.rule_version, "discipline": raised.discipline,
                    "severity": severity, "message": message, "raised_in": raised_in,
                    // The command side's time, which a reopening keeps (before: the read
                    // model showed the event's time, some microseconds off the row's).
                    "raised_at": raised_at,
                    "position": raised.position,
                });
                (raised.position, row)
            },
        )
        .collect();
    expected.sort_by_key(|(position, _)| *position);
    Ok(expected.into_iter().map(|(_, row)| row).collect())
}

/// When the command side says the open finding on `asset` was raised.
async fn command_raised_at(
    stack: &Stack,
    asset: Uuid,
) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    let raised_at: Option<(chrono::DateTime<chrono::Utc>,)> =
        sqlx::query_as("select raised_at from findings where asset_id = $1")
            .bind(asset)
            .fetch_optional(stack.pool())
            .await?;
    Ok(raised_at.map(|(at,)| at))
}

/// Every open finding `/findings?{query}` lists, two a page.
async fn all_findings(stack: &Stack, query: &str) -> anyhow::Result<Vec<Value>> {
    every_item(stack, "/findings", query, "findings").await
}

#[tokio::test]
async fn open_findings_are_listed_until_resolved_and_a_rollback_reopens_them() -> anyhow::Result<()>
{
    // Arrange: the pump rule flags P-101A; a voltage rule flags all six motors.
    let stack = Stack::start().await?;
    stack.import(&as_csv(&small_plant())).await?;
    let pumps = stack.define_rule(&pump_flag_rule()).await?;
    let voltage = stack
        .define_rule(&json!({
            "name": "Motors state their voltage", "discipline": "ELECTRICAL", "priority": 30,
            "when": "asset.asset_type == 'ELECTRIC_MOTOR' && !has(asset.properties.rated_voltage_v)",
            "then": [{"type": "flag", "severity": "error", "message": "{asset.tag}: no rated voltage"}]
        }))
        .await?;
    let first = stack.execute(json!({"rule_ids": [pumps, voltage]})).await?;
    let first = id_field(&first, "correlation_id")?;
    stack.settle().await?;

    // Act + Assert: the list, whole and filtered, equals the command side's findings.
    let expected = expected_findings(&stack, &stack.log().await?).await?;
    assert_eq!(expected.len(), 7);
    assert_eq!(all_findings(&stack, "").await?, expected);
    let only = |field: &str, value: Value| -> Vec<Value> {
        expected
            .iter()
            .filter(|f| f[field] == value)
            .cloned()
            .collect()
    };
    assert_eq!(
        all_findings(&stack, "severity=error").await?,
        only("severity", json!("error"))
    );
    assert_eq!(
        all_findings(&stack, "discipline=MECHANICAL").await?,
        only("discipline", json!("MECHANICAL"))
    );
    assert_eq!(
        all_findings(&stack, &format!("rule_id={pumps}")).await?,
        only("rule_id", json!(pumps))
    );
    let pump = created_asset(&stack.log().await?, "P-101A")?;
    let pump_finding = only("asset_id", json!(pump));
    assert_eq!(pump_finding.len(), 1);
    assert_eq!(pump_finding[0]["tag"], "P-101A");
    assert_eq!(
        all_findings(&stack, &format!("asset_id={pump}&severity=warning")).await?,
        pump_finding
    );

    // When the command side says the first run raised the pump's finding.
    let first_raised_at = command_raised_at(&stack, pump).await?;
    assert!(first_raised_at.is_some());

    // Act: the pump gets its driver and the rule runs again.
    stack
        .command(
            &http_client_as(Role::Engineer, ENGINEER),
            reqwest::Method::PATCH,
            &format!("/assets/{pump}"),
            Some(&json!({"properties": {"driver": "M-101A"}})),
            200,
        )
        .await?;
    let resolving = stack.execute(json!({"rule_ids": [pumps]})).await?;
    let resolving = id_field(&resolving, "correlation_id")?;
    stack.settle().await?;

    // Assert: resolved, the motors' findings still open.
    let motors_only = only("rule_id", json!(voltage));
    assert_eq!(all_findings(&stack, "").await?, motors_only);
    assert_eq!(
        expected_findings(&stack, &stack.log().await?).await?,
        motors_only
    );

    // Act: roll the resolution back.
    let reopening = stack.rollback(resolving).await?;
    stack.settle().await?;

    // Assert: the pump's finding is open again, as raised by the first run and when
    // (before, a reopened finding showed the rollback's time).
    let reopened = expected_findings(&stack, &stack.log().await?).await?;
    assert_eq!(all_findings(&stack, "").await?, reopened);
    assert_eq!(reopened.len(), 7);
    let pump_reopened = &all_findings(&stack, &format!("asset_id={pump}")).await?[0];
    assert_eq!(pump_reopened["raised_in"], json!(first));
    let reopened_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(pump_reopened["raised_at"].clone())?;
    assert_eq!(Some(reopened_at), first_raised_at);
    assert_eq!(command_raised_at(&stack, pump).await?, first_raised_at);

    // Act: rebuild the read model from the log.
    let rows = "select to_jsonb(f) from rm_findings f order by position";
    let live: Vec<Value> = sqlx::query_scalar(rows).fetch_all(stack.pool()).await?;
    let url = &stack.system.database.url;
    projection_service::rebuild::rebuild(url, url, "asset_history").await?;

    // Assert: the same rows.
    let rebuilt: Vec<Value> = sqlx::query_scalar(rows).fetch_all(stack.pool()).await?;
    assert_eq!((live.len(), &rebuilt), (7, &live));

    // Act: roll the rollback back: the resolution holds again.
    stack.rollback(reopening).await?;
    stack.settle().await?;

    // Assert
    assert_eq!(all_findings(&stack, "").await?, motors_only);

    // Act: roll the first run back.
    stack.rollback(first).await?;
    stack.settle().await?;

    // Assert: nothing it raised is open.
    assert_eq!(all_findings(&stack, "").await?, Vec::<Value>::new());
    assert_eq!(
        expected_findings(&stack, &stack.log().await?).await?,
        Vec::<Value>::new()
    );

    // A filter the list does not know is refused.
    let refused = stack.get("/findings?severity=fatal").await?;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["type"], "/problems/invalid-query");
    let refused = stack.get("/findings?sevrity=error").await?;
    assert_eq!(refused.status, 400);
    Ok(())
}
