//! Asset commands: versions, conflicts, bad input and idempotency.

use serde_json::json;
use sqlx::PgPool;
use synapse_tests::apps;
use synapse_tests::client::send;
use synapse_tests::{TestDatabase, TestNats};

async fn log_count(pool: &PgPool) -> anyhow::Result<i64> {
    let (count,): (i64,) = sqlx::query_as("select count(*) from workflow_events")
        .fetch_one(pool)
        .await?;
    Ok(count)
}

fn motor(tag: &str) -> serde_json::Value {
    json!({"tag": tag, "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL",
           "properties": {"rated_power_kw": 75}})
}

#[tokio::test]
async fn a_stale_expected_version_is_a_409_problem_and_appends_nothing() -> anyhow::Result<()> {
    // Arrange
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, false).await?;
    let http = synapse_tests::client::http_client();
    let pool = PgPool::connect(&database.url).await?;
    let created = send(
        &http,
        reqwest::Method::POST,
        &command.url("/assets"),
        Some(&motor("M-1")),
    )
    .await?;
    let id = created.body["asset"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let url = command.url(&format!("/assets/{id}"));
    send(
        &http,
        reqwest::Method::PATCH,
        &url,
        Some(&json!({"expected_version": 1, "name": "Feed pump motor"})),
    )
    .await?
    .expect_status(200);
    let before = log_count(&pool).await?;

    // Act: a client that still believes version 1.
    let stale = send(
        &http,
        reqwest::Method::PATCH,
        &url,
        Some(&json!({"expected_version": 1, "name": "x"})),
    )
    .await?;
    let stale_header = http.delete(&url).header("If-Match", "\"1\"").send().await?;
    // The header says the current version, the body a stale one: which to believe?
    let disagreeing = http
        .patch(&url)
        .header("If-Match", "\"2\"")
        .json(&json!({"expected_version": 1, "name": "x"}))
        .send()
        .await?;
    let disagreeing_status = disagreeing.status().as_u16();
    let disagreeing: serde_json::Value = disagreeing.json().await?;

    // Assert
    assert_eq!(stale.status, 409);
    assert!(stale.is_problem());
    assert_eq!(stale.body["type"], "/problems/version-conflict");
    assert_eq!(stale.body["errors"]["current_version"], 2);
    assert_eq!(stale_header.status().as_u16(), 409);
    assert_eq!(disagreeing_status, 400, "{disagreeing}");
    assert_eq!(disagreeing["type"], "/problems/conflicting-versions");
    assert_eq!(log_count(&pool).await?, before);
    let (name,): (Option<String>,) = sqlx::query_as("select name from assets where tag = 'M-1'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(name.as_deref(), Some("Feed pump motor"));
    command.stop().await
}

#[tokio::test]
async fn malformed_or_invalid_bodies_get_a_4xx_problem_and_append_nothing() -> anyhow::Result<()> {
    // Arrange
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, false).await?;
    let http = synapse_tests::client::http_client();
    let pool = PgPool::connect(&database.url).await?;
    let url = command.url("/assets");

    // Act
    let malformed = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"tag\": \"M-1\", ")
        .send()
        .await?;
    let unknown_field = send(&http, reqwest::Method::POST, &url,
        Some(&json!({"tag": "M-1", "asset_type": "MOTOR", "discipline": "ELECTRICAL", "colour": "red"}))).await?;
    let nested = send(&http, reqwest::Method::POST, &url,
        Some(&json!({"tag": "M-1", "asset_type": "MOTOR", "discipline": "ELECTRICAL", "properties": {"a": {"b": 1}}}))).await?;
    let bad_id = send(
        &http,
        reqwest::Method::PATCH,
        &command.url("/assets/not-a-uuid"),
        Some(&json!({})),
    )
    .await?;
    let unknown_id = send(
        &http,
        reqwest::Method::DELETE,
        &command.url(&format!("/assets/{}", uuid::Uuid::new_v4())),
        None,
    )
    .await?;
    let huge = http
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b' '; 33 * 1024 * 1024])
        .send()
        .await?;

    // Assert
    assert_eq!(malformed.status().as_u16(), 400);
    assert_eq!(
        malformed
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    assert_eq!(unknown_field.status, 422);
    assert!(unknown_field.is_problem());
    assert_eq!(nested.status, 422);
    assert_eq!(nested.body["errors"][0]["field"], "properties.a");
    assert_eq!(bad_id.status, 400);
    assert!(bad_id.is_problem());
    assert_eq!(unknown_id.status, 404);
    assert_eq!(unknown_id.body["type"], "/problems/asset-not-found");
    assert_eq!(huge.status().as_u16(), 413);
    assert_eq!(log_count(&pool).await?, 0);
    let (assets,): (i64,) = sqlx::query_as("select count(*) from assets")
        .fetch_one(&pool)
        .await?;
    assert_eq!(assets, 0);
    command.stop().await
}

#[tokio::test]
async fn a_retried_request_with_the_same_idempotency_key_returns_the_first_result_and_appends_once(
) -> anyhow::Result<()> {
    // Arrange
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, false).await?;
    let http = synapse_tests::client::http_client();
    let pool = PgPool::connect(&database.url).await?;
    let post = |body: serde_json::Value| {
        http.post(command.url("/assets"))
            .header("Idempotency-Key", "import-42")
            .json(&body)
            .send()
    };

    // Act: the same request three times, two of them concurrently.
    let (first, second) = tokio::join!(post(motor("M-7")), post(motor("M-7")));
    let third = post(motor("M-7")).await?;
    let different = post(motor("M-8")).await?;

    // Assert
    let first: serde_json::Value = first?.json().await?;
    let second: serde_json::Value = second?.json().await?;
    let third_status = third.status().as_u16();
    let third: serde_json::Value = third.json().await?;
    assert_eq!(third_status, 201);
    assert_eq!(first, second);
    assert_eq!(first, third);
    assert_eq!(different.status().as_u16(), 422);
    assert_eq!(log_count(&pool).await?, 3);
    command.stop().await
}

#[tokio::test]
async fn a_patch_with_a_null_name_or_area_clears_it_and_an_absent_one_leaves_it(
) -> anyhow::Result<()> {
    // Arrange: a motor with a name and an area.
    let app = apps::CommandOnly::start().await?;
    let mut named = motor("M-1");
    named["name"] = json!("Feed pump motor");
    named["area"] = json!("U100");
    let created = send(
        &app.http,
        reqwest::Method::POST,
        &app.command.url("/assets"),
        Some(&named),
    )
    .await?
    .expect_status(201);
    let url = app.command.url(&format!(
        "/assets/{}",
        created.body["asset"]["id"].as_str().unwrap_or_default()
    ));
    let patch = |body: serde_json::Value, key: &'static str| {
        app.http
            .patch(&url)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };

    // Act: an absent name changes nothing; a null one clears it; the same key with
    // the other body is another request.
    let absent = patch(json!({"area": "U200"}), "k1").await?;
    let absent: serde_json::Value = absent.json().await?;
    let cleared = patch(json!({"area": "U200", "name": null}), "k2").await?;
    let cleared_status = cleared.status().as_u16();
    let cleared: serde_json::Value = cleared.json().await?;
    let reused = patch(json!({"area": "U200", "name": null}), "k1").await?;
    let reused_status = reused.status().as_u16();
    let area_cleared = patch(json!({"area": null}), "k3").await?;
    let area_cleared: serde_json::Value = area_cleared.json().await?;

    // Assert
    assert_eq!(absent["asset"]["name"], "Feed pump motor");
    assert_eq!(absent["asset"]["area"], "U200");
    assert_eq!(cleared_status, 200);
    assert_eq!(cleared["asset"]["name"], serde_json::Value::Null);
    assert_eq!(cleared["asset"]["area"], "U200");
    assert_eq!(reused_status, 422, "a key reused with another body");
    assert_eq!(area_cleared["asset"]["area"], serde_json::Value::Null);
    let (name, area): (Option<String>, Option<String>) =
        sqlx::query_as("select name, area from assets where tag = 'M-1'")
            .fetch_one(&app.pool)
            .await?;
    assert_eq!((name, area), (None, None));
    let after: Vec<serde_json::Value> = sqlx::query_scalar(
        "select payload -> 'after' from workflow_events
         where event_type = 'ASSET_UPDATED' order by position",
    )
    .fetch_all(&app.pool)
    .await?;
    assert_eq!(after.len(), 3);
    assert_eq!(after[1]["name"], serde_json::Value::Null);
    assert_eq!(after[2]["area"], serde_json::Value::Null);
    app.command.stop().await
}

#[tokio::test]
async fn a_negative_zero_is_answered_as_the_zero_the_log_holds() -> anyhow::Result<()> {
    // Arrange
    let app = apps::CommandOnly::start().await?;
    let mut body = motor("M-1");
    body["properties"]["offset"] = json!(-0.0);

    // Act
    let created = send(
        &app.http,
        reqwest::Method::POST,
        &app.command.url("/assets"),
        Some(&body),
    )
    .await?
    .expect_status(201);
    let id = created.body["asset"]["id"].as_str().unwrap_or_default();
    let patched = send(
        &app.http,
        reqwest::Method::PATCH,
        &app.command.url(&format!("/assets/{id}")),
        Some(&json!({"properties": {"trim": -0.0}})),
    )
    .await?
    .expect_status(200);

    // Assert: the answers say what the log says.
    let logged: Vec<String> = sqlx::query_scalar(
        "select (payload -> 'after' -> 'properties')::text from workflow_events
         where aggregate_type = 'asset' order by position",
    )
    .fetch_all(&app.pool)
    .await?;
    assert_eq!(
        created.body["asset"]["properties"]["offset"].to_string(),
        "0.0"
    );
    assert_eq!(
        patched.body["asset"]["properties"]["trim"].to_string(),
        "0.0"
    );
    assert_eq!(
        logged,
        [
            r#"{"offset": 0.0, "rated_power_kw": 75}"#,
            r#"{"trim": 0.0, "offset": 0.0, "rated_power_kw": 75}"#
        ]
    );
    app.command.stop().await
}

#[tokio::test]
async fn every_refusal_a_command_route_answers_is_in_its_openapi_entry() -> anyhow::Result<()> {
    // Arrange
    let app = apps::CommandOnly::start().await?;
    let document = app.command.openapi(&app.http).await?;
    let any_id = uuid::Uuid::nil();
    let json_body = Some(r#"{"tag":"M-1"}"#);
    // (method, documented path, request path, content type and body)
    let requests = [
        ("post", "/assets", "/assets?zzz=1".to_owned(), json_body),
        ("post", "/assets", "/assets".to_owned(), Some("nope")),
        ("get", "/rules", "/rules?zzz=1".to_owned(), None),
        (
            "put",
            "/rules/{id}",
            "/rules/not-an-id".to_owned(),
            json_body,
        ),
        (
            "post",
            "/rules/rollback",
            "/rules/rollback".to_owned(),
            Some(r#"{"mode":"bad"}"#),
        ),
        (
            "patch",
            "/cables/{id}",
            format!("/cables/{any_id}"),
            Some(r#"{"colour":1}"#),
        ),
        (
            "delete",
            "/relationships/{id}",
            "/relationships/x".to_owned(),
            None,
        ),
    ];

    for (method, documented, path, body) in requests {
        // Act
        let mut request = app
            .http
            .request(method.to_uppercase().parse()?, app.command.url(&path));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let status = request.send().await?.status().as_u16().to_string();
        let mut plain = app
            .http
            .request(method.to_uppercase().parse()?, app.command.url(&path));
        if body.is_some() {
            plain = plain.header("content-type", "text/plain").body("x");
        }
        let plain_status = plain.send().await?.status().as_u16().to_string();

        // Assert: the answer's status is one the operation documents.
        let responses = &document["paths"][documented][method]["responses"];
        for status in [status, plain_status] {
            assert!(
                responses.get(&status).is_some(),
                "{method} {path}: {status} is not in {responses:#}"
            );
            assert!(status.starts_with('4'), "{method} {path}: {status}");
        }
    }
    // The 202 of an execution says what it answers.
    let started = &document["paths"]["/rules/execute"]["post"]["responses"]["202"];
    assert_eq!(
        started["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Started"
    );
    app.command.stop().await
}

#[tokio::test]
async fn every_command_documents_the_idempotency_key_and_the_versioned_ones_if_match(
) -> anyhow::Result<()> {
    // Arrange
    let app = apps::CommandOnly::start().await?;
    let document = app.command.openapi(&app.http).await?;
    let headers = |path: &str, method: &str| -> Vec<String> {
        document["paths"][path][method]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|parameter| parameter["in"] == "header")
            .filter_map(|parameter| parameter["name"].as_str().map(str::to_owned))
            .collect()
    };

    // Act / Assert: every operation but a read takes a key and says a reused one is a
    // 422 (before: 9 of the 13 did not list the header, and the deletions no 422).
    let mut commands = 0;
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            if method == "get" {
                continue;
            }
            commands += 1;
            assert!(
                headers(path, method).contains(&"Idempotency-Key".to_owned()),
                "{method} {path}"
            );
            assert!(
                operation["responses"].get("422").is_some(),
                "{method} {path}"
            );
        }
    }
    assert_eq!(commands, 13);
    for (path, method) in [
        ("/assets/{id}", "patch"),
        ("/assets/{id}", "delete"),
        ("/cables/{id}", "patch"),
        ("/cables/{id}", "delete"),
        ("/relationships/{id}", "delete"),
        ("/rules/{id}", "put"),
    ] {
        assert!(
            headers(path, method).contains(&"If-Match".to_owned()),
            "{method} {path}"
        );
    }
    app.command.stop().await
}
