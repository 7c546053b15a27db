//! CSV import (`POST /assets/import`) against the real Postgres: one batch per file,
//! all-or-nothing, typed properties, precise problems, idempotent retries.

use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Duration;
use synapse_tests::apps::{self, Running};
use synapse_tests::client::Reply;
use synapse_tests::{TestDatabase, TestNats};
use uuid::Uuid;

/// A command service of the test's own, with a pool to look at what it wrote.
struct ImportApp {
    command: Running,
    http: reqwest::Client,
    pool: PgPool,
    _database: TestDatabase,
    nats: TestNats,
}

impl ImportApp {
    async fn spawn() -> anyhow::Result<Self> {
        Self::spawn_with_relay(false).await
    }

    /// With `relay`, the service also publishes the log to the test's stream.
    async fn spawn_with_relay(relay: bool) -> anyhow::Result<Self> {
        let database = TestDatabase::create().await?;
        let nats = TestNats::new();
        let command = apps::command_service(&database, &nats.args, relay).await?;
        let pool = PgPool::connect(&database.url).await?;
        Ok(Self {
            command,
            http: synapse_tests::client::http_client(),
            pool,
            _database: database,
            nats,
        })
    }

    /// POST the file as `text/csv` with the query string `query` (may be empty).
    async fn import(&self, query: &str, body: impl Into<reqwest::Body>) -> anyhow::Result<Reply> {
        let response = self
            .http
            .post(self.command.url(&format!("/assets/import?{query}")))
            .header("content-type", "text/csv")
            .body(body)
            .send()
            .await?;
        Reply::from(response).await
    }

    /// Every event, in log order, as `(type, correlation, aggregate, version, causation,
    /// event_id, payload)`.
    async fn events(&self) -> anyhow::Result<Vec<Event>> {
        Ok(sqlx::query_as(
            "select event_type, correlation_id, aggregate_id, aggregate_version, causation_id,
                 event_id, payload
             from workflow_events order by position",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every asset by tag: `{tag: {asset_type, discipline, name, area, properties, version}}`.
    async fn assets(&self) -> anyhow::Result<Value> {
        let (assets,): (Option<Value>,) = sqlx::query_as(
            "select jsonb_object_agg(tag, jsonb_build_object('asset_type', asset_type,
                 'discipline', discipline, 'name', name, 'area', area,
                 'properties', properties, 'version', version))
             from assets",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(assets.unwrap_or(Value::Null))
    }

    /// How many rows `table` holds.
    async fn count(&self, table: &str) -> anyhow::Result<i64> {
        let (count,): (i64,) = sqlx::query_as(&format!("select count(*) from {table}"))
            .fetch_one(&self.pool)
            .await?;
        Ok(count)
    }

    /// Asserts the database holds no asset, event, batch or snapshot.
    async fn assert_nothing_written(&self) -> anyhow::Result<()> {
        for table in [
            "assets",
            "workflow_events",
            "batches",
            "execution_snapshots",
        ] {
            assert_eq!(self.count(table).await?, 0, "{table} is not empty");
        }
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.command.stop().await
    }
}

type Event = (String, Uuid, Uuid, i64, Option<Uuid>, Uuid, Value);

/// Asserts `reply` is a problem of `status` and `kind` (`/problems/{kind}`).
fn assert_problem(reply: &Reply, status: u16, kind: &str) {
    assert_eq!(reply.status, status, "unexpected reply: {reply:#?}");
    assert!(reply.is_problem(), "not a problem: {reply:#?}");
    assert_eq!(reply.body["type"], format!("/problems/{kind}"));
}

const PLANT: &str = "\u{FEFF}Tag;Asset_Type;discipline;name;area;power_kw;is_spare;ip_rating\r\n\
                     M-101;electric_motor;electrical;Feed pump motor;A1;75;TRUE;IP55\r\n\
                     M-102;ELECTRIC_MOTOR;ELECTRICAL;;A1;110.5;false;\r\n\
                     P-101;PUMP;PROCESS;Feed pump;A2;;;IP65\r\n";

#[tokio::test]
async fn a_semicolon_csv_with_a_bom_imports_every_row_as_one_batch_with_typed_properties(
) -> anyhow::Result<()> {
    // Arrange
    let app = ImportApp::spawn().await?;

    // Act
    let reply = app.import("file_name=plant.csv", PLANT).await?;

    // Assert: the response.
    let reply = reply.expect_status(201);
    let correlation_id: Uuid = serde_json::from_value(reply.body["correlation_id"].clone())?;
    assert_eq!(
        reply.body,
        json!({"correlation_id": correlation_id, "created": 3, "updated": 0,
               "unchanged": 0, "rows": 3, "events": 6})
    );
    // The assets, typed: numbers, booleans, strings; an empty cell is absent.
    let motor = json!({"asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL", "area": "A1"});
    let mut m101 = motor.clone();
    m101["name"] = json!("Feed pump motor");
    m101["properties"] = json!({"power_kw": 75, "is_spare": true, "ip_rating": "IP55"});
    m101["version"] = json!(1);
    let mut m102 = motor;
    m102["name"] = Value::Null;
    m102["properties"] = json!({"power_kw": 110.5, "is_spare": false});
    m102["version"] = json!(1);
    let p101 = json!({"asset_type": "PUMP", "discipline": "PROCESS", "name": "Feed pump",
                      "area": "A2", "properties": {"ip_rating": "IP65"}, "version": 1});
    assert_eq!(
        app.assets().await?,
        json!({"M-101": m101, "M-102": m102, "P-101": p101})
    );
    // The log agrees: one batch, one ASSET_CREATED per row caused by BATCH_STARTED.
    let events = app.events().await?;
    let types: Vec<&str> = events.iter().map(|event| event.0.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "BATCH_STARTED",
            "ASSET_CREATED",
            "ASSET_CREATED",
            "ASSET_CREATED",
            "CSV_IMPORTED",
            "BATCH_COMPLETED"
        ]
    );
    assert!(events.iter().all(|event| event.1 == correlation_id));
    let started_id = events[0].5;
    assert_eq!(events[0].6, json!({"kind": "csv_import", "rows": 3}));
    let ids: Vec<(Uuid,)> = sqlx::query_as("select id from assets order by tag")
        .fetch_all(&app.pool)
        .await?;
    for (event, (tag, (id,))) in events[1..4]
        .iter()
        .zip(["M-101", "M-102", "P-101"].into_iter().zip(&ids))
    {
        assert_eq!((event.2, event.3, event.4), (*id, 1, Some(started_id)));
        assert_eq!(event.6["before"], Value::Null);
        assert_eq!(event.6["after"]["tag"], tag);
        assert_eq!(event.6["after"]["id"], json!(id));
    }
    assert_eq!(events[1].6["after"]["properties"], m101_properties());
    assert_eq!(
        events[4].6,
        json!({"created": 3, "updated": 0, "unchanged": 0, "rows": 3, "file_name": "plant.csv"})
    );
    // No snapshot (none of the assets existed before: there is no pre-batch state to
    // keep) and a completed batch.
    let (snapshots,): (i64,) =
        sqlx::query_as("select count(*) from execution_snapshots where correlation_id = $1")
            .bind(correlation_id)
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(snapshots, 0);
    let batch: (String, String) =
        sqlx::query_as("select kind, status from batches where correlation_id = $1")
            .bind(correlation_id)
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(batch, ("csv_import".to_owned(), "completed".to_owned()));
    app.stop().await
}

fn m101_properties() -> Value {
    json!({"power_kw": 75, "is_spare": true, "ip_rating": "IP55"})
}

#[tokio::test]
async fn re_importing_a_file_changes_no_asset_and_a_changed_cell_gives_exactly_one_update(
) -> anyhow::Result<()> {
    // Arrange
    let app = ImportApp::spawn().await?;
    let file = "tag,asset_type,discipline,power_kw,note\n\
                M-1,MOTOR,ELECTRICAL,75,spare\n\
                M-2,MOTOR,ELECTRICAL,110,\n\
                M-3,MOTOR,ELECTRICAL,90,\n";
    app.import("", file).await?.expect_status(201);
    let (id,): (Uuid,) = sqlx::query_as("select id from assets where tag = 'M-2'")
        .fetch_one(&app.pool)
        .await?;
    let logged = app.count("workflow_events").await?;
    // The second file changes one cell and lacks the `note` column (M-1 keeps its note).
    let changed = "tag,asset_type,discipline,power_kw\n\
                   M-1,MOTOR,ELECTRICAL,75\n\
                   M-2,MOTOR,ELECTRICAL,132\n\
                   M-3,MOTOR,ELECTRICAL,90\n";

    // Act
    let again = app.import("", file).await?;
    let logged_after_again = app.count("workflow_events").await?;
    let batches_after_again = app.count("batches").await?;
    let update = app.import("", changed).await?;

    // Assert: the re-import is a batch of its own that records the import and changes
    // no asset.
    assert_eq!(again.status, 200);
    let again_id: Uuid = serde_json::from_value(again.body["correlation_id"].clone())?;
    assert_eq!(
        again.body,
        json!({"correlation_id": again_id, "created": 0, "updated": 0, "unchanged": 3,
               "rows": 3, "events": 3})
    );
    assert_eq!(logged_after_again, logged + 3);
    assert_eq!(batches_after_again, 2);
    let events = app.events().await?;
    let recorded: Vec<(&str, Uuid, &Value)> = events
        .iter()
        .skip(logged as usize)
        .take(3)
        .map(|event| (event.0.as_str(), event.1, &event.6))
        .collect();
    assert_eq!(
        recorded
            .iter()
            .map(|(kind, correlation, _)| (*kind, *correlation))
            .collect::<Vec<_>>(),
        vec![
            ("BATCH_STARTED", again_id),
            ("CSV_IMPORTED", again_id),
            ("BATCH_COMPLETED", again_id)
        ]
    );
    assert_eq!(
        *recorded[1].2,
        json!({"created": 0, "updated": 0, "unchanged": 3, "rows": 3, "file_name": null})
    );
    let logged = logged_after_again;
    let update = update.expect_status(200);
    assert_eq!(update.body["updated"], 1);
    assert_eq!(update.body["unchanged"], 2);
    assert_eq!(update.body["events"], 4);
    let events = app.events().await?;
    let new: Vec<&Event> = events.iter().skip(logged as usize).collect();
    let types: Vec<&str> = new.iter().map(|event| event.0.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "BATCH_STARTED",
            "ASSET_UPDATED",
            "CSV_IMPORTED",
            "BATCH_COMPLETED"
        ]
    );
    let state = |power: i64, version: i64| {
        json!({"id": id, "tag": "M-2", "asset_type": "MOTOR", "discipline": "ELECTRICAL",
               "name": null, "area": null, "properties": {"power_kw": power},
               "version": version})
    };
    assert_eq!((new[1].2, new[1].3, new[1].4), (id, 2, Some(new[0].5)));
    assert_eq!(
        new[1].6,
        json!({"before": state(110, 1), "after": state(132, 2)})
    );
    assert_eq!(
        new[2].6,
        json!({"created": 0, "updated": 1, "unchanged": 2, "rows": 3, "file_name": null})
    );
    let (snapshot,): (Value,) =
        sqlx::query_as("select state from execution_snapshots where correlation_id = $1")
            .bind(new[0].1)
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(snapshot, state(110, 1));
    let assets = app.assets().await?;
    assert_eq!(
        assets["M-1"]["properties"],
        json!({"power_kw": 75, "note": "spare"})
    );
    assert_eq!(assets["M-2"]["properties"], json!({"power_kw": 132}));
    app.stop().await
}

#[tokio::test]
async fn a_semicolon_file_sent_as_comma_separated_is_refused_naming_the_missing_columns_and_the_delimiter(
) -> anyhow::Result<()> {
    // Arrange
    let app = ImportApp::spawn().await?;

    // Act
    let reply = app
        .import("delimiter=,", "tag;asset_type;discipline\nM-1;MOTOR;E\n")
        .await?;

    // Assert
    assert_problem(&reply, 422, "invalid-csv");
    assert_eq!(
        reply.body["errors"],
        json!([
            {"row": 1, "column": "tag", "message": "required column is missing"},
            {"row": 1, "column": "asset_type", "message": "required column is missing"},
            {"row": 1, "column": "discipline", "message": "required column is missing"},
        ])
    );
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("semicolon-separated") && detail.contains("?delimiter=;"),
        "{detail}"
    );
    app.assert_nothing_written().await?;
    app.stop().await
}

#[tokio::test]
async fn duplicate_tags_ragged_rows_and_non_numeric_cells_are_all_listed_and_nothing_is_written(
) -> anyhow::Result<()> {
    // Arrange: valid rows around four kinds of mistakes.
    let app = ImportApp::spawn().await?;
    let file = "tag,asset_type,discipline,power_kw\n\
                M-1,MOTOR,ELECTRICAL,75\n\
                M-2,MOTOR,ELECTRICAL,n/a\n\
                M-3,MOTOR,ELECTRICAL\n\
                M-1,MOTOR,ELECTRICAL,90\n\
                M-5,MOTOR,ELEC TRICAL,110\n";

    // Act
    let reply = app.import("", file).await?;

    // Assert
    assert_problem(&reply, 422, "invalid-csv");
    assert_eq!(
        reply.body["errors"],
        json!([
            {"row": 2, "column": "tag", "message": "duplicate tag `M-1` (rows 2, 5)"},
            {"row": 3, "column": "power_kw",
             "message": "non-numeric value `n/a` in a numeric column (3 of 4 values are numbers) (if the column mixes numbers and text on purpose, declare it `NAME:text`)"},
            {"row": 4, "column": null, "message": "the row has 3 fields, the header has 4"},
            {"row": 5, "column": "tag", "message": "duplicate tag `M-1` (rows 2, 5)"},
            {"row": 6, "column": "discipline",
             "message": "must be 1 to 64 letters, digits, `_` or `-`"},
        ])
    );
    assert_eq!(reply.body["detail"], "5 errors");
    app.assert_nothing_written().await?;
    app.stop().await
}

#[tokio::test]
async fn nul_characters_and_invisible_tag_characters_are_listed_by_row_and_column(
) -> anyhow::Result<()> {
    // Arrange: a NUL (which Postgres cannot store) in a name and in a property, under
    // UTF-8 and Windows-1252; tags made look-alikes by a zero-width space and a BOM.
    let app = ImportApp::spawn().await?;
    let file = "tag,asset_type,discipline,name,note\n\
                M-1,MOTOR,ELECTRICAL,Motor\u{0}1,fine\n\
                M-2,MOTOR,ELECTRICAL,Motor 2,a\u{0}b\n\
                M-3\u{200B},MOTOR,ELECTRICAL,Motor 3,fine\n\
                \u{FEFF}M-4,MOTOR,ELECTRICAL,Motor 4,fine\n";
    let windows_1252 = b"tag,asset_type,discipline,note\nM-1,MOTOR,ELECTRICAL,\xe9\x00\n";

    // Act
    let reply = app.import("", file).await?;
    let decoded = app
        .import("encoding=windows-1252", windows_1252.to_vec())
        .await?;

    // Assert
    assert_problem(&reply, 422, "invalid-csv");
    let nul = "contains a NUL character (U+0000), which cannot be stored";
    let invisible = "must not contain whitespace, control or invisible characters";
    assert_eq!(
        reply.body["errors"],
        json!([
            {"row": 2, "column": "name", "message": nul},
            {"row": 3, "column": "note", "message": nul},
            {"row": 4, "column": "tag", "message": invisible},
            {"row": 5, "column": "tag", "message": invisible},
        ])
    );
    assert_problem(&decoded, 422, "invalid-csv");
    assert_eq!(
        decoded.body["errors"],
        json!([{"row": 2, "column": "note", "message": nul}])
    );
    app.assert_nothing_written().await?;
    app.stop().await
}

#[tokio::test]
async fn a_file_without_a_header_or_required_column_or_rows_is_refused() -> anyhow::Result<()> {
    // Arrange
    let app = ImportApp::spawn().await?;

    // Act
    let no_discipline = app
        .import("", "tag,asset_type,power_kw\nM-1,MOTOR,75\n")
        .await?;
    let no_header = app.import("", "M-1,MOTOR,ELECTRICAL\n").await?;
    let header_only = app.import("", "tag,asset_type,discipline\n").await?;
    let empty = app.import("", "").await?;

    // Assert
    assert_problem(&no_discipline, 422, "invalid-csv");
    assert_eq!(
        no_discipline.body["errors"],
        json!([{"row": 1, "column": "discipline", "message": "required column is missing"}])
    );
    assert_problem(&no_header, 422, "invalid-csv");
    assert_eq!(no_header.body["errors"].as_array().map(Vec::len), Some(3));
    assert!(no_header.body["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("The first row must be a header"));
    assert_problem(&header_only, 422, "empty-file");
    assert_problem(&empty, 422, "empty-file");
    app.assert_nothing_written().await?;
    app.stop().await
}

#[tokio::test]
async fn windows_1252_bytes_are_refused_until_the_encoding_is_named_then_decoded(
) -> anyhow::Result<()> {
    // Arrange: "Moteur ventilé 80°C" as Excel writes it on a Western European Windows.
    let app = ImportApp::spawn().await?;
    let mut file = b"tag;asset_type;discipline;name\nM-1;MOTOR;ELECTRICAL;Moteur ventil".to_vec();
    file.extend_from_slice(b"\xE9 80\xB0C\n");

    // Act
    let refused = app.import("", file.clone()).await?;
    let nothing_written = app.count("workflow_events").await?;
    let utf_16 = app
        .http
        .post(app.command.url("/assets/import"))
        .header("content-type", "text/csv; charset=utf-16")
        .body(file.clone())
        .send()
        .await?;
    let utf_16 = Reply::from(utf_16).await?;
    let accepted = app.import("encoding=windows-1252", file).await?;

    // Assert
    assert_problem(&utf_16, 415, "unsupported-media-type");
    assert!(
        utf_16.body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("charset") && detail.contains("utf-16")),
        "{utf_16:?}"
    );
    assert_problem(&refused, 415, "unsupported-encoding");
    let detail = refused.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("Windows-1252") && detail.contains("?encoding=windows-1252"),
        "{detail}"
    );
    assert_eq!(nothing_written, 0);
    accepted.expect_status(201);
    assert_eq!(
        app.assets().await?["M-1"]["name"],
        json!("Moteur ventilé 80°C")
    );
    app.stop().await
}

#[tokio::test]
async fn an_oversized_body_or_too_many_rows_is_a_413_problem() -> anyhow::Result<()> {
    // Arrange
    let app = ImportApp::spawn().await?;
    let mut huge = b"tag,asset_type,discipline\n".to_vec();
    huge.resize(33 * 1024 * 1024, b' ');
    let mut many = String::from("tag,asset_type,discipline\n");
    for index in 0..200_001 {
        many.push_str(&format!("M-{index},MOTOR,E\n"));
    }

    // Act
    let too_large = app.import("", huge).await?;
    let too_many = app.import("", many).await?;

    // Assert
    assert_problem(&too_large, 413, "body-too-large");
    assert_problem(&too_many, 413, "too-many-rows");
    assert!(too_many.body["title"]
        .as_str()
        .unwrap_or_default()
        .contains("200000 rows"));
    app.assert_nothing_written().await?;
    app.stop().await
}

#[tokio::test]
async fn cells_starting_with_formula_characters_are_stored_verbatim_as_strings(
) -> anyhow::Result<()> {
    // Arrange
    let app = ImportApp::spawn().await?;
    let file = "tag,asset_type,discipline,formula,phone,mention,offset,signed\n\
                M-1,MOTOR,ELECTRICAL,=SUM(A1:A3),+49 30 1234,@cmd,-5,+5\n";

    // Act
    let reply = app.import("", file).await?;

    // Assert
    reply.expect_status(201);
    assert_eq!(
        app.assets().await?["M-1"]["properties"],
        json!({"formula": "=SUM(A1:A3)", "phone": "+49 30 1234", "mention": "@cmd",
               "offset": -5, "signed": "+5"})
    );
    app.stop().await
}

#[tokio::test]
async fn declared_column_types_are_kept_and_a_cell_of_another_type_refuses_the_file(
) -> anyhow::Result<()> {
    // Arrange: line numbers that look like numbers, a padded power, a spare flag.
    let app = ImportApp::spawn().await?;
    let header = "tag,asset_type,discipline,line_number:text,power_kw:number,spare:boolean\n";
    let bad =
        format!("{header}M-1,MOTOR,ELECTRICAL,1001,075,true\nM-2,MOTOR,ELECTRICAL,1002,90,maybe\n");
    let good = bad.replace("maybe", "false");

    // Act
    let refused = app.import("", bad).await?;
    app.assert_nothing_written().await?;
    let imported = app.import("", good).await?;

    // Assert
    assert_problem(&refused, 422, "invalid-csv");
    assert_eq!(
        refused.body["errors"],
        json!([{"row": 3, "column": "spare:boolean",
                "message": "`maybe` is not a boolean (true or false) as the header declares"}])
    );
    imported.expect_status(201);
    let assets = app.assets().await?;
    assert_eq!(
        assets["M-1"]["properties"],
        json!({"line_number": "1001", "power_kw": 75, "spare": true})
    );
    assert_eq!(
        assets["M-2"]["properties"],
        json!({"line_number": "1002", "power_kw": 90, "spare": false})
    );
    app.stop().await
}

#[tokio::test]
async fn a_retried_import_with_the_same_idempotency_key_returns_the_first_response_and_appends_nothing(
) -> anyhow::Result<()> {
    // Arrange
    let app = ImportApp::spawn().await?;
    let url = app.command.url("/assets/import?file_name=a.csv");
    let post = |body: &'static str| {
        app.http
            .post(&url)
            .header("content-type", "text/csv")
            .header("Idempotency-Key", "import-7")
            .body(body)
            .send()
    };
    let file = "tag,asset_type,discipline\nM-1,MOTOR,E\nM-2,MOTOR,E\n";

    // Act
    let first = Reply::from(post(file).await?).await?;
    let logged = app.count("workflow_events").await?;
    let retry = Reply::from(post(file).await?).await?;
    let other_file = Reply::from(post("tag,asset_type,discipline\nM-9,MOTOR,E\n").await?).await?;

    // Assert
    assert_eq!(first.status, 201);
    assert_eq!(first.body["created"], 2);
    assert_eq!((retry.status, &retry.body), (201, &first.body));
    assert_eq!(app.count("workflow_events").await?, logged);
    assert_eq!(app.count("batches").await?, 1);
    assert_problem(&other_file, 422, "idempotency-key-reused");
    // The refusal says which answer the key holds (before: no detail at all).
    let detail = other_file.body["detail"].as_str().unwrap_or_default();
    let batch = first.body["correlation_id"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("status 201, batch {batch}")),
        "{detail}"
    );
    app.stop().await
}

#[tokio::test]
async fn an_imported_batch_reaches_the_stream_in_log_order() -> anyhow::Result<()> {
    // Arrange
    let app = ImportApp::spawn_with_relay(true).await?;

    // Act
    let reply = app.import("file_name=plant.csv", PLANT).await?;
    synapse_tests::stream::wait_for_messages(&app.nats.args, 6, Duration::from_secs(15)).await?;

    // Assert
    let reply = reply.expect_status(201);
    let streamed = synapse_tests::stream::read_all(&app.nats.args).await?;
    let types: Vec<&str> = streamed
        .iter()
        .map(|message| message.envelope.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        vec![
            "BATCH_STARTED",
            "ASSET_CREATED",
            "ASSET_CREATED",
            "ASSET_CREATED",
            "CSV_IMPORTED",
            "BATCH_COMPLETED"
        ]
    );
    let logged: Vec<Uuid> = app.events().await?.iter().map(|event| event.5).collect();
    let published: Vec<Uuid> = streamed.iter().map(|m| m.envelope.event_id).collect();
    assert_eq!(published, logged);
    assert!(streamed
        .iter()
        .all(|m| json!(m.envelope.correlation_id) == reply.body["correlation_id"]));
    app.stop().await
}

/// What the planner's statistics last counted in `assets` (-1: never analyzed).
async fn counted_assets(app: &ImportApp) -> anyhow::Result<f32> {
    let (counted,): (f32,) =
        sqlx::query_as("select reltuples from pg_class where oid = 'assets'::regclass")
            .fetch_one(&app.pool)
            .await?;
    Ok(counted)
}

#[tokio::test]
async fn a_large_import_refreshes_the_planner_statistics_of_assets_and_a_small_one_does_not(
) -> anyhow::Result<()> {
    // Arrange: statistics that never counted anything (this test's database is new).
    let app = ImportApp::spawn().await?;
    let file = |first: usize, count: usize| {
        let rows: String = (first..first + count)
            .map(|i| format!("V-{i:05},VALVE,PROCESS\n"))
            .collect();
        format!("tag,asset_type,discipline\n{rows}")
    };
    assert_eq!(counted_assets(&app).await?, -1.0);

    // Act: 999 rows, under the threshold.
    app.import("", file(0, 999)).await?.expect_status(201);
    let after_small = counted_assets(&app).await?;
    // Act: 1,500 rows more.
    app.import("", file(999, 1_500)).await?.expect_status(201);

    // Assert: the small import left the statistics alone; by the time the large one
    // answered, they counted every asset.
    assert_eq!(after_small, -1.0);
    assert_eq!(counted_assets(&app).await?, 2_499.0);
    app.stop().await
}

#[tokio::test]
async fn concurrent_imports_of_the_same_new_tags_create_each_asset_once_or_ask_for_a_retry(
) -> anyhow::Result<()> {
    // Arrange: the same 2,000 new tags, in opposite orders.
    let app = ImportApp::spawn().await?;
    let rows: Vec<String> = (0..2_000)
        .map(|i| format!("T-{i:04},VALVE,PROCESS\n"))
        .collect();
    let header = "tag,asset_type,discipline\n";
    let ascending = format!("{header}{}", rows.concat());
    let descending = format!("{header}{}", rows.iter().rev().cloned().collect::<String>());

    // Act
    let (first, second) = tokio::join!(app.import("", ascending), app.import("", descending));

    // Assert: each import either created the assets, found them unchanged, or was told
    // to retry; never a 500, never a duplicate.
    let statuses = [first?.status, second?.status];
    assert!(statuses.contains(&201), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|status| [200, 201, 409].contains(status)),
        "{statuses:?}"
    );
    assert_eq!(app.count("assets").await?, 2_000);
    let (created,): (i64,) = sqlx::query_as(
        "select count(distinct aggregate_id) from workflow_events where event_type = 'ASSET_CREATED'",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(created, 2_000);
    app.stop().await
}

#[tokio::test]
async fn the_openapi_document_describes_the_import_with_a_csv_body() -> anyhow::Result<()> {
    // Arrange
    let app = ImportApp::spawn().await?;

    // Act
    let document = app.command.openapi(&app.http).await?;

    // Assert
    let import = &document["paths"]["/assets/import"]["post"];
    assert!(
        import["requestBody"]["content"]["text/csv"].is_object(),
        "{import:#}"
    );
    // (Other layers may add their own, e.g. 401/403 for authentication.)
    let statuses = import["responses"].as_object().cloned().unwrap_or_default();
    for status in ["200", "201", "409", "413", "415", "422"] {
        assert!(
            statuses.contains_key(status),
            "{status} missing from {import:#}"
        );
    }
    let parameters: Vec<&str> = import["parameters"]
        .as_array()
        .map(|all| all.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    for name in ["delimiter", "encoding", "file_name", "Idempotency-Key"] {
        assert!(
            parameters.contains(&name),
            "{name} missing from {parameters:?}"
        );
    }
    app.stop().await
}

/// `rows` motors as a semicolon file with typed property columns; `power` sets the
/// power of every motor, so a second file with another power updates every row.
fn plant_file(rows: usize, power: u32) -> String {
    let mut file = String::from(
        "tag;asset_type;discipline;name;area;power_kw;voltage_v;ip_rating;is_spare;speed_rpm\n",
    );
    for index in 0..rows {
        file.push_str(&format!(
            "M-{index:06};ELECTRIC_MOTOR;ELECTRICAL;Motor {index};A{};{power};400;IP55;false;1480.5\n",
            index % 40
        ));
    }
    file
}

#[tokio::test]
async fn a_file_larger_than_one_append_slice_imports_and_re_imports_with_changes(
) -> anyhow::Result<()> {
    // 12,000 rows: three append statements per import, in order. (Speed is measured
    // by `bench execute`, which imports 100,000 rows; this checks correctness.)
    import_twice(12_000).await?;
    Ok(())
}

/// Import `rows` new motors, then the same motors with another power; check the log,
/// snapshots and state, and return how long each import took.
async fn import_twice(rows: usize) -> anyhow::Result<(Duration, Duration)> {
    // Arrange
    let app = ImportApp::spawn().await?;
    let (first, second) = (plant_file(rows, 75), plant_file(rows, 90));

    // Act
    let started = std::time::Instant::now();
    let created = app.import("", first).await?;
    let create_time = started.elapsed();
    let started = std::time::Instant::now();
    let updated = app.import("", second).await?;
    let update_time = started.elapsed();

    // Assert
    eprintln!(
        "imported {rows} new rows in {create_time:.2?} ({:.0} rows/s), \
         {rows} changed rows in {update_time:.2?} ({:.0} rows/s)",
        rows as f64 / create_time.as_secs_f64(),
        rows as f64 / update_time.as_secs_f64(),
    );
    let created = created.expect_status(201);
    assert_eq!(
        (&created.body["created"], &created.body["events"]),
        (&json!(rows), &json!(rows + 3))
    );
    let updated = updated.expect_status(200);
    assert_eq!(
        (&updated.body["updated"], &updated.body["events"]),
        (&json!(rows), &json!(rows + 3))
    );
    // Each batch's events sit in one unbroken run of positions, in the file's order.
    let runs: Vec<(String, i64, i64, i64, String, String)> = sqlx::query_as(
        "select correlation_id::text, count(*), max(position) - min(position) + 1,
             count(*) filter (where event_type = 'ASSET_UPDATED'),
             (array_agg(event_type order by position))[1],
             (array_agg(event_type order by position desc))[1]
         from workflow_events group by correlation_id order by min(position)",
    )
    .fetch_all(&app.pool)
    .await?;
    let events = rows as i64 + 3;
    assert_eq!(runs.len(), 2);
    for (run, updates) in runs.iter().zip([0, rows as i64]) {
        assert_eq!((run.1, run.2, run.3), (events, events, updates));
        assert_eq!(
            (run.4.as_str(), run.5.as_str()),
            ("BATCH_STARTED", "BATCH_COMPLETED")
        );
    }
    let (first_asset, last_asset): (String, String) = sqlx::query_as(
        "select (array_agg(payload->'after'->>'tag' order by position))[1],
             (array_agg(payload->'after'->>'tag' order by position desc))[1]
         from workflow_events where event_type = 'ASSET_CREATED'",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(
        (first_asset, last_asset),
        ("M-000000".to_owned(), format!("M-{:06}", rows - 1))
    );
    // Snapshots of the re-import's updates only: the first import created every asset.
    assert_eq!(app.count("execution_snapshots").await?, rows as i64);
    let (changed,): (i64,) = sqlx::query_as(
        "select count(*) from assets where properties->'power_kw' = '90' and version = 2",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(changed, rows as i64);
    app.stop().await?;
    Ok((create_time, update_time))
}
