//! The relay: every committed event reaches the stream once, in position order, with
//! the documented subject and headers, even under concurrent writers and NATS outages.

use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;
use synapse_tests::apps;
use synapse_tests::client::send;
use synapse_tests::stream::{read_all, wait_for_messages};
use synapse_tests::{TestDatabase, TestNats};

async fn log_count(pool: &PgPool) -> anyhow::Result<i64> {
    let (count,): (i64,) = sqlx::query_as("select count(*) from workflow_events")
        .fetch_one(pool)
        .await?;
    Ok(count)
}

fn asset(tag: &str) -> serde_json::Value {
    json!({"tag": tag, "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL",
           "area": "U100", "properties": {"rated_power_kw": 75}})
}

#[tokio::test]
async fn a_plain_jetstream_consumer_receives_each_event_once_with_documented_subject_and_headers(
) -> anyhow::Result<()> {
    // Arrange
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, true).await?;
    let http = synapse_tests::client::http_client();

    // Act
    let created = send(
        &http,
        reqwest::Method::POST,
        &command.url("/assets"),
        Some(&asset("M-101A")),
    )
    .await?
    .expect_status(201);
    let id = created.body["asset"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    send(
        &http,
        reqwest::Method::PATCH,
        &command.url(&format!("/assets/{id}")),
        Some(&json!({"properties": {"rated_power_kw": 90}})),
    )
    .await?
    .expect_status(200);

    // Assert
    let pool = PgPool::connect(&database.url).await?;
    let logged = synapse_shared::event_log::read_after(&pool, 0, 1000).await?;
    assert_eq!(logged.len(), 6, "two single-change batches of three events");
    wait_for_messages(&nats.args, logged.len() as u64, Duration::from_secs(15)).await?;
    let streamed = read_all(&nats.args).await?;
    let envelopes: Vec<_> = streamed
        .iter()
        .map(|message| message.envelope.clone())
        .collect();
    assert_eq!(
        envelopes, logged,
        "the stream holds exactly the log, in order"
    );

    let update = &streamed[4];
    let prefix = &nats.args.nats_subject_prefix;
    assert_eq!(
        update.subject,
        format!("{prefix}.ELECTRICAL.asset.ASSET_UPDATED")
    );
    let header = |name: &str| {
        update
            .headers
            .get(name)
            .map(|value| value.as_str().to_owned())
    };
    let event_id = update.envelope.event_id.to_string();
    assert_eq!(header("Nats-Msg-Id").as_deref(), Some(event_id.as_str()));
    assert_eq!(header("ce-id").as_deref(), Some(event_id.as_str()));
    assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(
        header("ce-type").as_deref(),
        Some("io.synapse.ASSET_UPDATED")
    );
    assert_eq!(
        header("ce-source").as_deref(),
        Some("/synapse/command-service")
    );
    assert_eq!(header("ce-subject"), Some(format!("asset/{id}")));
    assert_eq!(
        header("Synapse-Position"),
        Some(update.envelope.position.to_string())
    );
    assert_eq!(
        streamed[0].subject,
        format!("{prefix}.NONE.batch.BATCH_STARTED")
    );
    command.stop().await
}

#[tokio::test]
async fn an_append_waits_for_the_transaction_holding_the_log_so_positions_commit_in_order(
) -> anyhow::Result<()> {
    // Arrange: a writer that appended and keeps its transaction open.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let _command = apps::command_service(&database, &nats.args, false).await?;
    let pool = PgPool::connect(&database.url).await?;
    let mut slow = pool.begin().await?;
    command_service::assets::create(&mut slow, "slow", serde_json::from_value(asset("SLOW-1"))?)
        .await?;

    // Act: a second writer tries to append meanwhile.
    let fast_pool = pool.clone();
    let fast = tokio::spawn(async move {
        let mut transaction = fast_pool.begin().await?;
        let outcome = command_service::assets::create(
            &mut transaction,
            "fast",
            serde_json::from_value(asset("FAST-1"))?,
        )
        .await?;
        transaction.commit().await?;
        anyhow::Ok(outcome)
    });

    // Assert: the second writer waits on the append lock until the first commits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "select count(*) from pg_locks where locktype = 'advisory' and not granted",
        )
        .fetch_one(&pool)
        .await?;
        if waiting == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second append never waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!fast.is_finished());
    assert_eq!(
        log_count(&pool).await?,
        0,
        "nothing is visible before the first commit"
    );
    slow.commit().await?;
    let fast_outcome = fast.await??;
    let logged = synapse_shared::event_log::read_after(&pool, 0, 100).await?;
    let actors: Vec<_> = logged.iter().map(|event| event.actor.as_str()).collect();
    assert_eq!(actors, vec!["slow", "slow", "slow", "fast", "fast", "fast"]);
    assert!(fast_outcome.events[0].position > logged[2].position);
    Ok(())
}

#[tokio::test]
async fn concurrent_writers_holding_transactions_open_never_make_a_follower_skip_an_event(
) -> anyhow::Result<()> {
    // Arrange
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, true).await?;
    let pool = PgPool::connect(&database.url).await?;
    let writers = 24;
    let per_writer = 5;

    // A follower that reads the log by position while writers run, as the relay does;
    // it records every position it ever saw.
    let follower_pool = pool.clone();
    let follower = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut after = 0;
        let expected = (writers * per_writer * 3) as usize;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < expected && tokio::time::Instant::now() < deadline {
            for event in synapse_shared::event_log::read_after(&follower_pool, after, 50).await? {
                after = event.position;
                seen.push(event.position);
            }
        }
        anyhow::Ok(seen)
    });

    // Act: writers whose transactions stay open for varying times after their work,
    // so that without serialized appends they would commit out of position order.
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for index in 0..per_writer {
                let mut transaction = pool.begin().await?;
                let tag = format!("W{writer}-{index}");
                command_service::assets::create(
                    &mut transaction,
                    "writer",
                    serde_json::from_value(asset(&tag))?,
                )
                .await?;
                let hold = Duration::from_millis(((writer * 7 + index * 13) % 25) as u64);
                tokio::time::sleep(hold).await;
                transaction.commit().await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }

    // Assert: the follower saw every event, in increasing order, none skipped.
    let seen = follower.await??;
    let all: Vec<i64> =
        sqlx::query_as::<_, (i64,)>("select position from workflow_events order by position")
            .fetch_all(&pool)
            .await?
            .into_iter()
            .map(|(position,)| position)
            .collect();
    assert_eq!(seen, all, "the follower saw exactly the log, in order");
    // And the relay published each exactly once, in position order.
    wait_for_messages(&nats.args, all.len() as u64, Duration::from_secs(30)).await?;
    let streamed: Vec<i64> = read_all(&nats.args)
        .await?
        .iter()
        .map(|m| m.envelope.position)
        .collect();
    assert_eq!(streamed, all);
    command.stop().await
}

#[tokio::test]
async fn a_relay_lease_held_by_a_silent_leader_runs_out_and_a_follower_takes_it(
) -> anyhow::Result<()> {
    // Arrange: leader A holds the lease; follower B cannot take it.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let _command = apps::command_service(&database, &nats.args, false).await?;
    let pool = PgPool::connect(&database.url).await?;
    let mut leader = command_service::relay::leader::Lease::new(pool.clone());
    let mut follower = command_service::relay::leader::Lease::new(pool.clone());
    assert!(leader.acquire().await?);
    assert!(!follower.acquire().await?);

    // Act: the leader goes silent (as a SIGSTOPped process would) past the lease.
    tokio::time::sleep(command_service::relay::leader::LEASE_TTL + Duration::from_millis(300))
        .await;

    // Assert
    assert!(
        follower.acquire().await?,
        "the follower takes the expired lease"
    );
    assert!(
        !leader.still_held().await?,
        "the thawed leader learns it lost the lease"
    );
    Ok(())
}

#[tokio::test]
async fn with_two_relays_each_event_is_published_once_in_order_across_a_leader_stop(
) -> anyhow::Result<()> {
    // Arrange: two command-service replicas, both running the relay.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let first = apps::command_service(&database, &nats.args, true).await?;
    let second = apps::command_service(&database, &nats.args, true).await?;
    let http = synapse_tests::client::http_client();
    for index in 0..5 {
        send(
            &http,
            reqwest::Method::POST,
            &first.url("/assets"),
            Some(&asset(&format!("A-{index}"))),
        )
        .await?
        .expect_status(201);
    }
    wait_for_messages(&nats.args, 15, Duration::from_secs(15)).await?;

    // Act: the first replica stops; writes continue through the second.
    first.stop().await?;
    for index in 0..5 {
        send(
            &http,
            reqwest::Method::POST,
            &second.url("/assets"),
            Some(&asset(&format!("B-{index}"))),
        )
        .await?
        .expect_status(201);
    }

    // Assert
    let pool = PgPool::connect(&database.url).await?;
    let logged = synapse_shared::event_log::read_after(&pool, 0, 1000).await?;
    assert_eq!(logged.len(), 30);
    wait_for_messages(&nats.args, 30, Duration::from_secs(20)).await?;
    let streamed: Vec<_> = read_all(&nats.args)
        .await?
        .into_iter()
        .map(|m| m.envelope)
        .collect();
    assert_eq!(streamed, logged);
    second.stop().await
}

/// `POST /assets` of a motor per tag, each its own batch of three events.
async fn create_assets(
    http: &reqwest::Client,
    command: &apps::Running,
    tags: &[&str],
) -> anyhow::Result<()> {
    for tag in tags {
        send(
            http,
            reqwest::Method::POST,
            &command.url("/assets"),
            Some(&asset(tag)),
        )
        .await?
        .expect_status(201);
    }
    Ok(())
}

#[tokio::test]
async fn a_relay_whose_stream_was_filled_from_another_log_publishes_nothing_and_says_so(
) -> anyhow::Result<()> {
    // Arrange: a first database's events on the stream, 3 assets (9 events).
    let nats = TestNats::new();
    let http = synapse_tests::client::http_client();
    let first = TestDatabase::create().await?;
    let command = apps::command_service(&first, &nats.args, true).await?;
    create_assets(&http, &command, &["M-101A", "M-102A", "M-103A"]).await?;
    wait_for_messages(&nats.args, 9, Duration::from_secs(15)).await?;
    command.stop().await?;
    let first_pool = PgPool::connect(&first.url).await?;
    let first_log = synapse_shared::event_log::read_after(&first_pool, 0, 1000).await?;

    // Act: a second database, a longer log (12 events), the same stream: as after a
    // restore of an older backup, or a second database given the stream by mistake.
    let second = TestDatabase::create().await?;
    let command = apps::command_service(&second, &nats.args, true).await?;
    create_assets(&http, &command, &["P-101A", "P-102A", "P-103A", "P-104A"]).await?;
    let second_pool = PgPool::connect(&second.url).await?;
    assert_eq!(log_count(&second_pool).await?, 12);

    // Assert: the relay says the stream does not follow its log...
    let mismatch = |samples: &[synapse_tests::metrics::Sample]| {
        synapse_tests::metrics::value(samples, "synapse_relay_stream_mismatch", &[]) == Some(1.0)
    };
    synapse_tests::metrics::scrape_until(&http, &command.url("/metrics"), mismatch).await?;
    // ...and has published none of it: the stream holds the first log, unchanged (it
    // would otherwise skip positions 1-9 of the second log and append 10-12).
    let streamed: Vec<_> = read_all(&nats.args)
        .await?
        .into_iter()
        .map(|message| message.envelope)
        .collect();
    assert_eq!(streamed, first_log);
    command.stop().await
}

#[tokio::test]
async fn an_idle_relay_publishes_the_log_again_into_a_stream_that_was_lost() -> anyhow::Result<()> {
    // Arrange: two batches relayed, then the stream is lost (its store deleted, as an
    // operator or a crash might) while nothing else happens.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, true).await?;
    let http = synapse_tests::client::http_client();
    for tag in ["M-101A", "M-101B"] {
        send(
            &http,
            reqwest::Method::POST,
            &command.url("/assets"),
            Some(&asset(tag)),
        )
        .await?
        .expect_status(201);
    }
    let pool = PgPool::connect(&database.url).await?;
    let logged = synapse_shared::event_log::read_after(&pool, 0, 1000).await?;
    wait_for_messages(&nats.args, logged.len() as u64, Duration::from_secs(15)).await?;

    // Act
    synapse_tests::stream::context(&nats.args)
        .await?
        .delete_stream(&nats.args.nats_stream)
        .await?;

    // Assert: without any command, the stream holds the log again (before: it stayed
    // empty until the next command).
    wait_for_messages(&nats.args, logged.len() as u64, Duration::from_secs(30)).await?;
    let streamed: Vec<i64> = read_all(&nats.args)
        .await?
        .iter()
        .map(|message| message.envelope.position)
        .collect();
    let positions: Vec<i64> = logged.iter().map(|event| event.position).collect();
    assert_eq!(streamed, positions);
    assert_eq!(
        log_count(&pool).await?,
        logged.len() as i64,
        "no command was needed"
    );
    command.stop().await
}
