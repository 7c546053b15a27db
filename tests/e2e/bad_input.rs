//! Property: whatever a client sends to a command or query endpoint, the answer is
//! never a 5xx, every 4xx is problem+json, and a refused request writes nothing.

use proptest::prelude::*;
use reqwest::Method;
use serde_json::{json, Map, Value};
use sqlx::PgPool;
use synapse_tests::apps;
use synapse_tests::arbitrary::json_non_strings;
use synapse_tests::client::http_client;
use synapse_tests::{TestDatabase, TestNats};

/// Arbitrary JSON, biased towards the field names the endpoints know.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        4 => json_non_strings(),
        1 => "[ -~]{0,12}".prop_map(Value::String),
        1 => Just(json!("asset.tag == 'M-1'")),
        1 => Just(json!("asset.colour > )")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let key = prop_oneof![
            Just("tag".to_owned()),
            Just("asset_type".to_owned()),
            Just("discipline".to_owned()),
            Just("properties".to_owned()),
            Just("name".to_owned()),
            Just("when".to_owned()),
            Just("then".to_owned()),
            Just("type".to_owned()),
            Just("rule_ids".to_owned()),
            Just("filters".to_owned()),
            Just("correlation_id".to_owned()),
            Just("mode".to_owned()),
            Just("dry_run".to_owned()),
            Just("from_asset".to_owned()),
            Just("kind".to_owned()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/assets"),
    ("PATCH", "/assets/00000000-0000-0000-0000-000000000001"),
    ("POST", "/rules"),
    ("POST", "/rules/execute"),
    ("POST", "/rules/rollback"),
    ("POST", "/cables"),
    ("POST", "/relationships"),
];

async fn check(requests: Vec<(usize, Value, Vec<u8>)>) -> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, false).await?;
    let http = http_client();
    let pool = PgPool::connect(&database.url).await?;
    for (endpoint, body, raw) in requests {
        let (method, path) = ENDPOINTS[endpoint % ENDPOINTS.len()];
        let method = Method::from_bytes(method.as_bytes())?;
        let before = synapse_shared::event_log::head(&pool).await?;
        let json_reply = http
            .request(method.clone(), command.url(path))
            .json(&body)
            .send()
            .await?;
        let csv_reply = http
            .post(command.url("/assets/import"))
            .header("content-type", "text/csv")
            .body(raw)
            .send()
            .await?;
        for reply in [json_reply, csv_reply] {
            let status = reply.status().as_u16();
            let content_type = reply
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            anyhow::ensure!(
                status < 500,
                "{method} {path} with {body} answered {status}"
            );
            if status >= 400 {
                anyhow::ensure!(
                    content_type == "application/problem+json",
                    "{status} without problem+json: {content_type}"
                );
            }
        }
        let after = synapse_shared::event_log::head(&pool).await?;
        // A write happens only for a valid request; then the log grows, never shrinks.
        anyhow::ensure!(after >= before, "the log shrank");
    }
    command.stop().await
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, max_shrink_iters: 10, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bodies_never_get_a_5xx_and_every_refusal_is_a_problem(
        requests in prop::collection::vec((0..7usize, json_value(), prop::collection::vec(any::<u8>(), 0..200)), 20..40)
    ) {
        let runtime = tokio::runtime::Runtime::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime.block_on(check(requests)).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }
}

async fn check_queries(queries: Vec<String>) -> anyhow::Result<()> {
    let system = apps::System::start().await?;
    for query in queries {
        for path in [
            "/events/timeline",
            "/batches",
            "/events/assets/00000000-0000-0000-0000-000000000001/history",
            "/assets/export.csv",
        ] {
            let reply = system
                .http
                .get(format!("{}?{query}", system.query.url(path)))
                .send()
                .await?;
            let status = reply.status().as_u16();
            let content_type = reply
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            anyhow::ensure!(status < 500, "GET {path}?{query} answered {status}");
            if status >= 400 {
                anyhow::ensure!(
                    content_type == "application/problem+json",
                    "{status} without problem+json: {content_type}"
                );
            }
            // The whole body, as a client reads it (an export streams it).
            reply.bytes().await?;
        }
    }
    Ok(())
}

/// Query strings built from the real filter names and hostile values.
fn query_string() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("asset_id"),
        Just("correlation_id"),
        Just("event_type"),
        Just("rule_id"),
        Just("discipline"),
        Just("actor"),
        Just("from"),
        Just("to"),
        Just("include_rolled_back"),
        Just("after"),
        Just("limit"),
        Just("status"),
        Just("kind"),
        Just("sort"),
        Just("asset_type"),
        Just("x"),
    ];
    let value = prop_oneof![
        "[ -~]{0,16}".prop_map(|s| s.replace(['&', '#', '?'], "")),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("ASSET_CREATED,NOPE".to_owned()),
        Just("2026-13-40T99:00:00Z".to_owned()),
        Just("'; drop table rm_events; --".to_owned()),
    ];
    prop::collection::vec((name, value), 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(name, value)| {
                format!(
                    "{name}={}",
                    value
                        .replace(' ', "%20")
                        .replace('%', "%25")
                        .replace("%2520", "%20")
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, max_shrink_iters: 10, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_query_strings_never_get_a_5xx(queries in prop::collection::vec(query_string(), 20..40)) {
        let runtime = tokio::runtime::Runtime::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime.block_on(check_queries(queries)).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }
}

/// `body` sent as it is written, as JSON, to the command service.
async fn send_text(
    system: &apps::System,
    method: Method,
    path: &str,
    body: &str,
) -> anyhow::Result<synapse_tests::client::Reply> {
    let reply = system
        .http
        .request(method, system.command.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    synapse_tests::client::Reply::from(reply).await
}

/// Found by schemathesis (deploy/schemathesis.sh): Postgres cannot store U+0000, and
/// each of these reached the database and answered 500.
#[tokio::test]
async fn a_nul_character_in_a_body_query_or_path_is_a_400_problem_and_writes_nothing(
) -> anyhow::Result<()> {
    // Arrange
    let system = apps::System::start().await?;
    let http = &system.http;
    let pool = PgPool::connect(&system.database.url).await?;
    let before = synapse_shared::event_log::head(&pool).await?;
    let bodies = [
        (
            "/assets",
            json!({"tag": "M-1", "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL",
                   "properties": {"note": "a\u{0}b"}}),
        ),
        (
            "/rules/execute",
            json!({"dry_run": true, "filters": {"asset_types": ["\u{0}"], "tag": "M-\u{0}"}}),
        ),
    ];
    let queries = [
        "/events/timeline?actor=a%00b",
        "/events/timeline?discipline=a%00b",
        "/batches?actor=a%00",
        "/disciplines/a%00b",
    ];

    // Act
    let mut replies = Vec::new();
    for (path, body) in bodies {
        let reply = http
            .post(system.command.url(path))
            .json(&body)
            .send()
            .await?;
        replies.push((
            path.to_owned(),
            synapse_tests::client::Reply::from(reply).await?,
        ));
    }
    for path in queries {
        let reply = http.get(system.query.url(path)).send().await?;
        replies.push((
            path.to_owned(),
            synapse_tests::client::Reply::from(reply).await?,
        ));
    }
    let after = synapse_shared::event_log::head(&pool).await?;

    // Assert
    for (path, reply) in &replies {
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
        assert!(reply.is_problem(), "{path}: {reply:?}");
        assert_eq!(
            reply.body["type"], "/problems/nul-character",
            "{path}: {reply:?}"
        );
    }
    assert_eq!(after, before, "nothing appended");
    // An escaped backslash before `u0000` is not a NUL: that body is accepted.
    let literal = http
        .post(system.command.url("/assets"))
        .json(
            &json!({"tag": "M-2", "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL",
                      "properties": {"path": "C:\\u0000"}}),
        )
        .send()
        .await?;
    assert_eq!(literal.status().as_u16(), 201);
    Ok(())
}

/// serde_json reads an integer beyond 64 bits as a float: a serial number sent as one
/// was stored with other digits (`1.2345678901234568e23`).
#[tokio::test]
async fn an_integer_beyond_64_bits_in_a_body_is_a_422_problem_and_writes_nothing(
) -> anyhow::Result<()> {
    // Arrange
    let system = apps::System::start().await?;
    let http = &system.http;
    let pool = PgPool::connect(&system.database.url).await?;
    let before = synapse_shared::event_log::head(&pool).await?;
    let bodies = [
        (
            Method::POST,
            "/assets",
            "{\"tag\": \"M-1\", \"asset_type\": \"ELECTRIC_MOTOR\", \"discipline\": \"ELECTRICAL\",\n \"properties\": {\"serial\": 123456789012345678901234}}",
            "123456789012345678901234 at line 2, column 27",
        ),
        (
            Method::PATCH,
            "/assets/00000000-0000-0000-0000-000000000001",
            r#"{"properties": {"ok": "123456789012345678901234", "n": -9223372036854775809}}"#,
            "-9223372036854775809 at line 1, column 56",
        ),
        // A typed field: before, 422 "invalid type: floating point `1e20`".
        (
            Method::PATCH,
            "/assets/00000000-0000-0000-0000-000000000001",
            r#"{"expected_version": 99999999999999999999}"#,
            "99999999999999999999 at line 1, column 22",
        ),
    ];

    // Act
    let mut replies = Vec::new();
    for (method, path, body, _) in &bodies {
        replies.push(send_text(&system, method.clone(), path, body).await?);
    }
    let after = synapse_shared::event_log::head(&pool).await?;

    // Assert
    for ((_, path, _, place), reply) in bodies.iter().zip(&replies) {
        assert_eq!(reply.status, 422, "{path}: {reply:?}");
        assert!(reply.is_problem(), "{path}: {reply:?}");
        assert_eq!(reply.body["type"], "/problems/integer-out-of-range");
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with(place), "{path}: {detail}");
    }
    assert_eq!(after, before, "nothing appended");
    // The largest integer that fits, and the big one as a string, keep their digits.
    let created = http
        .post(system.command.url("/assets"))
        .header("content-type", "application/json")
        .body(
            r#"{"tag": "M-2", "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL",
                "properties": {"max": 9223372036854775807, "serial": "123456789012345678901234"}}"#,
        )
        .send()
        .await?;
    assert_eq!(created.status().as_u16(), 201);
    let (stored,): (String,) =
        sqlx::query_as("select properties::text from assets where tag = 'M-2'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        stored,
        r#"{"max": 9223372036854775807, "serial": "123456789012345678901234"}"#
    );
    Ok(())
}

#[tokio::test]
async fn a_key_named_twice_in_an_object_of_a_body_is_a_422_problem_and_writes_nothing(
) -> anyhow::Result<()> {
    // Arrange: before, the last of two values of a property was stored and the first
    // dropped without a word.
    let system = apps::System::start().await?;
    let pool = PgPool::connect(&system.database.url).await?;
    let before = synapse_shared::event_log::head(&pool).await?;
    let bodies = [
        (
            "/assets",
            r#"{"tag": "M-1", "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL",
 "properties": {"rated_power_kw": 55, "rated_power_kw": 75}}"#,
            "the key `rated_power_kw` appears twice in one object at line 2 column 54",
        ),
        (
            "/rules",
            r#"{"name": "r", "discipline": "ELECTRICAL", "when": "true",
 "then": [{"type": "upsert_asset", "tag": "{asset.tag}-X", "asset_type": "X", "discipline": "ELECTRICAL",
  "properties": {"kw": "1", "kw": "2"}}]}"#,
            "the key `kw` appears twice in one object at line 3 column 32",
        ),
        (
            "/rules/execute",
            r#"{"dry_run": true, "filters": {"tag": "M-*", "tag": "P-*"}}"#,
            "the key `tag` appears twice in one object at line 1 column 49",
        ),
    ];

    // Act
    let mut replies = Vec::new();
    for (path, body, _) in &bodies {
        replies.push(send_text(&system, Method::POST, path, body).await?);
    }
    let after = synapse_shared::event_log::head(&pool).await?;

    // Assert
    for ((path, _, place), reply) in bodies.iter().zip(&replies) {
        assert_eq!(reply.status, 422, "{path}: {reply:?}");
        assert!(reply.is_problem(), "{path}: {reply:?}");
        assert_eq!(reply.body["type"], "/problems/repeated-key");
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with(place), "{path}: {detail}");
    }
    assert_eq!(after, before, "nothing appended");
    let (assets, rules): (i64, i64) =
        sqlx::query_as("select (select count(*) from assets), (select count(*) from rules)")
            .fetch_one(&pool)
            .await?;
    assert_eq!((assets, rules), (0, 0));
    Ok(())
}

/// A method a route does not serve, and a plain GET of the live feed, were answered
/// with an empty or a text body: every refusal is a problem.
#[tokio::test]
async fn a_wrong_method_or_a_get_of_the_live_feed_without_a_handshake_is_a_problem(
) -> anyhow::Result<()> {
    // Arrange
    let system = apps::System::start().await?;
    let http = &system.http;
    let relationship = system
        .command
        .url("/relationships/00000000-0000-0000-0000-000000000001");
    let viewer = synapse_tests::auth::bearer(
        synapse_tests::auth::Role::Viewer,
        synapse_tests::drive::VIEWER,
    );

    // Act
    let mut refused = Vec::new();
    for (method, url) in [
        (Method::PATCH, relationship),
        (Method::POST, system.query.url("/batches")),
        (Method::PUT, system.query.url("/ws")),
        (Method::POST, system.projection.url("/healthz")),
    ] {
        let reply = http.request(method.clone(), &url).send().await?;
        let allow = reply.headers().get("allow").cloned();
        refused.push((
            format!("{method} {url}"),
            allow,
            synapse_tests::client::Reply::from(reply).await?,
        ));
    }
    let plain_get = http
        .get(system.query.url("/ws"))
        .header("authorization", &viewer)
        .send()
        .await?;
    let plain_get = synapse_tests::client::Reply::from(plain_get).await?;

    // Assert
    for (request, allow, reply) in &refused {
        assert_eq!(reply.status, 405, "{request}: {reply:?}");
        assert!(reply.is_problem(), "{request}: {reply:?}");
        assert_eq!(reply.body["type"], "/problems/method-not-allowed");
        assert!(allow.is_some(), "{request}: no Allow header");
    }
    assert_eq!(plain_get.status, 400, "{plain_get:?}");
    assert!(plain_get.is_problem(), "{plain_get:?}");
    assert_eq!(
        plain_get.body["type"],
        "/problems/not-a-websocket-handshake"
    );
    assert!(
        plain_get.body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("upgrade")),
        "{plain_get:?}"
    );
    Ok(())
}

/// Routes that take no query string ignored one: `?dry_run=true` on an execute ran it
/// for real, `?expected_version=` on a patch dropped the check it asked for.
#[tokio::test]
async fn a_query_string_on_a_command_that_takes_none_is_a_400_problem_and_writes_nothing(
) -> anyhow::Result<()> {
    // Arrange
    let system = apps::System::start().await?;
    let http = &system.http;
    let pool = PgPool::connect(&system.database.url).await?;
    let created = http
        .post(system.command.url("/assets"))
        .json(&json!({"tag": "M-1", "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL"}))
        .send()
        .await?;
    assert_eq!(created.status().as_u16(), 201);
    let before = synapse_shared::event_log::head(&pool).await?;
    let (id,): (uuid::Uuid,) = sqlx::query_as("select id from assets")
        .fetch_one(&pool)
        .await?;
    let requests = [
        (
            Method::POST,
            "/rules/execute?dry_run=true".to_owned(),
            json!({}),
        ),
        (
            Method::PATCH,
            format!("/assets/{id}?expected_version=9"),
            json!({"name": "Motor"}),
        ),
        (
            Method::POST,
            "/assets?zzz=1".to_owned(),
            json!({"tag": "M-2", "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL"}),
        ),
        (Method::GET, "/rules?enabled=true".to_owned(), Value::Null),
    ];

    // Act
    let mut replies = Vec::new();
    for (method, path, body) in requests {
        let mut request = http.request(method.clone(), system.command.url(&path));
        if !body.is_null() {
            request = request.json(&body);
        }
        let reply = synapse_tests::client::Reply::from(request.send().await?).await?;
        replies.push((format!("{method} {path}"), reply));
    }

    // Assert
    for (request, reply) in &replies {
        assert_eq!(reply.status, 400, "{request}: {reply:?}");
        assert!(reply.is_problem(), "{request}: {reply:?}");
        assert_eq!(reply.body["type"], "/problems/invalid-query", "{request}");
    }
    assert_eq!(
        synapse_shared::event_log::head(&pool).await?,
        before,
        "nothing appended"
    );
    Ok(())
}
