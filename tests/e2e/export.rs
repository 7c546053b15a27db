//! `GET /assets/export.csv`: a file imported through the real command service comes
//! back from the query service with formula cells defused, numbers as numbers, and
//! everything else verbatim; re-importing the export reproduces the plant.

use serde_json::{json, Map, Value};
use sqlx::PgPool;
use synapse_tests::apps::{self, System};
use synapse_tests::auth::Role;
use synapse_tests::client::{http_client_as, post_csv, Reply};
use synapse_tests::TestDatabase;

/// Formula-like cells, negative numbers, commas, quotes and non-ASCII text. `note` is
/// a text column (its one number, `-12`, is typed as a number), `power_kw` a numeric one.
const PLANT_CSV: &str = "\
tag,asset_type,discipline,name,area,power_kw,note,running,link
M-1,MOTOR,ELECTRICAL,\"Feed pump, north\",U100,-5.5,=1+2,true,
M-2,motor,ELECTRICAL,\"say \"\"hi\"\"\",U200,-7,+cmd,false,
M-3,PUMP,MECHANICAL,Ünïcödé ✓ 日本,U100,75,-x,,
P-4,PUMP,MECHANICAL,,,,@SUM(A1),true,
T-5,TRANSMITTER,INSTRUMENTATION,\"a,b\",U300,0.25,-12,false,\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"
X-9,MOTOR,ELECTRICAL,to be deleted,U100,1,,,
";

/// The export's header for these property columns (each declaring its type when all
/// its values have one).
fn header(properties: &[&'static str]) -> Vec<&'static str> {
    let mut header = vec!["tag", "asset_type", "discipline", "name", "area"];
    header.extend_from_slice(properties);
    header
}

/// What the export must hold for [`PLANT_CSV`] once `X-9` is deleted: header, then
/// rows by tag; property columns in byte order. `note` holds text and a number: a
/// `:json` column, whose text cells start with the JSON quote (no spreadsheet reads
/// that as a formula).
#[rustfmt::skip]
fn expected_export() -> Vec<Vec<&'static str>> {
    vec![
        header(&["link:text", "note:json", "power_kw:number", "running:boolean"]),
        vec!["M-1", "MOTOR", "ELECTRICAL", "Feed pump, north", "U100", "", "\"=1+2\"", "-5.5", "true"],
        vec!["M-2", "MOTOR", "ELECTRICAL", "say \"hi\"", "U200", "", "\"+cmd\"", "-7", "false"],
        vec!["M-3", "PUMP", "MECHANICAL", "Ünïcödé ✓ 日本", "U100", "", "\"-x\"", "75", ""],
        vec!["P-4", "PUMP", "MECHANICAL", "", "", "", "\"@SUM(A1)\"", "", "true"],
        vec!["T-5", "TRANSMITTER", "INSTRUMENTATION", "a,b", "U300", "'=HYPERLINK(\"http://x\",\"y\")", "-12", "0.25", "false"],
    ]
}

/// Parse a CSV body with the `csv` crate (header row included as the first record).
fn records(body: &str) -> anyhow::Result<Vec<Vec<String>>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(body.as_bytes())
        .records()
        .map(|record| Ok(record?.iter().map(str::to_owned).collect()))
        .collect()
}

/// Every asset of a command-side database: `(tag, asset_type, discipline, name, area,
/// properties)` by tag.
async fn command_assets(
    database_url: &str,
) -> anyhow::Result<
    Vec<(
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Value,
    )>,
> {
    let pool = PgPool::connect(database_url).await?;
    let rows = sqlx::query_as(
        "select tag, asset_type, discipline, name, area, properties from assets order by tag",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(rows)
}

/// A text value as it comes back from a re-imported export: defused with `'`.
fn defused(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

async fn get_text(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String, String)> {
    let response = http.get(url).send().await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok((status, content_type, response.text().await?))
}

/// The whole system with [`PLANT_CSV`] imported through the command service.
async fn start_with_plant() -> anyhow::Result<System> {
    let system = System::start().await?;
    let url = system.command.url("/assets/import");
    post_csv(&system.http, &url, PLANT_CSV)
        .await?
        .expect_status(201);
    Ok(system)
}

#[tokio::test]
async fn an_export_defuses_formula_cells_keeps_numbers_and_round_trips_through_the_import(
) -> anyhow::Result<()> {
    // Arrange: import through the real command service, delete one asset.
    let system = start_with_plant().await?;
    let pool = PgPool::connect(&system.database.url).await?;
    let (deleted,): (uuid::Uuid,) = sqlx::query_as("select id from assets where tag = 'X-9'")
        .fetch_one(&pool)
        .await?;
    let deletion = system
        .http
        .delete(system.command.url(&format!("/assets/{deleted}")))
        .send()
        .await?;
    assert_eq!(deletion.status(), 200);
    system.wait_for_projection().await?;
    let viewer = http_client_as(Role::Viewer, "export-viewer");

    // Act
    let (status, content_type, body) =
        get_text(&viewer, &system.query.url("/assets/export.csv")).await?;

    // Assert: the file, cell by cell.
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert_eq!(records(&body)?, expected_export());

    // The import kept every formula-like cell as data (verbatim strings), numbers typed.
    let original = command_assets(&system.database.url).await?;
    let properties: Map<String, Value> = original
        .iter()
        .map(|(tag, .., properties)| (tag.clone(), properties.clone()))
        .collect();
    assert_eq!(
        properties["M-1"],
        json!({"power_kw": -5.5, "note": "=1+2", "running": true})
    );
    assert_eq!(properties["M-3"], json!({"power_kw": 75, "note": "-x"}));
    assert_eq!(
        properties["P-4"],
        json!({"note": "@SUM(A1)", "running": true})
    );
    assert_eq!(
        properties["T-5"],
        json!({"power_kw": 0.25, "note": -12, "running": false, "link": "=HYPERLINK(\"http://x\",\"y\")"})
    );

    // Round trip: the export imported into an empty plant gives the same assets, with
    // defused text cells carrying their `'` (those of the `:json` column exact) and
    // numbers unchanged.
    let empty = TestDatabase::create().await?;
    let second = apps::command_service(&empty, &system.nats.args, false).await?;
    post_csv(&system.http, &second.url("/assets/import"), body.clone())
        .await?
        .expect_status(201);
    let reimported = command_assets(&empty.url).await?;
    let expected: Vec<_> = original
        .into_iter()
        .filter(|(tag, ..)| tag != "X-9")
        .map(|(tag, asset_type, discipline, name, area, properties)| {
            let properties: Map<String, Value> = properties
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, value)| {
                    let value = match value {
                        Value::String(text) if name != "note" => Value::String(defused(text)),
                        other => other.clone(),
                    };
                    (name.clone(), value)
                })
                .collect();
            (
                tag,
                asset_type,
                discipline,
                name,
                area,
                Value::Object(properties),
            )
        })
        .collect();
    assert_eq!(reimported, expected);
    second.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_export_filters_by_discipline_and_asset_type_and_refuses_bad_filters_and_strangers(
) -> anyhow::Result<()> {
    // Arrange
    let system = start_with_plant().await?;
    system.wait_for_projection().await?;
    let viewer = http_client_as(Role::Viewer, "export-viewer");
    let export = |query: &str| system.query.url(&format!("/assets/export.csv{query}"));

    // Act
    let (status, _, mechanical) = get_text(&viewer, &export("?discipline=mechanical")).await?;
    let (_, _, motors_and_transmitters) = get_text(
        &viewer,
        &export("?asset_type=MOTOR,transmitter&discipline=ELECTRICAL,%20INSTRUMENTATION"),
    )
    .await?;
    let (_, _, nothing) = get_text(&viewer, &export("?discipline=PROCESS")).await?;
    let stranger = Reply::from(reqwest::Client::new().get(export("")).send().await?).await?;
    let mut refusals = Vec::new();
    for query in [
        "?colour=red",
        "?discipline=",
        "?asset_type=MOTOR,,PUMP",
        "?discipline=%3D1%2B2",
        "?discipline=ELEC%20TRICAL",
        &format!("?asset_type={}", vec!["A"; 201].join(",")),
    ] {
        refusals.push((
            query.to_owned(),
            Reply::from(viewer.get(export(query)).send().await?).await?,
        ));
    }

    let openapi: Value = reqwest::get(system.query.url("/openapi.json"))
        .await?
        .json()
        .await?;

    // Assert: the header has only the filtered assets' properties.
    assert_eq!(status, 200);
    let tags = |body: &str| -> anyhow::Result<Vec<String>> {
        Ok(records(body)?
            .into_iter()
            .skip(1)
            .map(|row| row[0].clone())
            .collect())
    };
    assert_eq!(
        records(&mechanical)?[0],
        header(&["note:text", "power_kw:number", "running:boolean"])
    );
    assert_eq!(tags(&mechanical)?, vec!["M-3", "P-4"]);
    assert_eq!(
        tags(&motors_and_transmitters)?,
        vec!["M-1", "M-2", "T-5", "X-9"]
    );
    assert_eq!(records(&nothing)?, vec![header(&[])]);
    let documented = &openapi["paths"]["/assets/export.csv"]["get"]["responses"]["200"];
    assert!(
        documented["content"].get("text/csv").is_some(),
        "{documented}"
    );
    assert_eq!(stranger.status, 401);
    assert!(stranger.is_problem(), "{stranger:?}");
    for (query, reply) in refusals {
        assert_eq!(reply.status, 400, "{query}: {reply:?}");
        assert!(reply.is_problem(), "{query}: {reply:?}");
    }
    Ok(())
}

#[tokio::test]
async fn an_export_declares_its_columns_types_so_that_importing_it_again_changes_nothing(
) -> anyhow::Result<()> {
    // Arrange: text columns of cells that look like a number and a boolean; a column
    // of a number and a text that looks like it, and one of text a plain cell would
    // not keep (spaces at the ends, empty), imported as `:json`.
    let system = System::start().await?;
    let url = system.command.url("/assets/import");
    let import = |csv: String| post_csv(&system.http, &url, csv);
    import(
        concat!(
            "tag,asset_type,discipline,code:text,flag:text,kw,mixed:json,note:json\n",
            "V-1,VALVE,PIPING,100,true,7,100,\"\"\"  padded \"\"\"\n",
            "V-2,VALVE,PIPING,007,no,7.5,\"\"\"100\"\"\",\"\"\"\"\"\"\n",
        )
        .to_owned(),
    )
    .await?
    .expect_status(201);
    let pool = PgPool::connect(&system.database.url).await?;
    let stored = |tag: &'static str| {
        sqlx::query_scalar::<_, Value>("select properties from assets where tag = $1")
            .bind(tag)
            .fetch_one(&pool)
    };
    assert_eq!(stored("V-1").await?["mixed"], json!(100));
    assert_eq!(stored("V-2").await?["mixed"], json!("100"));
    assert_eq!(stored("V-1").await?["note"], json!("  padded "));
    assert_eq!(stored("V-2").await?["note"], json!(""));
    system.wait_for_projection().await?;
    let viewer = http_client_as(Role::Viewer, "export-viewer");

    // Act
    let (_, _, body) = get_text(&viewer, &system.query.url("/assets/export.csv")).await?;
    let again = import(body.clone()).await?.expect_status(200);

    // Assert: the header says the columns' types, and the re-import finds both assets
    // unchanged (before: `"100"` and `"true"` came back as 100 and true, two updates;
    // then the mixed column declared nothing, and `"100"` came back as 100).
    assert_eq!(
        records(&body)?[0],
        header(&[
            "code:text",
            "flag:text",
            "kw:number",
            "mixed:json",
            "note:json"
        ])
    );
    let cells: Vec<Vec<String>> = records(&body)?
        .into_iter()
        .skip(1)
        .map(|record| record[8..].to_vec())
        .collect();
    assert_eq!(
        cells,
        vec![
            vec!["100".to_owned(), "\"  padded \"".to_owned()],
            vec!["\"100\"".to_owned(), "\"\"".to_owned()],
        ]
    );
    assert_eq!(
        (&again.body["unchanged"], &again.body["updated"]),
        (&json!(2), &json!(0)),
        "{:?}",
        again.body
    );
    Ok(())
}
