//! Per-service NATS users with least-privilege subject permissions
//! (`deploy/nats/synapse-auth.conf`, used verbatim) on a nats-server of the test's own:
//! the three services run the pipeline with their own users, the read side cannot
//! publish events or delete the stream, and refused credentials leave a service not
//! ready instead of silently degraded.

use async_nats::jetstream;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use synapse_shared::config::NatsArgs;
use synapse_shared::nats_credentials::NatsCredentials;
use synapse_tests::apps::{self, Running};
use synapse_tests::client::{http_client, send, Reply};
use synapse_tests::nats_server::{NatsServerConfig, NatsUser, OwnNatsServer, SynapseNatsUsers};
use synapse_tests::process::{Service, ServiceEnv, ServiceProcess};
use synapse_tests::{stream, ws, TestDatabase};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The stream and prefix `deploy/nats/synapse-auth.conf` grants: the services' defaults.
fn args_as(server: &OwnNatsServer, credentials: NatsCredentials) -> NatsArgs {
    NatsArgs {
        nats_url: server.url(),
        nats_stream: "SYNAPSE_EVENTS".to_owned(),
        nats_subject_prefix: "synapse.events".to_owned(),
        credentials,
    }
}

/// A server with the deployed users, and the connection settings of each.
struct AuthNats {
    users: SynapseNatsUsers,
    server: OwnNatsServer,
}

impl AuthNats {
    async fn start() -> anyhow::Result<Self> {
        let users = SynapseNatsUsers::generate();
        let server = OwnNatsServer::start_with(users.server_config()).await?;
        Ok(Self { users, server })
    }

    fn args(&self, user: NatsUser) -> NatsArgs {
        args_as(&self.server, self.users.credentials(user))
    }

    /// Wait until the stream exists (the relay creates it; the read side may not).
    async fn wait_for_stream(&self) -> anyhow::Result<()> {
        let admin = self.args(NatsUser::Admin);
        let context = stream::context(&admin).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while context.get_stream(&admin.nats_stream).await.is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the relay did not create the stream within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The permission violations the server reported, one line each.
    fn violations(&self) -> Vec<String> {
        self.server
            .log()
            .lines()
            .filter(|line| line.contains("Violation"))
            .map(str::to_owned)
            .collect()
    }
}

/// GET `url` until it answers `status` (bounded), returning that reply.
async fn wait_for_status(url: &str, status: u16, patience: Duration) -> anyhow::Result<Reply> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + patience;
    loop {
        let reply = Reply::from(http.get(url).send().await?).await?;
        if reply.status == status {
            return Ok(reply);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{url} answered {reply:?}, not {status}, for {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_motor(command: &Running, tag: &str) -> anyhow::Result<String> {
    let created = send(
        &http_client(),
        Method::POST,
        &command.url("/assets"),
        Some(&json!({
            "tag": tag, "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL",
            "properties": {"rated_power_kw": 30}
        })),
    )
    .await?
    .expect_status(201);
    Ok(created.body["asset"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// The asset ids of the live messages (skipping batch messages), until `id` arrives.
async fn wait_for_live_asset(socket: &mut ws::Socket, id: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = ws::next_json(socket, remaining).await?;
        if message["event"]["aggregate_id"] == id {
            return Ok(message);
        }
    }
}

#[tokio::test]
async fn the_services_each_with_their_own_nats_user_run_the_pipeline_end_to_end(
) -> anyhow::Result<()> {
    // Arrange: each service with its own user; the readers once the relay made the stream.
    let mut nats = AuthNats::start().await?;
    let database = TestDatabase::create().await?;
    let command_args = nats.args(NatsUser::Command);
    let command = apps::command_service(&database, &command_args, true).await?;
    nats.wait_for_stream().await?;
    let projection = apps::projection_service(&database, &nats.args(NatsUser::Projection)).await?;
    wait_for_status(&projection.url("/readyz"), 200, Duration::from_secs(20)).await?;

    // Act: a command; then the query service starts on a non-empty stream (its hub reads
    // the last message), NATS and the command service restart (every consumer is
    // recreated, the new relay reads the stream's tail), and another command follows.
    let first = create_motor(&command, "M-AUTH-1").await?;
    apps::wait_for_projection(&database.url).await?;
    let query = apps::query_service(&database, &nats.args(NatsUser::Query)).await?;
    wait_for_status(&query.url("/readyz"), 200, Duration::from_secs(20)).await?;
    let mut socket = ws::subscribe(
        query.port,
        json!({"type": "subscribe", "filters": {"discipline": "ELECTRICAL"}}),
    )
    .await?;
    nats.server.kill().await?;
    nats.server.restart().await?;
    command.stop().await?;
    let command = apps::command_service(&database, &command_args, true).await?;
    let second = create_motor(&command, "M-AUTH-2").await?;
    let second_live = wait_for_live_asset(&mut socket, &second).await?;
    apps::wait_for_projection(&database.url).await?;

    // Assert: the read model, the live feed and a downstream consumer saw the commands.
    assert_eq!(second_live["event"]["event_type"], "ASSET_CREATED");
    for (id, tag) in [(&first, "M-AUTH-1"), (&second, "M-AUTH-2")] {
        let asset = send(
            &http_client(),
            Method::GET,
            &query.url(&format!("/assets/{id}")),
            None,
        )
        .await?
        .expect_status(200);
        assert_eq!(asset.body["state"]["tag"], tag, "{asset:?}");
    }
    let downstream = stream::read_all(&nats.args(NatsUser::Downstream)).await?;
    let pool = sqlx::PgPool::connect(&database.url).await?;
    let logged: i64 = sqlx::query_scalar("select count(*) from workflow_events")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    assert_eq!(downstream.len() as i64, logged, "every logged event, once");
    let created: Vec<String> = downstream
        .iter()
        .filter(|event| event.envelope.event_type.as_str() == "ASSET_CREATED")
        .map(|event| event.envelope.aggregate_id.to_string())
        .collect();
    assert_eq!(created, vec![first.clone(), second.clone()]);
    // The lists in the configuration are complete for all of the above.
    assert_eq!(nats.violations(), Vec::<String>::new());

    for service in [query, projection, command] {
        service.stop().await?;
    }
    Ok(())
}

/// A client of `user`'s, and the server errors it is told about.
async fn connect_watching(
    nats: &AuthNats,
    user: NatsUser,
) -> anyhow::Result<(async_nats::Client, mpsc::UnboundedReceiver<String>)> {
    let (errors, seen) = mpsc::unbounded_channel();
    let options = nats
        .users
        .credentials(user)
        .apply(
            async_nats::ConnectOptions::new().event_callback(move |event| {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors.send(error.to_string());
                }
                std::future::ready(())
            }),
        )
        .await?;
    Ok((options.connect(nats.server.url()).await?, seen))
}

/// The next server error containing `needle`, within 5 s.
async fn expect_server_error(
    seen: &mut mpsc::UnboundedReceiver<String>,
    needle: &str,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, seen.recv()).await {
            Ok(Some(error)) if error.contains(needle) => return Ok(error),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => anyhow::bail!("no server error containing {needle:?} within 5 s"),
        }
    }
}

#[tokio::test]
async fn the_read_side_users_cannot_publish_events_or_delete_the_stream() -> anyhow::Result<()> {
    // Arrange: the stream exists (made with the relay's own user).
    let nats = AuthNats::start().await?;
    let relay = stream::context(&nats.args(NatsUser::Command)).await?;
    synapse_shared::nats::ensure_stream(&relay, &nats.args(NatsUser::Command)).await?;
    let subject = "synapse.events.ELECTRICAL.asset.ASSET_CREATED";
    let forged = json!({"forged": true}).to_string();

    for user in [NatsUser::Projection, NatsUser::Query, NatsUser::Downstream] {
        // Act: publish a forged event, plainly and through JetStream, and delete the stream.
        let (client, mut seen) = connect_watching(&nats, user).await?;
        client.publish(subject, forged.clone().into()).await?;
        client.flush().await?;
        let plain = expect_server_error(&mut seen, "Permissions Violation for Publish").await?;
        let mut context = jetstream::new(client.clone());
        context.set_timeout(Duration::from_millis(500));
        let acknowledged = context.publish(subject, forged.clone().into()).await;
        let acknowledged = match acknowledged {
            Ok(ack) => ack.await.map(|_| ()).map_err(anyhow::Error::from),
            Err(error) => Err(error.into()),
        };
        let deleted = context.delete_stream("SYNAPSE_EVENTS").await;
        let delete_refusal =
            expect_server_error(&mut seen, "$JS.API.STREAM.DELETE.SYNAPSE_EVENTS").await?;

        // Assert: refused by the server, nothing stored, the stream still there.
        assert!(plain.contains(subject), "{user:?}: {plain}");
        assert!(
            acknowledged.is_err(),
            "{user:?}: a forged event was acknowledged"
        );
        assert!(deleted.is_err(), "{user:?}: the stream was deleted");
        assert!(
            delete_refusal.contains("Permissions Violation"),
            "{delete_refusal}"
        );
        let mut events = relay.get_stream("SYNAPSE_EVENTS").await?;
        assert_eq!(events.info().await?.state.messages, 0, "{user:?}");
        let logged = nats.violations();
        assert!(
            logged
                .iter()
                .any(|line| line.contains(user.name()) && line.contains(subject)),
            "the server log names {} and {subject}: {logged:#?}",
            user.name()
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_refused_nats_password_leaves_the_service_not_ready_and_says_why() -> anyhow::Result<()> {
    // Arrange: the real binaries, reading NATS_USER/NATS_PASSWORD from the environment.
    let nats = AuthNats::start().await?;
    let database = TestDatabase::create().await?;
    let wrong = NatsCredentials::user_password(NatsUser::Projection.name(), "not-the-password");
    let command_wrong =
        NatsCredentials::user_password(NatsUser::Command.name(), "not-the-password");

    // Act
    let projection = ServiceProcess::start(
        Service::Projection,
        ServiceEnv::new(&database, &args_as(&nats.server, wrong)),
    )
    .await?;
    let command =
        apps::command_service(&database, &args_as(&nats.server, command_wrong), true).await?;
    // Keep asking for 3 s: a refused login is retried, never half-accepted.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut probes = 0;
    while Instant::now() < deadline {
        let ready = wait_for_status(&projection.url("/readyz"), 503, Duration::ZERO).await?;
        assert!(ready.is_problem(), "{ready:?}");
        assert_eq!(ready.body["detail"], "nats is unreachable; retry later");
        probes += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let command_ready = wait_for_status(&command.url("/readyz"), 200, Duration::ZERO).await?;
    let accepted = create_motor(&command, "M-AUTH-3").await;

    // Assert
    assert!(probes >= 5, "{probes} probes");
    assert_eq!(
        command_ready.body,
        json!({"status": "ready", "postgres": "ok", "nats": "disconnected"}),
        "commands are still taken (the relay catches up), NATS shows as disconnected"
    );
    assert!(accepted.is_ok(), "{accepted:?}");
    assert!(
        projection
            .log()
            .contains("NATS refused this service's credentials"),
        "the service log says why:\n{}",
        projection.log()
    );
    assert!(
        nats.server
            .log()
            .contains(r#"authentication error - User "synapse-projection""#),
        "{}",
        nats.server.log()
    );
    command.stop().await?;
    Ok(())
}

#[tokio::test]
async fn contradictory_nats_credentials_stop_the_service_at_start() -> anyhow::Result<()> {
    // Arrange
    let database = TestDatabase::create().await?;
    let mut nats = synapse_tests::TestNats::new();
    nats.args.credentials = NatsCredentials {
        nats_user: Some("synapse-command".to_owned()),
        ..NatsCredentials::default()
    };

    // Act
    let started = apps::command_service(&database, &nats.args, true).await;

    // Assert
    let error = match started {
        Ok(_) => anyhow::bail!("the command service started with half a user/password pair"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("NATS_USER is set without NATS_PASSWORD"),
        "{error}"
    );
    Ok(())
}

/// A server configured by `text` (a file of the test's own, removed on drop).
struct ConfiguredNats {
    server: OwnNatsServer,
    file: std::path::PathBuf,
}

impl ConfiguredNats {
    async fn start(text: &str) -> anyhow::Result<Self> {
        let file = std::env::temp_dir().join(format!(
            "synapse-nats-{}.conf",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&file, text)?;
        let server = OwnNatsServer::start_with(NatsServerConfig {
            config_file: Some(file.clone()),
            env: Vec::new(),
        })
        .await?;
        Ok(Self { server, file })
    }
}

impl Drop for ConfiguredNats {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

#[tokio::test]
async fn a_service_logs_in_with_a_token_an_nkey_seed_file_or_a_user_in_its_url(
) -> anyhow::Result<()> {
    // Arrange: a server that wants a token, one that knows a user by its public nkey,
    // and one with the deployed users.
    let database = TestDatabase::create().await?;
    let token = format!("tok{}", uuid::Uuid::new_v4().simple());
    let token_nats =
        ConfiguredNats::start(&format!("authorization {{ token: \"{token}\" }}")).await?;
    let user = nkeys::KeyPair::new_user();
    let nkey_nats = ConfiguredNats::start(&format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}",
        user.public_key()
    ))
    .await?;
    let users_nats = AuthNats::start().await?;
    let seed_file = nkey_nats.file.with_extension("nk");
    std::fs::write(&seed_file, format!("{}\n", user.seed()?))?;

    // Act
    let with_token = NatsCredentials {
        nats_token: Some(synapse_shared::auth::Secret::new(token)),
        ..NatsCredentials::default()
    };
    let with_nkey = NatsCredentials {
        nats_nkey_file: Some(seed_file.clone()),
        ..NatsCredentials::default()
    };
    let token_service =
        apps::projection_service(&database, &args_as(&token_nats.server, with_token)).await?;
    let nkey_service =
        apps::projection_service(&database, &args_as(&nkey_nats.server, with_nkey)).await?;
    let in_url = users_nats.args(NatsUser::Projection);
    let password = in_url.credentials.nats_password.clone();
    let url_service = apps::projection_service(
        &database,
        &NatsArgs {
            nats_url: format!(
                "nats://synapse-projection:{}@127.0.0.1:{}",
                password
                    .as_ref()
                    .map(|secret| secret.expose())
                    .unwrap_or_default(),
                users_nats.server.port
            ),
            credentials: NatsCredentials::default(),
            ..in_url
        },
    )
    .await?;
    let anonymous_service = apps::projection_service(
        &database,
        &args_as(&nkey_nats.server, NatsCredentials::default()),
    )
    .await?;

    // Assert: all three logged in; without credentials the nkey server refuses.
    let token_ready =
        wait_for_status(&token_service.url("/readyz"), 200, Duration::from_secs(20)).await;
    let nkey_ready =
        wait_for_status(&nkey_service.url("/readyz"), 200, Duration::from_secs(20)).await;
    let url_ready =
        wait_for_status(&url_service.url("/readyz"), 200, Duration::from_secs(20)).await;
    let anonymous = wait_for_status(&anonymous_service.url("/readyz"), 503, Duration::ZERO).await;
    std::fs::remove_file(&seed_file)?;
    token_ready?;
    nkey_ready?;
    url_ready?;
    anonymous?;
    for service in [token_service, nkey_service, url_service, anonymous_service] {
        service.stop().await?;
    }
    Ok(())
}
