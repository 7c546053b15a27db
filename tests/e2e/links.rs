//! Cables and relationships as single changes.

use reqwest::Method;
use serde_json::json;
use sqlx::PgPool;
use synapse_tests::apps;
use synapse_tests::client::{http_client, send};
use synapse_tests::{TestDatabase, TestNats};

#[tokio::test]
async fn cables_and_relationships_are_created_changed_and_deleted_as_batches_with_conflicts_refused(
) -> anyhow::Result<()> {
    // Arrange: an MCC and a motor.
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, false).await?;
    let http = http_client();
    let pool = PgPool::connect(&database.url).await?;
    let mut ids = Vec::new();
    for (tag, asset_type) in [("MCC-1", "MOTOR_CONTROL_CENTRE"), ("M-1", "ELECTRIC_MOTOR")] {
        let reply = send(
            &http,
            Method::POST,
            &command.url("/assets"),
            Some(&json!({"tag": tag, "asset_type": asset_type, "discipline": "ELECTRICAL"})),
        )
        .await?
        .expect_status(201);
        ids.push(
            reply.body["asset"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }

    // Act
    let cable = send(
        &http,
        Method::POST,
        &command.url("/cables"),
        Some(&json!({
        "tag": "W-M-1-PWR", "cable_type": "power", "discipline": "ELECTRICAL",
        "from_asset": ids[0], "to_asset": ids[1], "properties": {"cross_section_mm2": 25}})),
    )
    .await?;
    let duplicate_tag = send(&http, Method::POST, &command.url("/cables"), Some(&json!({
        "tag": "W-M-1-PWR", "cable_type": "POWER", "discipline": "ELECTRICAL", "from_asset": ids[0], "to_asset": ids[1]}))).await?;
    let to_itself = send(
        &http,
        Method::POST,
        &command.url("/relationships"),
        Some(&json!({
        "kind": "FEEDS", "from_asset": ids[0], "to_asset": ids[0]})),
    )
    .await?;
    let dangling = send(&http, Method::POST, &command.url("/cables"), Some(&json!({
        "tag": "W-X", "cable_type": "POWER", "discipline": "ELECTRICAL", "from_asset": ids[0], "to_asset": uuid::Uuid::new_v4()}))).await?;
    let (cable_id,): (uuid::Uuid,) =
        sqlx::query_as("select id from cables where tag = 'W-M-1-PWR'")
            .fetch_one(&pool)
            .await?;
    let resized = send(
        &http,
        Method::PATCH,
        &command.url(&format!("/cables/{cable_id}")),
        Some(&json!({"expected_version": 1, "properties": {"cross_section_mm2": 35}})),
    )
    .await?;
    let stale = send(
        &http,
        Method::PATCH,
        &command.url(&format!("/cables/{cable_id}")),
        Some(&json!({"expected_version": 1, "properties": {"cross_section_mm2": 50}})),
    )
    .await?;
    let feeds = send(
        &http,
        Method::POST,
        &command.url("/relationships"),
        Some(&json!({"kind": "FEEDS", "from_asset": ids[0], "to_asset": ids[1]})),
    )
    .await?;
    let feeds_again = send(
        &http,
        Method::POST,
        &command.url("/relationships"),
        Some(&json!({"kind": "FEEDS", "from_asset": ids[0], "to_asset": ids[1]})),
    )
    .await?;
    let (relationship_id,): (uuid::Uuid,) = sqlx::query_as("select id from relationships")
        .fetch_one(&pool)
        .await?;
    let mut deletions = Vec::new();
    for query in ["?expected_version=2", "?bogus=1", "?expected_version=1"] {
        let url = command.url(&format!("/relationships/{relationship_id}{query}"));
        deletions.push(send(&http, Method::DELETE, &url, None).await?);
    }
    let [unfed_stale, unfed_unknown, unfed] =
        <[_; 3]>::try_from(deletions).map_err(|_| anyhow::anyhow!("three deletions"))?;
    let removed = send(
        &http,
        Method::DELETE,
        &command.url(&format!("/cables/{cable_id}?expected_version=2")),
        None,
    )
    .await?;

    // Assert: the answers carry the links (their ids for later changes) as they are now.
    assert_eq!(cable.status, 201, "{cable:?}");
    assert_eq!(
        (
            &cable.body["cable"]["id"],
            &cable.body["cable"]["tag"],
            &cable.body["cable"]["version"]
        ),
        (&json!(cable_id), &json!("W-M-1-PWR"), &json!(1))
    );
    assert_eq!(resized.body["cable"]["properties"]["cross_section_mm2"], 35);
    assert_eq!(
        (
            &feeds.body["relationship"]["id"],
            &feeds.body["relationship"]["kind"]
        ),
        (&json!(relationship_id), &json!("FEEDS"))
    );
    assert_eq!(removed.body.get("cable"), None);
    assert_eq!(unfed.body.get("relationship"), None);
    assert_eq!(duplicate_tag.status, 409);
    assert_eq!(dangling.status, 422);
    assert_eq!(to_itself.status, 422, "{to_itself:?}");
    assert_eq!(to_itself.body["errors"][0]["field"], "to_asset");
    assert_eq!(dangling.body["type"], "/problems/unknown-asset");
    assert_eq!(resized.status, 200);
    assert_eq!(stale.status, 409);
    assert_eq!(feeds.status, 201);
    assert_eq!(feeds_again.status, 409);
    assert_eq!(unfed_stale.status, 409, "{unfed_stale:?}");
    assert_eq!(unfed_stale.body["type"], "/problems/version-conflict");
    assert_eq!(unfed_unknown.status, 400, "{unfed_unknown:?}");
    assert_eq!(unfed.status, 200);
    assert_eq!(removed.status, 200);
    let events = synapse_shared::event_log::read_after(&pool, 0, 1000).await?;
    let changes: Vec<_> = events
        .iter()
        .filter(|e| e.event_type.is_state_change() && e.aggregate_type.as_str() != "asset")
        .map(|e| (e.event_type.as_str(), e.aggregate_version))
        .collect();
    assert_eq!(
        changes,
        vec![
            ("CABLE_CREATED", 1),
            ("CABLE_UPDATED", 2),
            ("RELATIONSHIP_CREATED", 1),
            ("RELATIONSHIP_DELETED", 2),
            ("CABLE_DELETED", 3)
        ]
    );
    let updated = events
        .iter()
        .find(|e| e.event_type.as_str() == "CABLE_UPDATED")
        .map(|e| e.payload.clone())
        .unwrap_or_default();
    assert_eq!(updated["before"]["properties"]["cross_section_mm2"], 25);
    assert_eq!(updated["after"]["properties"]["cross_section_mm2"], 35);
    assert_eq!(updated["after"]["cable_type"], "POWER");
    let (cables, relationships): (i64, i64) = sqlx::query_as(
        "select (select count(*) from cables), (select count(*) from relationships)",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!((cables, relationships), (0, 0));
    command.stop().await
}

/// A cable's update locks the cable, then its ends; an asset's deletion locks the
/// asset, then its cables: at the same time, Postgres broke the deadlock by failing one,
/// which was answered 500.
#[tokio::test]
async fn a_cable_update_racing_the_deletion_of_its_end_is_answered_without_a_5xx(
) -> anyhow::Result<()> {
    // Arrange
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, false).await?;
    let http = http_client();
    let mut answers = std::collections::BTreeMap::new();

    for round in 0..20 {
        let mut ids = Vec::new();
        for end in ["A", "B"] {
            let created = send(
                &http,
                Method::POST,
                &command.url("/assets"),
                Some(
                    &json!({"tag": format!("M-{round}{end}"), "asset_type": "ELECTRIC_MOTOR",
                             "discipline": "ELECTRICAL"}),
                ),
            )
            .await?
            .expect_status(201);
            ids.push(created.body["asset"]["id"].clone());
        }
        let cable = send(
            &http,
            Method::POST,
            &command.url("/cables"),
            Some(&json!({"tag": format!("W-{round}"), "cable_type": "POWER",
                         "discipline": "ELECTRICAL", "from_asset": ids[0], "to_asset": ids[1]})),
        )
        .await?
        .expect_status(201);
        let cable = cable.body["cable"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let asset = ids[0].as_str().unwrap_or_default().to_owned();

        // Act
        let (asset_url, cable_url) = (
            command.url(&format!("/assets/{asset}")),
            command.url(&format!("/cables/{cable}")),
        );
        let patch = json!({"properties": {"n": round}});
        let (deleted, patched) = tokio::join!(
            send(&http, Method::DELETE, &asset_url, None),
            send(&http, Method::PATCH, &cable_url, Some(&patch))
        );
        let (deleted, patched) = (deleted?, patched?);
        for reply in [&deleted, &patched] {
            assert!(reply.status < 500, "{reply:?}");
            if reply.status == 409 {
                assert_eq!(
                    reply.body["type"], "/problems/concurrent-change",
                    "{reply:?}"
                );
            }
        }
        *answers.entry((deleted.status, patched.status)).or_insert(0) += 1;
    }

    // Assert: the deletion always lands or asks for a retry; no cable is left without
    // its end.
    assert!(
        answers
            .keys()
            .all(|(deleted, _)| [200, 409].contains(deleted)),
        "{answers:?}"
    );
    let pool = PgPool::connect(&database.url).await?;
    let (orphans,): (i64,) = sqlx::query_as(
        "select count(*) from cables c
         where not exists (select 1 from assets a where a.id = c.from_asset)
            or not exists (select 1 from assets a where a.id = c.to_asset)",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(orphans, 0, "{answers:?}");
    command.stop().await
}
