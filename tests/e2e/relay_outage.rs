//! Commands keep working while NATS is down; the relay catches up when it returns.

use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;
use synapse_shared::config::NatsArgs;
use synapse_tests::apps;
use synapse_tests::client::send;
use synapse_tests::nats_server::OwnNatsServer;
use synapse_tests::stream::{read_all, wait_for_messages};
use synapse_tests::TestDatabase;

#[tokio::test]
async fn commands_succeed_while_nats_is_down_and_every_event_is_published_once_after_it_returns(
) -> anyhow::Result<()> {
    // Arrange: our own nats-server, so stopping it does not disturb other tests.
    let mut server = OwnNatsServer::start().await?;
    let nats = NatsArgs::isolated(&server.url(), &uuid::Uuid::new_v4().simple().to_string());
    let database = TestDatabase::create().await?;
    let command = apps::command_service(&database, &nats, true).await?;
    let http = synapse_tests::client::http_client();
    let create = |tag: String| json!({"tag": tag, "asset_type": "PUMP", "discipline": "MECHANICAL", "properties": {}});
    send(
        &http,
        reqwest::Method::POST,
        &command.url("/assets"),
        Some(&create("P-1".into())),
    )
    .await?
    .expect_status(201);
    wait_for_messages(&nats, 3, Duration::from_secs(15)).await?;

    // Act: NATS dies; engineers keep working.
    server.kill().await?;
    for index in 2..=6 {
        send(
            &http,
            reqwest::Method::POST,
            &command.url("/assets"),
            Some(&create(format!("P-{index}"))),
        )
        .await?
        .expect_status(201);
    }
    server.restart().await?;

    // Assert: all 18 events on the stream, once each, in log order.
    let pool = PgPool::connect(&database.url).await?;
    let logged = synapse_shared::event_log::read_after(&pool, 0, 1000).await?;
    assert_eq!(logged.len(), 18);
    wait_for_messages(&nats, 18, Duration::from_secs(30)).await?;
    let streamed: Vec<_> = read_all(&nats)
        .await?
        .into_iter()
        .map(|m| m.envelope)
        .collect();
    assert_eq!(streamed, logged);
    command.stop().await
}
