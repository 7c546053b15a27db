//! Access control end to end: bearer tokens, roles, the actor on events, and the
//! explicit (never default) way to switch authentication off.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Duration;
use synapse_shared::auth::{issue_token, AuthArgs, Role, DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use synapse_shared::EventEnvelope;
use synapse_tests::auth::TEST_SECRET;
use synapse_tests::client::{http_client, http_client_as, send, Reply};
use synapse_tests::plant::{pump_flag_rule, small_plant};
use synapse_tests::{apps, TestDatabase, TestNats};

struct Setup {
    _database: TestDatabase,
    _nats: TestNats,
    command: apps::Running,
    pool: PgPool,
}

async fn setup(auth: AuthArgs) -> anyhow::Result<Setup> {
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service_with_auth(&database, &nats.args, false, auth).await?;
    let pool = PgPool::connect(&database.url).await?;
    Ok(Setup {
        _database: database,
        _nats: nats,
        command,
        pool,
    })
}

impl Setup {
    async fn send(
        &self,
        http: &reqwest::Client,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        send(http, method, &self.command.url(path), body).await
    }

    async fn events(&self) -> anyhow::Result<Vec<EventEnvelope>> {
        Ok(synapse_shared::event_log::read_after(&self.pool, 0, 100_000).await?)
    }
}

/// A client whose requests carry exactly this `Authorization` header value.
fn client_with_token(token: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

fn claims(exp_offset_secs: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": "mallory", "role": "admin", "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE,
           "iat": now, "exp": now + exp_offset_secs})
}

fn motor(tag: &str) -> Value {
    json!({"tag": tag, "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL",
           "properties": {"rated_power_kw": 75}})
}

fn assert_refused(reply: &Reply, status: u16, kind: &str) {
    assert_eq!(reply.status, status, "{reply:#?}");
    assert!(reply.is_problem(), "{reply:#?}");
    assert_eq!(
        reply.body["type"],
        format!("/problems/{kind}"),
        "{reply:#?}"
    );
}

#[tokio::test]
async fn a_request_without_a_token_is_a_401_problem_with_a_bearer_challenge() -> anyhow::Result<()>
{
    // Arrange
    let setup = setup(synapse_tests::auth::args()).await?;
    let anonymous = reqwest::Client::new();

    // Act
    let create = anonymous
        .post(setup.command.url("/assets"))
        .json(&motor("M-1"))
        .send()
        .await?;
    let challenge = create
        .headers()
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let create = Reply::from(create).await?;
    let list = setup.send(&anonymous, Method::GET, "/rules", None).await?;
    let health = anonymous.get(setup.command.url("/healthz")).send().await?;
    let openapi = setup
        .send(&anonymous, Method::GET, "/openapi.json", None)
        .await?;

    // Assert
    assert_refused(&create, 401, "unauthenticated");
    assert!(challenge.is_some_and(|value| value.starts_with("Bearer")));
    assert_refused(&list, 401, "unauthenticated");
    assert_eq!(health.status(), 200, "health stays open");
    assert_eq!(
        health.json::<Value>().await?,
        json!({"status": "ok"}),
        "as the other services answer"
    );
    assert_eq!(openapi.status, 200, "the API description stays open");
    assert_eq!(
        openapi.body["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(openapi.body["paths"]["/rules/rollback"]["post"]["responses"]["403"].is_object());
    // The probes are documented, open, without refusals.
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let operation = &openapi.body["paths"][probe]["get"];
        assert_eq!(operation["security"], json!([{}]), "{probe}: {operation}");
        assert!(
            operation["responses"]["401"].is_null(),
            "{probe}: {operation}"
        );
    }
    assert!(setup.events().await?.is_empty());
    Ok(())
}

/// The head of the answer to `request`, sent on a new connection to `address`.
async fn answer_head(address: &str, request: &[u8]) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(request).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await??;
        anyhow::ensure!(read == 1, "connection closed in the answer's head");
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).to_lowercase())
}

#[tokio::test]
async fn a_refusal_before_the_body_was_read_tells_the_client_to_close_the_connection(
) -> anyhow::Result<()> {
    // Arrange: a 200 kB body the service never reads (no token), and one it reads.
    let setup = setup(synapse_tests::auth::args()).await?;
    let address = setup
        .command
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let body = format!(
        "{{\"tag\": \"M-1\", \"name\": \"{}\"}}",
        "a".repeat(200_000)
    );
    let unread = format!(
        "POST /assets HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let token = synapse_tests::auth::token(Role::Engineer, "test-engineer");
    let small = r#"{"tag": "M-1"}"#;
    let read = format!(
        "POST /assets HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{small}",
        small.len()
    );

    // Act
    let refused = answer_head(&address, unread.as_bytes()).await?;
    let invalid = answer_head(&address, read.as_bytes()).await?;

    // Assert: hyper closes a connection whose request body is left unread; the
    // answer says so (before, it did not, and a client's next request on it failed).
    assert!(refused.starts_with("http/1.1 401"), "{refused}");
    assert!(refused.contains("\r\nconnection: close\r\n"), "{refused}");
    // A body read to its end (an invalid asset) leaves the connection open.
    assert!(invalid.starts_with("http/1.1 422"), "{invalid}");
    assert!(!invalid.contains("connection: close"), "{invalid}");
    Ok(())
}

#[tokio::test]
async fn expired_foreign_forged_and_other_algorithm_tokens_are_all_401() -> anyhow::Result<()> {
    // Arrange
    let setup = setup(synapse_tests::auth::args()).await?;
    let key = EncodingKey::from_secret(TEST_SECRET.as_bytes());
    let hour = Duration::from_secs(3600);
    let expired = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(-120), &key)?;
    let hs512 = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims(3600), &key)?;
    let unsigned = {
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
        let valid = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(3600), &key)?;
        let payload = valid.split('.').nth(1).unwrap_or_default().to_owned();
        format!("{header}.{payload}.")
    };
    let foreign_issuer = issue_token(
        TEST_SECRET,
        "mallory",
        Role::Admin,
        hour,
        "someone-else",
        DEFAULT_AUDIENCE,
    )?;
    let foreign_audience = issue_token(
        TEST_SECRET,
        "mallory",
        Role::Admin,
        hour,
        DEFAULT_ISSUER,
        "another-api",
    )?;
    let forged = issue_token(
        "a-secret-the-service-has-never-heard-of!!",
        "mallory",
        Role::Admin,
        hour,
        DEFAULT_ISSUER,
        DEFAULT_AUDIENCE,
    )?;
    let cases = [
        ("expired", expired),
        ("HS512", hs512),
        ("alg none", unsigned),
        ("foreign issuer", foreign_issuer),
        ("foreign audience", foreign_audience),
        ("forged", forged),
        ("garbage", "not.a.token".to_owned()),
    ];

    for (case, token) in cases {
        // Act
        let reply = setup
            .send(
                &client_with_token(&token)?,
                Method::POST,
                "/assets",
                Some(&motor("M-1")),
            )
            .await?;

        // Assert
        assert_eq!(reply.status, 401, "{case}: {reply:#?}");
        assert!(reply.is_problem(), "{case}");
        assert_eq!(reply.body["type"], "/problems/invalid-token", "{case}");
    }
    assert!(setup.events().await?.is_empty(), "nothing was written");
    Ok(())
}

#[tokio::test]
async fn a_viewer_reads_rules_but_cannot_change_import_or_execute_and_writes_nothing(
) -> anyhow::Result<()> {
    // Arrange
    let setup = setup(synapse_tests::auth::args()).await?;
    let viewer = http_client_as(Role::Viewer, "vera");
    let csv = "tag,asset_type,discipline\nM-9,ELECTRIC_MOTOR,ELECTRICAL\n";

    // Act
    let list = setup.send(&viewer, Method::GET, "/rules", None).await?;
    let create = setup
        .send(&viewer, Method::POST, "/assets", Some(&motor("M-1")))
        .await?;
    let import = Reply::from(
        viewer
            .post(setup.command.url("/assets/import"))
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await?,
    )
    .await?;
    let execute = setup
        .send(
            &viewer,
            Method::POST,
            "/rules/execute",
            Some(&json!({"dry_run": true})),
        )
        .await?;
    let define = setup
        .send(&viewer, Method::POST, "/rules", Some(&pump_flag_rule()))
        .await?;

    // Assert
    list.expect_status(200);
    for refused in [&create, &import, &execute, &define] {
        assert_refused(refused, 403, "forbidden");
    }
    assert!(setup.events().await?.is_empty(), "nothing was written");
    Ok(())
}

#[tokio::test]
async fn an_engineer_executes_rules_but_cannot_define_them_or_roll_back() -> anyhow::Result<()> {
    // Arrange
    let setup = setup(synapse_tests::auth::args()).await?;
    let admin = http_client();
    let engineer = http_client_as(Role::Engineer, "erin");
    for asset in small_plant() {
        setup
            .send(&engineer, Method::POST, "/assets", Some(&asset))
            .await?
            .expect_status(201);
    }
    let rule = setup
        .send(&admin, Method::POST, "/rules", Some(&pump_flag_rule()))
        .await?
        .expect_status(201);
    let rule_id = rule.body["id"].clone();

    // Act
    let executed = setup
        .send(
            &engineer,
            Method::POST,
            "/rules/execute",
            Some(&json!({"rule_ids": [rule_id], "wait": true})),
        )
        .await?
        .expect_status(200);
    let batch = executed.body["correlation_id"].clone();
    let rollback = setup
        .send(
            &engineer,
            Method::POST,
            "/rules/rollback",
            Some(&json!({"correlation_id": batch})),
        )
        .await?;
    let define = setup
        .send(&engineer, Method::POST, "/rules", Some(&pump_flag_rule()))
        .await?;
    let revise = setup
        .send(
            &engineer,
            Method::PUT,
            &format!("/rules/{}", rule_id.as_str().unwrap_or_default()),
            Some(&pump_flag_rule()),
        )
        .await?;

    // Assert
    assert_eq!(executed.body["status"], "completed", "{:#?}", executed.body);
    for refused in [&rollback, &define, &revise] {
        assert_refused(refused, 403, "forbidden");
    }
    let events = setup.events().await?;
    assert!(
        !events
            .iter()
            .any(|event| event.event_type.as_str().contains("ROLLED_BACK")),
        "no rollback happened"
    );
    let admin_rollback = setup
        .send(
            &admin,
            Method::POST,
            "/rules/rollback",
            Some(&json!({"correlation_id": batch})),
        )
        .await?;
    admin_rollback.expect_status(200);
    Ok(())
}

#[tokio::test]
async fn the_actor_on_events_is_the_token_subject_whatever_the_request_claims() -> anyhow::Result<()>
{
    // Arrange
    let setup = setup(synapse_tests::auth::args()).await?;
    let engineer = http_client_as(Role::Engineer, "erin");

    // Act: a header and a query parameter naming someone else.
    let created = Reply::from(
        engineer
            .post(setup.command.url("/assets"))
            .header("x-synapse-actor", "mallory")
            .json(&motor("M-1"))
            .send()
            .await?,
    )
    .await?
    .expect_status(201);
    let id = created.body["asset"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // A body that names an actor is not a way in either: it is refused as unknown.
    let smuggled = setup
        .send(
            &engineer,
            Method::PATCH,
            &format!("/assets/{id}"),
            Some(&json!({"name": "x", "actor": "mallory"})),
        )
        .await?;
    Reply::from(
        engineer
            .patch(setup.command.url(&format!("/assets/{id}")))
            .header("x-synapse-actor", "mallory")
            .json(&json!({"name": "Feed pump motor"}))
            .send()
            .await?,
    )
    .await?
    .expect_status(200);

    // Assert
    assert_eq!(smuggled.status, 422, "{smuggled:#?}");
    let events = setup.events().await?;
    assert!(events.len() >= 2, "{events:#?}");
    assert!(
        events.iter().all(|event| event.actor == "erin"),
        "{:?}",
        events.iter().map(|event| &event.actor).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn with_auth_explicitly_disabled_requests_pass_as_the_admin_auth_disabled(
) -> anyhow::Result<()> {
    // Arrange
    let setup = setup(AuthArgs::disabled()).await?;
    let anonymous = reqwest::Client::new();

    // Act
    let created = setup
        .send(&anonymous, Method::POST, "/assets", Some(&motor("M-1")))
        .await?;
    let rule = setup
        .send(&anonymous, Method::POST, "/rules", Some(&pump_flag_rule()))
        .await?;

    // Assert
    created.expect_status(201);
    rule.expect_status(201);
    let events = setup.events().await?;
    assert!(!events.is_empty());
    assert!(events.iter().all(|event| event.actor == "auth-disabled"));
    Ok(())
}

#[tokio::test]
async fn a_service_with_neither_a_secret_nor_auth_disabled_refuses_to_start() -> anyhow::Result<()>
{
    // Arrange
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let mut unconfigured = synapse_tests::auth::args();
    unconfigured.jwt_secret = None;

    // Act
    let started = apps::command_service_with_auth(&database, &nats.args, false, unconfigured).await;

    // Assert
    let error = started.err().map(|error| format!("{error:#}"));
    assert!(
        error.as_deref().is_some_and(
            |message| message.contains("JWT_SECRET") && message.contains("AUTH_DISABLED")
        ),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_live_feed_ticket_is_not_an_api_token_and_an_api_token_is_not_a_ticket(
) -> anyhow::Result<()> {
    // Arrange: the whole system; a viewer exchanges their token for a ticket.
    let system = apps::System::start().await?;
    let viewer = http_client_as(Role::Viewer, "vera");
    let ticket = send(&viewer, Method::POST, &system.query.url("/ws/ticket"), None)
        .await?
        .expect_status(200)
        .body["ticket"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let api_token = synapse_tests::token(Role::Viewer, "vera");
    let ws_url = |query: &str| format!("ws://127.0.0.1:{}/ws?{query}", system.query.port);
    // A query string the ticket route does not take is refused, not ignored.
    let with_query = send(
        &viewer,
        Method::POST,
        &system.query.url("/ws/ticket?role=admin"),
        None,
    )
    .await?;
    assert_eq!(with_query.status, 400, "{:?}", with_query.body);
    assert!(with_query.is_problem());

    // Act
    let ticket_as_bearer_on_commands = send(
        &client_with_token(&ticket)?,
        Method::GET,
        &system.command.url("/rules"),
        None,
    )
    .await?;
    let ticket_as_bearer_on_queries = send(
        &client_with_token(&ticket)?,
        Method::GET,
        &system.query.url("/events/timeline"),
        None,
    )
    .await?;
    let token_as_ticket =
        synapse_tests::ws::connect_with(&ws_url(&format!("ticket={api_token}")), None, None).await;
    let with_ticket =
        synapse_tests::ws::connect_with(&ws_url(&format!("ticket={ticket}")), None, None).await;
    let ticket_again =
        synapse_tests::ws::connect_with(&ws_url(&format!("ticket={ticket}")), None, None).await;
    let without_anything = synapse_tests::ws::connect_with(&ws_url(""), None, None).await;

    // Assert
    assert_refused(&ticket_as_bearer_on_commands, 401, "invalid-token");
    assert_refused(&ticket_as_bearer_on_queries, 401, "invalid-token");
    let refused_401 = |connected: &Result<_, anyhow::Error>| {
        let refusal = connected.as_ref().err().map(|error| error.to_string());
        assert!(
            refusal
                .as_deref()
                .is_some_and(|error| error.contains("401")),
            "{refusal:?}"
        );
    };
    refused_401(&token_as_ticket);
    assert!(with_ticket.is_ok(), "{:?}", with_ticket.err());
    // A ticket opens one connection (it travels in a URL, which logs may keep).
    refused_401(&ticket_again);
    refused_401(&without_anything);
    Ok(())
}

#[tokio::test]
async fn every_documented_route_of_both_services_refuses_a_caller_without_a_token(
) -> anyhow::Result<()> {
    // Arrange: a guard for routes added later: anything in the OpenAPI documents but
    // health, readiness and metrics needs a token (the WebSocket has its own test).
    let system = apps::System::start().await?;
    let anonymous = reqwest::Client::new();
    let open = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/ws"];
    let mut checked = Vec::new();

    for service in [&system.command, &system.query] {
        let document = send(&anonymous, Method::GET, &service.url("/openapi.json"), None)
            .await?
            .expect_status(200)
            .body;
        let paths = document["paths"].as_object().cloned().unwrap_or_default();
        for (path, operations) in paths {
            if open.contains(&path.as_str()) {
                continue;
            }
            let concrete = path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        "00000000-0000-0000-0000-000000000000"
                    } else {
                        segment
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            for method in operations
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                let Ok(method) = method.to_uppercase().parse::<Method>() else {
                    continue;
                };
                // Act
                let reply = send(
                    &anonymous,
                    method.clone(),
                    &service.url(&concrete),
                    Some(&json!({})),
                )
                .await?;

                // Assert
                assert_eq!(reply.status, 401, "{method} {path}: {reply:#?}");
                checked.push(format!("{method} {path}"));
            }
        }
    }
    assert!(checked.len() >= 14, "{checked:?}");
    Ok(())
}

#[tokio::test]
async fn every_documented_error_response_of_both_services_is_a_problem() -> anyhow::Result<()> {
    // Arrange
    let system = apps::System::start().await?;
    let anonymous = reqwest::Client::new();
    let mut errors = Vec::new();

    for service in [&system.command, &system.query] {
        // Act
        let document = send(&anonymous, Method::GET, &service.url("/openapi.json"), None)
            .await?
            .expect_status(200)
            .body;

        // Assert: what an error answer is sent as is what the document says it is.
        let paths = document["paths"].as_object().cloned().unwrap_or_default();
        for (path, operations) in paths {
            for (method, operation) in operations.as_object().cloned().unwrap_or_default() {
                let responses = operation["responses"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for (status, response) in responses {
                    let Some(content) = response["content"].as_object() else {
                        continue;
                    };
                    if status.starts_with('4') || status.starts_with('5') {
                        let types: Vec<&String> = content.keys().collect();
                        assert_eq!(
                            types,
                            ["application/problem+json"],
                            "{method} {path} {status}"
                        );
                        errors.push(format!("{method} {path} {status}"));
                    }
                }
            }
        }
    }
    assert!(errors.len() >= 30, "{errors:?}");
    Ok(())
}
