//! Batch rollback: restores, conflicts (strict, partial, cascade), idempotence, redo.

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::BTreeMap;
use synapse_tests::apps;
use synapse_tests::client::{post_csv, send, Reply};
use synapse_tests::plant::{as_csv, motors, small_plant, vfd_rule};
use synapse_tests::{TestDatabase, TestNats};
use uuid::Uuid;

struct Setup {
    _database: TestDatabase,
    _nats: TestNats,
    command: apps::Running,
    http: reqwest::Client,
    pool: PgPool,
}

async fn setup() -> anyhow::Result<Setup> {
    let database = TestDatabase::create().await?;
    let nats = TestNats::new();
    let command = apps::command_service(&database, &nats.args, false).await?;
    let pool = PgPool::connect(&database.url).await?;
    let http = synapse_tests::client::http_client();
    for asset in small_plant() {
        send(&http, Method::POST, &command.url("/assets"), Some(&asset))
            .await?
            .expect_status(201);
    }
    Ok(Setup {
        _database: database,
        _nats: nats,
        command,
        http,
        pool,
    })
}

impl Setup {
    /// How many events the log holds.
    async fn logged(&self) -> anyhow::Result<i64> {
        let (logged,): (i64,) = sqlx::query_as("select count(*) from workflow_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(logged)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Reply> {
        send(
            &self.http,
            Method::POST,
            &self.command.url(path),
            Some(&body),
        )
        .await
    }

    async fn run_rule(&self, rule: Value) -> anyhow::Result<String> {
        let id = self.post("/rules", rule).await?.expect_status(201).body["id"].clone();
        let report = self
            .post("/rules/execute", json!({"rule_ids": [id], "wait": true}))
            .await?
            .expect_status(200);
        Ok(report.body["correlation_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// `DELETE path`, which must answer 200.
    async fn delete(&self, path: &str) -> anyhow::Result<Reply> {
        Ok(
            send(&self.http, Method::DELETE, &self.command.url(path), None)
                .await?
                .expect_status(200),
        )
    }

    /// Roll `batch` back; how many aggregates were restored.
    async fn roll_back(&self, batch: &Value) -> anyhow::Result<Value> {
        let reply = self
            .post("/rules/rollback", json!({"correlation_id": batch}))
            .await?
            .expect_status(200);
        Ok(reply.body["restored"].clone())
    }

    /// Roll `batch` back in partial mode; the 200 answer.
    async fn roll_back_partially(&self, batch: &str) -> anyhow::Result<Reply> {
        Ok(self
            .post(
                "/rules/rollback",
                json!({"correlation_id": batch, "mode": "partial"}),
            )
            .await?
            .expect_status(200))
    }

    /// Import [`motors`]`(prefix, count, properties)`.
    async fn import_motors(
        &self,
        prefix: &str,
        count: usize,
        properties: Value,
    ) -> anyhow::Result<()> {
        post_csv(
            &self.http,
            &self.command.url("/assets/import"),
            as_csv(&motors(prefix, count, properties)),
        )
        .await?
        .expect_status(201);
        Ok(())
    }

    /// Set `asset`'s `rated_power_kw` to each of `powers` in turn, one `PATCH` each; their
    /// batches.
    async fn set_power(&self, asset: uuid::Uuid, powers: &[i64]) -> anyhow::Result<Vec<String>> {
        let mut batches = Vec::new();
        for kw in powers {
            let reply = send(
                &self.http,
                Method::PATCH,
                &self.command.url(&format!("/assets/{asset}")),
                Some(&json!({"properties": {"rated_power_kw": kw}})),
            )
            .await?
            .expect_status(200);
            batches.push(correlation_id(&reply));
        }
        Ok(batches)
    }

    /// The dry run of a cascade rollback of `batch`, which must say it would roll
    /// `batch` back after the batches `order` with `counts` (restored, deleted,
    /// recreated), and write nothing; how many it would restore in all.
    async fn preview_cascade(
        &self,
        batch: &str,
        order: &[&str],
        [restored, deleted, recreated]: [usize; 3],
    ) -> anyhow::Result<Value> {
        let state = self.state().await?;
        let preview = self
            .post(
                "/rules/rollback",
                json!({"correlation_id": batch, "mode": "cascade", "dry_run": true}),
            )
            .await?
            .expect_status(200);
        assert_eq!(preview.body["cascade"], json!(order), "{:?}", preview.body);
        assert_eq!(
            preview.body["counts"],
            json!({"restored": restored, "deleted": deleted, "recreated": recreated, "conflicts": 0,
                   "findings_closed": 0, "findings_reopened": 0})
        );
        assert_eq!(preview.body["would_roll_back"], true);
        assert_eq!(self.state().await?, state, "a dry run writes nothing");
        Ok(json!(restored + deleted + recreated))
    }

    /// Delete M-100 (batch D), then make a new asset with its tag (batch N): the old
    /// id, and the answers of D and N.
    async fn delete_m100_and_reuse_its_tag(&self) -> anyhow::Result<(uuid::Uuid, Reply, Reply)> {
        let old = self.asset_id("M-100").await?;
        let deleted = self.delete(&format!("/assets/{old}")).await?;
        let created = self
            .post(
                "/assets",
                json!({"tag": "M-100", "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL"}),
            )
            .await?
            .expect_status(201);
        Ok((old, deleted, created))
    }

    async fn asset_id(&self, tag: &str) -> anyhow::Result<uuid::Uuid> {
        let (id,): (uuid::Uuid,) = sqlx::query_as("select id from assets where tag = $1")
            .bind(tag)
            .fetch_one(&self.pool)
            .await?;
        Ok(id)
    }

    /// The rollback of `deleted` would bring back `old`, whose tag or key the batch of
    /// `created` has taken since: its dry run says it would not roll back, and strict
    /// is refused with `reason`, naming that batch.
    async fn refused_as_taken(
        &self,
        deleted: &Reply,
        created: &Reply,
        old: uuid::Uuid,
        reason: &str,
    ) -> anyhow::Result<()> {
        let batch = correlation_id(deleted);
        let preview = self
            .post(
                "/rules/rollback",
                json!({"correlation_id": batch, "dry_run": true}),
            )
            .await?
            .expect_status(200);
        assert_eq!(preview.body["would_roll_back"], false, "{:?}", preview.body);
        let refused = self
            .post("/rules/rollback", json!({"correlation_id": batch}))
            .await?;
        assert_eq!(
            first_conflict(&refused),
            (json!(old), json!(reason), json!([correlation_id(created)]))
        );
        Ok(())
    }

    /// A cascade rollback of `deleted` rolls `created` back first (as its dry run says),
    /// then `deleted`, which leaves the state as it was `before` it.
    async fn cascaded_back(
        &self,
        deleted: &Reply,
        created: &Reply,
        before: &BTreeMap<String, Value>,
    ) -> anyhow::Result<()> {
        let batch = correlation_id(deleted);
        self.preview_cascade(&batch, &[&correlation_id(created)], [0, 0, 1])
            .await?;
        self.post(
            "/rules/rollback",
            json!({"correlation_id": batch, "mode": "cascade"}),
        )
        .await?
        .expect_status(200);
        assert_eq!(&self.state().await?, before);
        Ok(())
    }

    /// Everything command-side state holds, without versions (which move on).
    async fn state(&self) -> anyhow::Result<BTreeMap<String, Value>> {
        let rows: Vec<(String, Value)> = sqlx::query_as(
            "select 'asset:' || tag, jsonb_build_object('type', asset_type, 'discipline', discipline, 'name', name, 'area', area, 'properties', properties) from assets
             union all select 'cable:' || tag, jsonb_build_object('from', from_asset, 'to', to_asset, 'type', cable_type, 'properties', properties) from cables
             union all select 'relationship:' || kind || ':' || from_asset || ':' || to_asset, properties from relationships
             union all select 'finding:' || asset_id || ':' || message, to_jsonb(severity) from findings",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }
}

fn motor_rule(name: &str, property: &str, value: &str) -> Value {
    json!({"name": name, "discipline": "ELECTRICAL", "when": "asset.asset_type == 'ELECTRIC_MOTOR'",
           "then": [{"type": "set_property", "name": property, "value": value}]})
}

#[tokio::test]
async fn rolling_back_an_execution_restores_every_aggregate_and_marks_its_events(
) -> anyhow::Result<()> {
    // Arrange
    let setup = setup().await?;
    let before = setup.state().await?;
    let batch = setup.run_rule(vfd_rule()).await?;
    assert_ne!(setup.state().await?, before);

    // Act
    let reply = setup
        .post("/rules/rollback", json!({"correlation_id": batch}))
        .await?
        .expect_status(200);

    // Assert: state as before, 16 aggregates restored (4 motors, 4 VFDs, 4 cables, 4 relationships).
    assert_eq!(setup.state().await?, before);
    assert_eq!(reply.body["restored"], 16);
    let rollback = reply.body["correlation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let events = synapse_shared::event_log::read_after(&setup.pool, 0, 100_000).await?;
    let rollbacks: Vec<_> = events
        .iter()
        .filter(|e| e.correlation_id.to_string() == rollback)
        .collect();
    assert_eq!(
        rollbacks
            .iter()
            .filter(|e| e.event_type.as_str() == "ROLLBACK")
            .count(),
        16
    );
    let started = rollbacks[0];
    assert_eq!(started.event_type.as_str(), "BATCH_STARTED");
    let original_start = events
        .iter()
        .find(|e| e.correlation_id.to_string() == batch)
        .map(|e| e.event_id);
    assert_eq!(
        started.causation_id, original_start,
        "the rollback is caused by the original batch"
    );
    assert!(rollbacks
        .iter()
        .any(|e| e.event_type.as_str() == "BATCH_ROLLED_BACK"
            && e.payload["target_correlation_id"] == batch.as_str()));
    // Every original event is marked, none rewritten.
    let (unmarked,): (i64,) = sqlx::query_as(
        "select count(*) from workflow_events e where e.correlation_id = $1::uuid
         and not exists (select 1 from event_rollbacks r where r.event_id = e.event_id)",
    )
    .bind(&batch)
    .fetch_one(&setup.pool)
    .await?;
    assert_eq!(unmarked, 0);
    setup.command.stop().await
}

#[tokio::test]
async fn a_rollback_of_more_aggregates_than_one_slice_restores_and_deletes_them_all(
) -> anyhow::Result<()> {
    // Arrange: 2,600 more motors; one batch tags each and gives each a cable from its
    // MCC: 5,212 aggregates with the plant's six motors, more than one slice (5,000).
    let setup = setup().await?;
    setup
        .import_motors(
            "M-3",
            2_600,
            json!({"rated_power_kw": 4, "mcc": "MCC-U100-01"}),
        )
        .await?;
    let before = setup.state().await?;
    let batch = setup
        .run_rule(
            json!({"name": "Tag and cable every motor", "discipline": "ELECTRICAL",
            "when": "asset.asset_type == 'ELECTRIC_MOTOR' && has(asset.properties.mcc)",
            "then": [{"type": "set_property", "name": "inspection", "value": "'due'"},
                     {"type": "upsert_cable", "tag": "W-{asset.tag}", "cable_type": "POWER",
                      "from": {"tag": "{asset.properties.mcc}"}, "to": "asset"}]}),
        )
        .await?;
    let (cables,): (i64,) = sqlx::query_as("select count(*) from cables")
        .fetch_one(&setup.pool)
        .await?;
    assert_eq!(cables, 2_606);

    // Act
    let reply = setup
        .post("/rules/rollback", json!({"correlation_id": batch}))
        .await?
        .expect_status(200);

    // Assert: the state as before; one ROLLBACK per aggregate, between the batch's
    // start and end, each saying what the aggregate was and what it is again.
    assert_eq!(reply.body["restored"], 5_212);
    assert_eq!(setup.state().await?, before);
    let rollback = reply.body["correlation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let events: Vec<_> = synapse_shared::event_log::read_after(&setup.pool, 0, 100_000)
        .await?
        .into_iter()
        .filter(|e| e.correlation_id.to_string() == rollback)
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"BATCH_STARTED"));
    assert_eq!(kinds.last(), Some(&"BATCH_COMPLETED"));
    let restored: Vec<_> = events
        .iter()
        .filter(|e| e.event_type.as_str() == "ROLLBACK")
        .collect();
    let aggregates: std::collections::HashSet<_> =
        restored.iter().map(|e| e.aggregate_id).collect();
    assert_eq!((restored.len(), aggregates.len()), (5_212, 5_212));
    let motor = setup.asset_id("M-32599").await?;
    let motor_event = restored
        .iter()
        .find(|e| e.aggregate_id == motor)
        .map(|e| &e.payload);
    assert_eq!(
        motor_event.map(|p| (
            p["before"]["properties"]["inspection"].clone(),
            p["after"]["properties"].get("inspection").cloned()
        )),
        Some((json!("due"), None))
    );
    let deleted_cables = restored
        .iter()
        .filter(|e| e.aggregate_type.as_str() == "cable")
        .filter(|e| e.payload["after"].is_null() && e.payload["before"]["tag"].is_string())
        .count();
    assert_eq!(deleted_cables, 2_606);
    setup.command.stop().await
}

#[tokio::test]
async fn a_rollback_in_the_way_of_a_later_batch_is_refused_then_partial_and_cascade_do_what_they_say(
) -> anyhow::Result<()> {
    // Arrange: batch A tags all six motors; batch B changes two of them afterwards.
    let setup = setup().await?;
    let before_a = setup.state().await?;
    let batch_a = setup
        .run_rule(motor_rule("Inspect motors", "inspection", "'due'"))
        .await?;
    let m102 = setup.asset_id("M-102").await?;
    let m104 = setup.asset_id("M-104").await?;
    let mut later = Vec::new();
    for id in [m102, m104] {
        let reply = send(
            &setup.http,
            Method::PATCH,
            &setup.command.url(&format!("/assets/{id}")),
            Some(&json!({"properties": {"inspection": "done"}})),
        )
        .await?
        .expect_status(200);
        later.push(
            reply.body["correlation_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let before_rollback = setup.state().await?;

    // Act: strict
    let refused = setup
        .post("/rules/rollback", json!({"correlation_id": batch_a}))
        .await?;

    // Assert: 409 naming exactly M-102 and M-104, their later batches and the field diff.
    assert_eq!(refused.status, 409);
    assert!(refused.is_problem());
    assert_eq!(refused.body["type"], "/problems/rollback-conflict");
    let mut conflicts: Vec<(String, String, String)> = refused.body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["aggregate_id"].as_str().unwrap_or("").to_owned(),
                c["later_batches"][0].as_str().unwrap_or("").to_owned(),
                c["diff"].to_string(),
            )
        })
        .collect();
    conflicts.sort();
    let mut expected = vec![
        (m102.to_string(), later[0].clone(), json!([{"op": "replace", "path": "/properties/inspection", "value": "done"}, {"op": "replace", "path": "/version", "value": 3}]).to_string()),
        (m104.to_string(), later[1].clone(), json!([{"op": "replace", "path": "/properties/inspection", "value": "done"}, {"op": "replace", "path": "/version", "value": 3}]).to_string()),
    ];
    expected.sort();
    assert_eq!(conflicts, expected);
    assert_eq!(
        setup.state().await?,
        before_rollback,
        "a refused rollback writes nothing"
    );

    // Act: partial
    let partial = setup.roll_back_partially(&batch_a).await?;

    // Assert: four motors restored, the two conflicting ones untouched and reported.
    assert_eq!(partial.body["restored"], 4);
    assert_eq!(partial.body["skipped"].as_array().map(Vec::len), Some(2));
    let state = setup.state().await?;
    assert_eq!(state["asset:M-100"]["properties"].get("inspection"), None);
    assert_eq!(state["asset:M-102"]["properties"]["inspection"], "done");

    // Act + Assert: a dry run of the cascade names the two batches in the way, the
    // order it would roll them back in (newest first), and counts the two motors as
    // what the rollback does to them once those are rolled back; it writes nothing.
    let preview = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": batch_a, "mode": "cascade", "dry_run": true}),
        )
        .await?
        .expect_status(200);
    let mut in_the_way = later.clone();
    in_the_way.sort();
    assert_eq!(preview.body["later_batches"], json!(in_the_way));
    assert_eq!(preview.body["cascade"], json!([later[1], later[0]]));
    assert_eq!(
        preview.body["counts"],
        json!({"restored": 2, "deleted": 0, "recreated": 0, "conflicts": 0,
               "findings_closed": 0, "findings_reopened": 0})
    );
    assert_eq!(preview.body["would_roll_back"], true);
    assert_eq!(
        preview.body["analysis"]["conflicts"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let strict_preview = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": batch_a, "dry_run": true}),
        )
        .await?
        .expect_status(200);
    assert_eq!(
        (
            &strict_preview.body["counts"]["conflicts"],
            &strict_preview.body["would_roll_back"]
        ),
        (&json!(2), &json!(false))
    );
    assert_eq!(strict_preview.body["cascade"], json!([]));
    assert_eq!(setup.state().await?, state);

    // Act: cascade finishes the job by rolling back the two later batches first; then
    // the client retries it with the same Idempotency-Key.
    let cascade_once = || async {
        let request = setup
            .http
            .post(setup.command.url("/rules/rollback"))
            .header("Idempotency-Key", "cascade-a")
            .json(&json!({"correlation_id": batch_a, "mode": "cascade"}));
        Reply::from(request.send().await?).await
    };
    let cascade = cascade_once().await?.expect_status(200);
    let logged = setup.logged().await?;
    let retried = cascade_once().await?;

    // Assert: done once, and the retry answered as the first request was (before: a
    // 409 already-rolled-back).
    assert_eq!(cascade.body["cascaded"].as_array().map(Vec::len), Some(2));
    assert_eq!(cascade.body["restored"], preview.body["counts"]["restored"]);
    assert_eq!(setup.state().await?, before_a);
    assert_eq!((retried.status, &retried.body), (200, &cascade.body));
    assert_eq!(setup.logged().await?, logged);
    setup.command.stop().await
}

#[tokio::test]
async fn a_cascade_whose_idempotency_key_another_request_holds_waits_and_writes_nothing_when_refused(
) -> anyhow::Result<()> {
    // Arrange: a change (the target) and a later one in its way; another request holds
    // the key the cascade will send (claimed in its transaction, not yet committed).
    let setup = setup().await?;
    let motor = setup.asset_id("M-101").await?;
    let batches = setup.set_power(motor, &[20, 21]).await?;
    let key = "shared-key";
    // The name the test client acts under, as a keyed request records it.
    let probe = setup
        .http
        .post(setup.command.url("/rules/rollback"))
        .header("Idempotency-Key", "probe")
        .json(&json!({"correlation_id": batches[0], "dry_run": true}));
    Reply::from(probe.send().await?).await?.expect_status(200);
    let actor: String =
        sqlx::query_scalar("select actor from idempotency_keys where key = 'probe'")
            .fetch_one(&setup.pool)
            .await?;
    let mut other = setup.pool.begin().await?;
    sqlx::query(
        "insert into idempotency_keys (actor, key, request_fingerprint, status, body)
         values ($1, $2, 'another request', 0, 'null')",
    )
    .bind(&actor)
    .bind(key)
    .execute(&mut *other)
    .await?;
    let logged = setup.logged().await?;

    // Act: the cascade is sent; the other request then commits.
    let cascade = tokio::spawn({
        let request = setup
            .http
            .post(setup.command.url("/rules/rollback"))
            .header("Idempotency-Key", key)
            .json(&json!({"correlation_id": batches[0], "mode": "cascade"}));
        async move { Reply::from(request.send().await?).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let logged_meanwhile = setup.logged().await?;
    sqlx::query("update idempotency_keys set status = 201, body = '{}' where key = $1")
        .bind(key)
        .execute(&mut *other)
        .await?;
    other.commit().await?;
    let refused = cascade.await??;

    // Assert: refused as a reused key, and nothing written, not even the rollback of
    // the batch in the way (before: that one was written before the key was claimed).
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.body["type"], "/problems/idempotency-key-reused");
    assert_eq!((logged_meanwhile, setup.logged().await?), (logged, logged));
    let statuses: Vec<String> = sqlx::query_scalar(
        "select status from batches where correlation_id::text = any($1) order by started_at",
    )
    .bind(&batches)
    .fetch_all(&setup.pool)
    .await?;
    assert_eq!(statuses, ["completed", "completed"]);
    setup.command.stop().await
}

#[tokio::test]
async fn a_cascade_through_two_later_batches_on_one_asset_rolls_each_back_once(
) -> anyhow::Result<()> {
    // Arrange: M-100's power 10 → 11 (batch T), → 12 (L1), → 13 (L2).
    let setup = setup().await?;
    let m100 = setup.asset_id("M-100").await?;
    let batches = setup.set_power(m100, &[10, 11, 12, 13]).await?;
    let (t, l1, l2) = (&batches[1], &batches[2], &batches[3]);
    let logged = setup.logged().await?;

    // Act: its dry run, then the cascade.
    setup.preview_cascade(t, &[l2, l1], [1, 0, 0]).await?;
    let cascade = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": t, "mode": "cascade"}),
        )
        .await?;

    // Assert: L2, L1, then T rolled back, once each, and the power back to 10 (before:
    // the cascade rolled back its own rollback of L2, redoing L2, and so on until its
    // step limit: a 422 after 51 rollback batches, the power left at 12).
    assert_eq!(cascade.status, 200, "{:?}", cascade.body);
    assert_eq!(cascade.body["restored"], 1);
    assert_eq!(cascade.body["cascaded"].as_array().map(Vec::len), Some(2));
    let (kw,): (Value,) =
        sqlx::query_as("select properties -> 'rated_power_kw' from assets where id = $1")
            .bind(m100)
            .fetch_one(&setup.pool)
            .await?;
    assert_eq!(kw, json!(10));
    let (rollbacks,): (i64,) =
        sqlx::query_as("select count(*) from batches where kind = 'rollback'")
            .fetch_one(&setup.pool)
            .await?;
    assert_eq!(rollbacks, 3);
    for batch in [t, l1, l2] {
        let (status,): (String,) =
            sqlx::query_as("select status from batches where correlation_id = $1::uuid")
                .bind(batch)
                .fetch_one(&setup.pool)
                .await?;
        assert_eq!(status, "rolled_back", "{batch}");
    }
    assert!(setup.logged().await? > logged);
    setup.command.stop().await
}

#[tokio::test]
async fn a_cascade_leaves_a_rollback_of_a_later_batch_alone_and_does_what_its_dry_run_says(
) -> anyhow::Result<()> {
    // Arrange: M-101's power 37 → 11 (T) → 12 (L1) → 13 (L2); L2 rolled back by hand.
    let setup = setup().await?;
    let before = setup.state().await?;
    let motor = setup.asset_id("M-101").await?;
    let batches = setup.set_power(motor, &[11, 12, 13]).await?;
    let (target, l1, l2) = (&batches[0], &batches[1], &batches[2]);
    setup.roll_back(&json!(l2)).await?;
    let logged = setup.logged().await?;

    // Act
    let preview = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": target, "mode": "cascade", "dry_run": true}),
        )
        .await?
        .expect_status(200);
    let cascade = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": target, "mode": "cascade"}),
        )
        .await?;

    // Assert: only L1 is rolled back first, then T, as the dry run said (before: the
    // cascade rolled back the rollback of L2, redoing it, went round until its step
    // limit and answered 422, leaving the motor at 13).
    let rolled_back: Vec<String> = sqlx::query_scalar(
        "select request ->> 'target_correlation_id' from batches
         where kind = 'rollback' and request ->> 'cascade_of' = $1",
    )
    .bind(target)
    .fetch_all(&setup.pool)
    .await?;
    assert_eq!(
        preview.body["cascade"].as_array().map(Vec::len),
        Some(1),
        "{}",
        preview.body
    );
    assert_eq!(preview.body["would_roll_back"], true);
    let cascade = cascade.expect_status(200);
    assert_eq!(rolled_back, std::slice::from_ref(l1));
    assert_eq!(cascade.body["restored"], 1, "{}", cascade.body);
    assert!(setup.logged().await? > logged);
    assert_eq!(setup.state().await?, before);
    setup.command.stop().await
}

#[tokio::test]
async fn a_cascades_dry_run_stops_where_a_later_batch_set_the_value_back() -> anyhow::Result<()> {
    // Arrange: M-100's power set to 60 (batch T), 70 (L1), 60 again (L2), 80 (L3).
    let setup = setup().await?;
    let before = setup.state().await?;
    let m100 = setup.asset_id("M-100").await?;
    let batches = setup.set_power(m100, &[60, 70, 60, 80]).await?;
    let (t, l3) = (&batches[0], &batches[3]);

    // Act + Assert: the dry run lists L3 alone, as the cascade then rolls back L3 alone
    // (once L3 is undone, the power is T's 60 again; before: [L3, L2, L1]).
    setup.preview_cascade(t, &[l3], [1, 0, 0]).await?;
    let cascade = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": t, "mode": "cascade"}),
        )
        .await?
        .expect_status(200);
    assert_eq!(cascade.body["cascaded"].as_array().map(Vec::len), Some(1));
    assert_eq!(cascade.body["restored"], 1);
    assert_eq!(setup.state().await?, before);
    setup.command.stop().await
}

#[tokio::test]
async fn a_cascade_retried_after_its_first_attempt_stopped_names_every_rollback_it_made(
) -> anyhow::Result<()> {
    // Arrange: M-100's power changed by T, then by L; a cascade of T whose first attempt
    // rolled L back and then stopped (the service killed before T's own rollback).
    let setup = setup().await?;
    let m100 = setup.asset_id("M-100").await?;
    let batches = setup.set_power(m100, &[11, 12]).await?;
    let t: uuid::Uuid = batches[0].parse()?;
    let first_attempt =
        command_service::rollback::cascade::clear_the_way(&setup.pool, "admin", t).await?;
    assert_eq!(first_attempt.len(), 1);

    // Act: the client retries the cascade.
    let retried = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": t, "mode": "cascade"}),
        )
        .await?
        .expect_status(200);

    // Assert: it names the rollback of L the first attempt made (before: `[]`).
    assert_eq!(retried.body["cascaded"], json!(first_attempt));
    assert_eq!(retried.body["restored"], 1);
    setup.command.stop().await
}

#[tokio::test]
async fn what_a_batch_created_and_then_changed_is_deleted_by_its_rollback() -> anyhow::Result<()> {
    // Arrange: one execution of two rules: the VFD rule creates four VFDs, the next
    // rule (run after it, over what exists when it starts) changes them.
    let setup = setup().await?;
    let before = setup.state().await?;
    let mut ids = Vec::new();
    let commission = json!({
        "name": "Drives are commissioned", "discipline": "ELECTRICAL", "priority": 20,
        "when": "asset.asset_type == 'VARIABLE_FREQUENCY_DRIVE'",
        "then": [{"type": "set_property", "name": "commissioned", "value": "true"}]
    });
    for rule in [vfd_rule(), commission] {
        ids.push(setup.post("/rules", rule).await?.expect_status(201).body["id"].clone());
    }
    let report = setup
        .post("/rules/execute", json!({"rule_ids": ids, "wait": true}))
        .await?
        .expect_status(200);
    let batch = report.body["correlation_id"].clone();
    // The second rule snapshotted the VFDs as the first had made them: the premise.
    let (changed_drives,): (i64,) = sqlx::query_as(
        "select count(*) from execution_snapshots s join assets a on a.id = s.aggregate_id
         where s.correlation_id = $1::uuid and a.asset_type = 'VARIABLE_FREQUENCY_DRIVE'
           and s.state is not null and a.properties->>'commissioned' = 'true'",
    )
    .bind(batch.as_str().unwrap_or_default())
    .fetch_one(&setup.pool)
    .await?;
    assert_eq!(changed_drives, 4);

    // Act
    let rolled_back = setup.roll_back(&batch).await?;

    // Assert: the drives are gone, not put back as the first rule had made them.
    assert_eq!((setup.state().await?, rolled_back), (before, json!(16)));
    setup.command.stop().await
}

#[tokio::test]
async fn two_concurrent_rollbacks_of_one_batch_write_one_set_of_events() -> anyhow::Result<()> {
    // Arrange
    let setup = setup().await?;
    let batch = setup
        .run_rule(motor_rule("Inspect motors", "inspection", "'due'"))
        .await?;

    // Act
    let body = json!({"correlation_id": batch});
    let (first, second) = tokio::join!(
        setup.post("/rules/rollback", body.clone()),
        setup.post("/rules/rollback", body.clone())
    );

    // Assert
    let mut statuses = vec![first?.status, second?.status];
    statuses.sort();
    assert_eq!(statuses, vec![200, 409]);
    let (rollbacks,): (i64,) =
        sqlx::query_as("select count(*) from workflow_events where event_type = 'ROLLBACK'")
            .fetch_one(&setup.pool)
            .await?;
    assert_eq!(rollbacks, 6);
    let again = setup.post("/rules/rollback", body).await?;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["type"], "/problems/already-rolled-back");
    setup.command.stop().await
}

#[tokio::test]
async fn rolling_back_a_rollback_restores_the_rolled_back_changes() -> anyhow::Result<()> {
    // Arrange
    let setup = setup().await?;
    let before_batch = setup.state().await?;
    let batch = setup.run_rule(vfd_rule()).await?;
    let after_batch = setup.state().await?;
    let rollback = setup
        .post("/rules/rollback", json!({"correlation_id": batch}))
        .await?
        .expect_status(200);

    // Act: redo
    let redo = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": rollback.body["correlation_id"]}),
        )
        .await?
        .expect_status(200);

    // Assert
    assert_eq!(redo.body["restored"], 16);
    assert_eq!(setup.state().await?, after_batch);
    // The log still folds to the live state.
    let mut folded = BTreeMap::new();
    for event in synapse_shared::event_log::read_after(&setup.pool, 0, 100_000).await? {
        if event.event_type.is_state_change() {
            folded.insert(event.aggregate_id, event.payload["after"].clone());
        }
    }
    folded.retain(|_, state| !state.is_null());
    let (assets, cables, relationships): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from assets), (select count(*) from cables), (select count(*) from relationships)",
    )
    .fetch_one(&setup.pool)
    .await?;
    assert_eq!(folded.len() as i64, assets + cables + relationships);
    // The batch itself cannot be rolled back again; the refusal names the redo, which
    // can, and undoes the changes again.
    let again = setup
        .post("/rules/rollback", json!({"correlation_id": batch}))
        .await?;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["type"], "/problems/already-rolled-back");
    assert_eq!(
        again.body["errors"],
        json!({"correlation_id": batch, "rolled_back_by": rollback.body["correlation_id"],
               "redone_by": redo.body["correlation_id"], "undone_again_by": null})
    );
    let detail = again.body["detail"].as_str().unwrap_or_default();
    let redo_id = redo.body["correlation_id"].as_str().unwrap_or_default();
    assert!(detail.contains(&format!("roll back {redo_id}")), "{detail}");
    let undo = setup
        .post("/rules/rollback", json!({"correlation_id": redo_id}))
        .await?
        .expect_status(200);
    assert_eq!(setup.state().await?, before_batch);
    // Once the redo is undone too, the refusal says the changes are undone (before:
    // it still sent the user to the redo, whose rollback was refused in turn).
    let once_more = setup
        .post("/rules/rollback", json!({"correlation_id": batch}))
        .await?;
    assert_eq!(once_more.status, 409);
    assert_eq!(
        once_more.body["errors"],
        json!({"correlation_id": batch, "rolled_back_by": rollback.body["correlation_id"],
               "redone_by": null, "undone_again_by": undo.body["correlation_id"]})
    );
    let detail = once_more.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("undone again"), "{detail}");
    setup.command.stop().await
}

#[tokio::test]
async fn a_batch_partially_rolled_back_whose_rollback_was_redone_is_rolled_back_whole(
) -> anyhow::Result<()> {
    // Arrange: a run marks two motors; a PATCH of one gets in its way; a partial
    // rollback undoes the other, and its rollback (a redo) brings the mark back.
    let setup = setup().await?;
    let before = setup.state().await?;
    let batch = setup
        .run_rule(json!({
            "name": "Two motors are marked", "discipline": "ELECTRICAL",
            "when": "asset.tag in ['M-101', 'M-102']",
            "then": [{"type": "set_property", "name": "marked", "value": "true"}]
        }))
        .await?;
    let in_the_way = setup.asset_id("M-101").await?;
    setup.set_power(in_the_way, &[31]).await?;
    let partial = setup.roll_back_partially(&batch).await?;
    assert_eq!(partial.body["restored"], 1, "{}", partial.body);
    let redo = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": partial.body["correlation_id"]}),
        )
        .await?
        .expect_status(200);
    assert_eq!(redo.body["restored"], 1, "{}", redo.body);

    // Act: the batch rolled back by cascade, after a dry run.
    let preview = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": batch, "mode": "cascade", "dry_run": true}),
        )
        .await?
        .expect_status(200);
    let rollback = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": batch, "mode": "cascade"}),
        )
        .await?
        .expect_status(200);

    // Assert: both motors are as before the run (before: the redone one kept its mark).
    assert_eq!(preview.body["counts"]["restored"], 2, "{}", preview.body);
    assert_eq!(rollback.body["restored"], 2, "{}", rollback.body);
    assert_eq!(setup.state().await?, before);
    setup.command.stop().await
}

#[tokio::test]
async fn a_rollback_answer_lists_at_most_a_thousand_aggregates_and_counts_them_all(
) -> anyhow::Result<()> {
    // Arrange: 1,006 motors, each changed by one batch and then again by a later one.
    let setup = setup().await?;
    setup
        .import_motors("M-2", 1_000, json!({"rated_power_kw": 4}))
        .await?;
    let (motor_count,): (i64,) =
        sqlx::query_as("select count(*) from assets where asset_type = 'ELECTRIC_MOTOR'")
            .fetch_one(&setup.pool)
            .await?;
    assert_eq!(motor_count, 1_006);
    let batch = setup
        .run_rule(motor_rule("Inspect motors", "inspection", "'due'"))
        .await?;

    // Act: a dry run
    let preview = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": batch, "dry_run": true}),
        )
        .await?
        .expect_status(200);

    // Assert: all counted, the first 1,000 listed.
    assert_eq!(
        preview.body["counts"],
        json!({"restored": 1_006, "deleted": 0, "recreated": 0, "conflicts": 0,
               "findings_closed": 0, "findings_reopened": 0})
    );
    assert_eq!(preview.body["truncated"], true);
    assert_eq!(
        preview.body["analysis"]["restorations"]
            .as_array()
            .map(Vec::len),
        Some(1_000)
    );

    // Arrange: a later batch changes every motor again.
    setup
        .run_rule(motor_rule("Inspect motors again", "inspection", "'done'"))
        .await?;
    let before = setup.state().await?;

    // Act: strict
    let refused = setup
        .post("/rules/rollback", json!({"correlation_id": batch}))
        .await?;

    // Assert: 409 with the first 1,000 conflicts, and the detail says how many there are.
    assert_eq!(refused.status, 409);
    assert_eq!(refused.body["type"], "/problems/rollback-conflict");
    assert_eq!(refused.body["errors"].as_array().map(Vec::len), Some(1_000));
    assert_eq!(
        refused.body["detail"],
        "later batches changed 1006 of the aggregates this batch touched; the first 1000 are \
         listed; none is left that a rollback could restore: roll back the later batches \
         first (mode cascade)"
    );
    assert_eq!(
        setup.state().await?,
        before,
        "a refused rollback writes nothing"
    );

    // Act: partial, and its dry run
    let logged = setup.logged().await?;
    let partial = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": batch, "mode": "partial"}),
        )
        .await?;
    let preview = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": batch, "mode": "partial", "dry_run": true}),
        )
        .await?
        .expect_status(200);

    // Assert: every aggregate conflicts and the batch raised no finding, so a partial
    // rollback would restore nothing: it is refused like strict, with the conflicts,
    // appends nothing and leaves the batch as it was (before: 200, an empty rollback
    // batch that the batch then named as its rollback).
    assert_eq!(partial.status, 409, "{partial:?}");
    assert_eq!(partial.body["type"], "/problems/rollback-conflict");
    assert_eq!(partial.body["detail"], refused.body["detail"]);
    assert_eq!(partial.body["errors"].as_array().map(Vec::len), Some(1_000));
    assert_eq!(preview.body["would_roll_back"], false);
    assert_eq!(setup.logged().await?, logged);
    assert_eq!(setup.state().await?, before);
    let (status, rolled_back_by): (String, Option<uuid::Uuid>) = sqlx::query_as(
        "select status, rolled_back_by from batches where correlation_id = $1::uuid",
    )
    .bind(&batch)
    .fetch_one(&setup.pool)
    .await?;
    assert_eq!((status.as_str(), rolled_back_by), ("completed", None));
    setup.command.stop().await
}

#[tokio::test]
async fn a_dry_run_of_a_rollback_reports_and_writes_nothing() -> anyhow::Result<()> {
    // Arrange
    let setup = setup().await?;
    let batch = setup.run_rule(vfd_rule()).await?;
    let state = setup.state().await?;
    let logged = synapse_shared::event_log::head(&setup.pool).await?;

    // Act
    let preview = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": batch, "dry_run": true}),
        )
        .await?
        .expect_status(200);

    // Assert
    assert_eq!(
        preview.body["analysis"]["restorations"]
            .as_array()
            .map(Vec::len),
        Some(16)
    );
    let created: Vec<_> = preview.body["analysis"]["restorations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["change"] == "deleted")
        .collect();
    assert_eq!(
        created.len(),
        12,
        "VFDs, cables and relationships the batch created are deleted"
    );
    assert_eq!(setup.state().await?, state);
    assert_eq!(synapse_shared::event_log::head(&setup.pool).await?, logged);
    let unknown = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": uuid::Uuid::new_v4()}),
        )
        .await?;
    assert_eq!(unknown.status, 404);
    setup.command.stop().await
}

#[tokio::test]
async fn an_edit_landing_between_a_rollbacks_analysis_and_its_append_is_a_concurrent_change_and_writes_nothing(
) -> anyhow::Result<()> {
    // Arrange: a batch, and a rollback that has analysed it but not yet written.
    let setup = setup().await?;
    let batch: uuid::Uuid = setup
        .run_rule(motor_rule("Inspect motors", "inspection", "'due'"))
        .await?
        .parse()?;
    let mut rollback = setup.pool.begin().await?;
    command_service::rollback::cascade::lock_batch(&mut rollback, batch).await?;
    let analysis = command_service::rollback::analyze::analyze(&mut rollback, batch).await?;
    assert_eq!(analysis.restorations.len(), 6);

    // Act: an engineer edits one of the motors meanwhile, then the rollback writes.
    let motor = setup.asset_id("M-103").await?;
    send(
        &setup.http,
        Method::PATCH,
        &setup.command.url(&format!("/assets/{motor}")),
        Some(&json!({"name": "edited meanwhile"})),
    )
    .await?
    .expect_status(200);
    let result = command_service::rollback::restore::restore(
        &mut rollback,
        "admin",
        analysis,
        command_service::rollback::Mode::Strict,
        None,
    )
    .await;

    // Assert: refused as a concurrent change; after abandoning it nothing of it is left.
    assert!(
        matches!(
            result,
            Err(command_service::rollback::RollbackError::Concurrent)
        ),
        "{result:?}"
    );
    rollback.rollback().await?;
    let (rollbacks,): (i64,) =
        sqlx::query_as("select count(*) from workflow_events where event_type = 'ROLLBACK'")
            .fetch_one(&setup.pool)
            .await?;
    assert_eq!(rollbacks, 0);
    let (name,): (Option<String>,) = sqlx::query_as("select name from assets where id = $1")
        .bind(motor)
        .fetch_one(&setup.pool)
        .await?;
    assert_eq!(name.as_deref(), Some("edited meanwhile"));
    setup.command.stop().await
}

/// Cables and relationships naming an asset that does not exist.
async fn dangling_links(pool: &PgPool) -> anyhow::Result<i64> {
    let (count,): (i64,) = sqlx::query_as(
        "select count(*) from (
             select from_asset, to_asset from cables
             union all select from_asset, to_asset from relationships) l
         where not exists (select 1 from assets a where a.id = l.from_asset)
            or not exists (select 1 from assets a where a.id = l.to_asset)",
    )
    .fetch_one(pool)
    .await?;
    Ok(count)
}

/// A refused (409) rollback's first conflict: aggregate, reason, later batches.
fn first_conflict(refused: &Reply) -> (Value, Value, Value) {
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    let conflict = &refused.body["errors"][0];
    (
        conflict["aggregate_id"].clone(),
        conflict["reason"].clone(),
        conflict["later_batches"].clone(),
    )
}

fn correlation_id(reply: &Reply) -> String {
    reply.body["correlation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_rollback_deletes_no_asset_that_later_links_name_and_brings_back_no_link_to_a_gone_asset(
) -> anyhow::Result<()> {
    // Arrange: batch I imports three motors; a later batch links an MCC to QB0002.
    let setup = setup().await?;
    let before = setup.state().await?;
    let import = post_csv(
        &setup.http,
        &setup.command.url("/assets/import"),
        as_csv(&motors("QB", 3, json!({"rated_power_kw": 75}))),
    )
    .await?
    .expect_status(201);
    let imported = correlation_id(&import);
    let (mcc, motor) = (
        setup.asset_id("MCC-U100-01").await?,
        setup.asset_id("QB0002").await?,
    );
    let cable = setup
        .post(
            "/cables",
            json!({"tag": "W-QB0002-PWR", "cable_type": "POWER", "discipline": "ELECTRICAL",
                   "from_asset": mcc, "to_asset": motor}),
        )
        .await?
        .expect_status(201);
    let linked = correlation_id(&cable);

    // Act + Assert: strict is refused, naming the motor, why, and the cable's batch.
    let refused = setup
        .post("/rules/rollback", json!({"correlation_id": imported}))
        .await?;
    assert_eq!(
        first_conflict(&refused),
        (json!(motor), json!("linked"), json!([linked]))
    );
    assert_eq!(refused.body["errors"].as_array().map(Vec::len), Some(1));

    // Act + Assert: partial deletes the other two and keeps the linked motor.
    let partial = setup.roll_back_partially(&imported).await?;
    assert_eq!(partial.body["restored"], 2, "{:?}", partial.body);
    assert_eq!(partial.body["skipped"][0]["reason"], "linked");
    let state = setup.state().await?;
    assert!(state.contains_key("asset:QB0002") && !state.contains_key("asset:QB0000"));
    assert_eq!(dangling_links(&setup.pool).await?, 0);

    // Act + Assert: cascade rolls the cable's batch back first, then the motor goes too
    // (which its dry run says, before: the motor counted as a conflict).
    let previewed = setup
        .preview_cascade(&imported, &[&linked], [0, 1, 0])
        .await?;
    let cascade = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": imported, "mode": "cascade"}),
        )
        .await?
        .expect_status(200);
    assert_eq!(cascade.body["restored"], previewed);
    assert_eq!(setup.state().await?, before);
    assert_eq!(dangling_links(&setup.pool).await?, 0);

    // Arrange: a cable is deleted (batch D), then the motor at its end (batch E).
    let m100 = setup.asset_id("M-100").await?;
    setup
        .post(
            "/cables",
            json!({"tag": "W-M-100-PWR", "cable_type": "POWER", "discipline": "ELECTRICAL",
                   "from_asset": mcc, "to_asset": m100}),
        )
        .await?
        .expect_status(201);
    let (cable_id,): (uuid::Uuid,) =
        sqlx::query_as("select id from cables where tag = 'W-M-100-PWR'")
            .fetch_one(&setup.pool)
            .await?;
    let deleted_cable = setup.delete(&format!("/cables/{cable_id}")).await?;
    let deleted_motor = setup.delete(&format!("/assets/{m100}")).await?;

    // Act + Assert: rolling D back would bring the cable back to a motor that is gone.
    let refused = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": correlation_id(&deleted_cable)}),
        )
        .await?;
    assert_eq!(
        first_conflict(&refused),
        (
            json!(cable_id),
            json!("end_gone"),
            json!([correlation_id(&deleted_motor)])
        )
    );

    // Act + Assert: cascade brings the motor back first, then the cable.
    setup
        .preview_cascade(
            &correlation_id(&deleted_cable),
            &[&correlation_id(&deleted_motor)],
            [0, 0, 1],
        )
        .await?;
    setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": correlation_id(&deleted_cable), "mode": "cascade"}),
        )
        .await?
        .expect_status(200);
    let state = setup.state().await?;
    assert!(state.contains_key("asset:M-100") && state.contains_key("cable:W-M-100-PWR"));
    assert_eq!(dangling_links(&setup.pool).await?, 0);
    setup.command.stop().await
}

#[tokio::test]
async fn a_rule_version_that_changes_a_findings_severity_raises_it_again_and_a_rollback_restores_it(
) -> anyhow::Result<()> {
    // Arrange: version 1 flags every motor as a warning; version 2 makes it an error.
    let setup = setup().await?;
    let flag = |severity: &str| {
        json!({"name": "Motors are reviewed", "discipline": "ELECTRICAL",
               "when": "asset.asset_type == 'ELECTRIC_MOTOR'",
               "then": [{"type": "flag", "severity": severity, "message": "review {asset.tag}"}]})
    };
    let rule = setup
        .post("/rules", flag("warning"))
        .await?
        .expect_status(201)
        .body["id"]
        .clone();
    let run = || async {
        let report = setup
            .post("/rules/execute", json!({"rule_ids": [rule], "wait": true}))
            .await?
            .expect_status(200);
        anyhow::Ok(report.body)
    };
    run().await?;
    let findings = || async {
        let rows: Vec<(String, String, Option<i32>)> =
            sqlx::query_as("select message, severity, rule_version from findings order by message")
                .fetch_all(&setup.pool)
                .await?;
        anyhow::Ok(rows)
    };
    let warnings = findings().await?;
    send(
        &setup.http,
        Method::PUT,
        &setup
            .command
            .url(&format!("/rules/{}", rule.as_str().unwrap_or_default())),
        Some(&flag("error")),
    )
    .await?
    .expect_status(200);

    // Act: a dry run, the run, the same run again, then a rollback of the run.
    let dry_run = setup
        .post(
            "/rules/execute",
            json!({"rule_ids": [rule], "dry_run": true}),
        )
        .await?
        .expect_status(200);
    let raised_again = run().await?;
    let errors = findings().await?;
    let again = run().await?;
    let rollback_preview = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": raised_again["correlation_id"], "dry_run": true}),
        )
        .await?
        .expect_status(200);
    let rollback = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": raised_again["correlation_id"]}),
        )
        .await?
        .expect_status(200);

    // Assert: each motor's finding is resolved and raised again as an error by version
    // 2 (before: skipped as "already in desired state", a warning for ever); the next
    // run changes nothing; the rollback brings the warnings back as version 1 raised them.
    assert_eq!(warnings.len(), 6);
    assert!(warnings
        .iter()
        .all(|(_, severity, version)| severity == "warning" && *version == Some(1)));
    let counts = &dry_run.body["totals"];
    assert_eq!(
        (&counts["findings"], &counts["findings_resolved"]),
        (&json!(6), &json!(6)),
        "{counts}"
    );
    let totals = &raised_again["totals"];
    assert_eq!(
        (&totals["findings"], &totals["findings_resolved"]),
        (&json!(6), &json!(6)),
        "{totals}"
    );
    assert_eq!(
        errors,
        warnings
            .iter()
            .map(|(message, _, _)| (message.clone(), "error".to_owned(), Some(2)))
            .collect::<Vec<_>>()
    );
    assert_eq!(again["totals"]["skipped"], 6, "{again}");
    assert_eq!(again["totals"]["findings"], 0, "{again}");
    assert_eq!(findings().await?, warnings);
    // The rollback's preview and answer say what it did to the findings (before: 0
    // restored and nothing else, though it closed 6 and reopened 6).
    let previewed = &rollback_preview.body["counts"];
    assert_eq!(
        (
            &previewed["findings_closed"],
            &previewed["findings_reopened"]
        ),
        (&json!(6), &json!(6)),
        "{previewed}"
    );
    assert_eq!(
        (
            &rollback.body["findings_closed"],
            &rollback.body["findings_reopened"]
        ),
        (&json!(6), &json!(6)),
        "{}",
        rollback.body
    );
    // The rollback's events in log order: its start first, its end last, the batch's
    // versions growing with the positions (before, with no aggregate to restore, the
    // 12 finding events came before `BATCH_STARTED`).
    let rollback_id = rollback.body["correlation_id"]
        .as_str()
        .and_then(|id| id.parse::<Uuid>().ok())
        .context("the rollback's correlation_id")?;
    let order: Vec<(String, i64)> = sqlx::query_as(
        "select event_type, aggregate_version from workflow_events
         where correlation_id = $1 order by position",
    )
    .bind(rollback_id)
    .fetch_all(&setup.pool)
    .await?;
    let types: Vec<&str> = order.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(types.first(), Some(&"BATCH_STARTED"), "{types:?}");
    assert_eq!(types.last(), Some(&"BATCH_COMPLETED"), "{types:?}");
    assert_eq!(order.len(), 15, "{types:?}");
    let versions: Vec<i64> = order.iter().map(|(_, version)| *version).collect();
    assert!(
        versions.windows(2).all(|pair| pair[0] < pair[1]),
        "{versions:?}"
    );
    setup.command.stop().await
}

#[tokio::test]
async fn two_cascades_of_one_batch_at_once_roll_it_back_once() -> anyhow::Result<()> {
    // Arrange: a run marks every motor; three later edits of one motor are in the way.
    let setup = setup().await?;
    let before = setup.state().await?;
    let batch = setup
        .run_rule(motor_rule("Motors are reviewed", "review", "'due'"))
        .await?;
    let motor = setup.asset_id("M-100").await?;
    setup.set_power(motor, &[20, 25, 30]).await?;
    let cascade = json!({"correlation_id": batch, "mode": "cascade"});

    // Act: two cascades at once.
    let (first, second) = tokio::join!(
        setup.post("/rules/rollback", cascade.clone()),
        setup.post("/rules/rollback", cascade.clone())
    );

    // Assert: one rolls the three edits and the run back, the other finds the run
    // rolled back (before: each rolled back the other's rollbacks until both gave up
    // at the step limit, with over a hundred rollbacks written and the run as it was).
    let mut statuses = [first?.status, second?.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let (rollbacks,): (i64,) =
        sqlx::query_as("select count(*) from batches where kind = 'rollback'")
            .fetch_one(&setup.pool)
            .await?;
    assert_eq!(rollbacks, 4);
    assert_eq!(setup.state().await?, before);
    setup.command.stop().await
}

#[tokio::test]
async fn a_partial_rollback_leaves_the_findings_of_the_assets_it_skips() -> anyhow::Result<()> {
    // Arrange: a run marks every motor and flags it; one motor is changed since.
    let setup = setup().await?;
    let before = setup.state().await?;
    let mut rule = motor_rule("Motors are reviewed", "review", "'due'");
    if let Some(then) = rule["then"].as_array_mut() {
        then.push(json!({"type": "flag", "severity": "warning", "message": "review {asset.tag}"}));
    }
    let batch = setup.run_rule(rule).await?;
    let changed = setup.asset_id("M-101").await?;
    setup.set_power(changed, &[40]).await?;
    let flagged = |state: &BTreeMap<String, Value>| -> Vec<String> {
        state
            .keys()
            .filter(|key| key.starts_with("finding:"))
            .cloned()
            .collect()
    };
    assert_eq!(flagged(&setup.state().await?).len(), 6);

    // Act
    let partial = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": batch, "mode": "partial"}),
        )
        .await?
        .expect_status(200);

    // Assert: the five other motors are as before the run, without findings; the
    // skipped one keeps the run's change and its finding (before: its finding was
    // closed while its change stayed).
    assert_eq!(partial.body["skipped_count"], 1, "{:?}", partial.body);
    let state = setup.state().await?;
    assert_eq!(flagged(&state), [format!("finding:{changed}:review M-101")]);
    assert_eq!(state["asset:M-101"]["properties"]["review"], "due");
    for (key, value) in &before {
        if key != "asset:M-101" {
            assert_eq!(state.get(key), Some(value), "{key}");
        }
    }
    let (resolved,): (i64,) = sqlx::query_as(
        "select count(*) from workflow_events
         where correlation_id = $1::uuid and event_type = 'FINDING_RESOLVED'",
    )
    .bind(partial.body["correlation_id"].as_str())
    .fetch_one(&setup.pool)
    .await?;
    assert_eq!(resolved, 5);
    setup.command.stop().await
}

#[tokio::test]
async fn a_rollback_that_would_bring_back_a_relationship_another_one_repeats_now_is_a_conflict(
) -> anyhow::Result<()> {
    // Arrange: M-100 FEEDS M-101 (batch C); it is deleted (batch D), then made again as
    // a new relationship (batch N).
    let setup = setup().await?;
    let (from, to) = (
        setup.asset_id("M-100").await?,
        setup.asset_id("M-101").await?,
    );
    let feeds = json!({"kind": "FEEDS", "from_asset": from, "to_asset": to});
    setup
        .post("/relationships", feeds.clone())
        .await?
        .expect_status(201);
    let relationship_id = || async {
        let (id,): (uuid::Uuid,) = sqlx::query_as("select id from relationships")
            .fetch_one(&setup.pool)
            .await?;
        anyhow::Ok(id)
    };
    let old = relationship_id().await?;
    let before = setup.state().await?;
    let deleted = setup.delete(&format!("/relationships/{old}")).await?;
    let created = setup
        .post("/relationships", feeds)
        .await?
        .expect_status(201);
    let after_new = setup.state().await?;
    // Act + Assert: the dry run says it would not roll back, strict and partial are
    // refused naming the new relationship's batch, and nothing is written (before: a
    // dry run that would roll back, then a 500 from the unique index).
    setup
        .refused_as_taken(&deleted, &created, old, "link_taken")
        .await?;
    let partial = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": correlation_id(&deleted), "mode": "partial"}),
        )
        .await?;
    assert_eq!(partial.status, 409, "{:?}", partial.body);
    assert_eq!(setup.state().await?, after_new);

    // Act + Assert: cascade rolls the new relationship back first, then brings the old
    // one back.
    setup.cascaded_back(&deleted, &created, &before).await?;
    assert_eq!(relationship_id().await?, old);
    setup.command.stop().await
}

#[tokio::test]
async fn a_rollback_that_would_bring_back_a_tag_another_asset_has_now_is_a_conflict(
) -> anyhow::Result<()> {
    // Arrange: M-100 is deleted (batch D), then a new asset takes its tag (batch N).
    let setup = setup().await?;
    let before = setup.state().await?;
    let (old, deleted, created) = setup.delete_m100_and_reuse_its_tag().await?;
    let after_new = setup.state().await?;
    // Act + Assert: the dry run says it would not roll back, and strict is a 409 naming
    // the tag's new holder's batch; nothing is written (before: a 500).
    setup
        .refused_as_taken(&deleted, &created, old, "tag_taken")
        .await?;
    assert_eq!(setup.state().await?, after_new);

    // Act + Assert: cascade rolls the new asset back first, then brings M-100 back.
    setup.cascaded_back(&deleted, &created, &before).await?;
    assert_eq!(setup.asset_id("M-100").await?, old);
    setup.command.stop().await
}

#[tokio::test]
async fn a_tag_reused_and_changed_since_names_the_batch_that_took_it_and_a_cascade_does_what_its_dry_run_says(
) -> anyhow::Result<()> {
    // Arrange: M-100 is deleted (batch D), a new asset takes its tag (batch N), and a
    // later batch (L) changes the new one (a helper, area D: the conflict named L, the
    // cascade's dry run said it would roll back L and then D, and the real cascade rolled
    // L back, then answered 409 `tag_taken`, naming its own rollback of L).
    let setup = setup().await?;
    let before = setup.state().await?;
    let (old, deleted, created) = setup.delete_m100_and_reuse_its_tag().await?;
    let new = setup.asset_id("M-100").await?;
    let changed = send(
        &setup.http,
        Method::PATCH,
        &setup.command.url(&format!("/assets/{new}")),
        Some(&json!({"properties": {"rated_power_kw": 90}})),
    )
    .await?
    .expect_status(200);

    // Act + Assert: strict is refused naming N, the batch that took the tag, and the
    // tag (the asset is gone: as the deletion knew it).
    setup
        .refused_as_taken(&deleted, &created, old, "tag_taken")
        .await?;
    let refused = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": correlation_id(&deleted)}),
        )
        .await?;
    assert_eq!(
        refused.body["errors"][0]["tag"], "M-100",
        "{:?}",
        refused.body
    );
    // The cascade's dry run rolls back L, then N, then D; the cascade does that.
    let batch = correlation_id(&deleted);
    let (later, taker) = (correlation_id(&changed), correlation_id(&created));
    setup
        .preview_cascade(&batch, &[&later, &taker], [0, 0, 1])
        .await?;
    let cascade = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": batch, "mode": "cascade"}),
        )
        .await?
        .expect_status(200);
    assert_eq!(
        cascade.body["cascaded"]
            .as_array()
            .map(|cascaded| cascaded.len()),
        Some(2),
        "{:?}",
        cascade.body
    );
    assert_eq!(setup.state().await?, before);
    assert_eq!(setup.asset_id("M-100").await?, old);
    setup.command.stop().await
}

#[tokio::test]
async fn a_cascade_rolls_back_a_redo_in_its_way_as_its_dry_run_says() -> anyhow::Result<()> {
    // Arrange: B1 and B2 change M-100; B2 is rolled back (RB2), and RB2 rolled back
    // (RRB2: B2's change is back). A helper, area E: the cascade of B1 passed RRB2 over
    // as "a rollback of a later batch", went round B2 (already rolled back) and answered
    // 422 `cascade-too-long`, while its dry run said it would roll B1 back.
    let setup = setup().await?;
    let before = setup.state().await?;
    let motor = setup.asset_id("M-100").await?;
    let (http, url) = (&setup.http, setup.command.url(&format!("/assets/{motor}")));
    let patch = |power: i64| {
        let url = url.clone();
        async move {
            let body = json!({"properties": {"rated_power_kw": power}});
            send(http, Method::PATCH, &url, Some(&body)).await
        }
    };
    let first = patch(1).await?.expect_status(200);
    let second = patch(2).await?.expect_status(200);
    let undo = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": correlation_id(&second)}),
        )
        .await?
        .expect_status(200);
    let redo = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": correlation_id(&undo)}),
        )
        .await?
        .expect_status(200);

    // Act + Assert: the dry run rolls the redo back first, and so does the cascade,
    // which leaves M-100 as it was before B1.
    let batch = correlation_id(&first);
    let strict = setup
        .post("/rules/rollback", json!({"correlation_id": batch}))
        .await?;
    assert_eq!(
        (
            &strict.body["errors"][0]["tag"],
            &strict.body["errors"][0]["reason"]
        ),
        (&json!("M-100"), &json!("changed")),
        "{:?}",
        strict.body
    );
    setup
        .preview_cascade(&batch, &[&correlation_id(&redo)], [1, 0, 0])
        .await?;
    let cascade = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": batch, "mode": "cascade"}),
        )
        .await?
        .expect_status(200);
    assert_eq!(
        cascade.body["cascaded"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        cascade.body
    );
    assert_eq!(setup.state().await?, before);
    setup.command.stop().await
}

#[tokio::test]
async fn a_rollback_dry_run_counts_the_findings_of_assets_it_brings_back_or_deletes(
) -> anyhow::Result<()> {
    // Arrange: every motor is flagged (F); M-100 is deleted (D, which closes its
    // finding); M-900 is made (C) and flagged by a second run (F2). A helper, area E:
    // the dry run of D's rollback said 0 findings reopened where the rollback reopened
    // 1 (M-100 did not exist yet when counted), and that of C's 0 closed where the
    // rollback closed F2's finding on the motor it deletes.
    let setup = setup().await?;
    let flag = json!({"name": "Motors are reviewed", "discipline": "ELECTRICAL",
                      "when": "asset.asset_type == 'ELECTRIC_MOTOR'",
                      "then": [{"type": "flag", "severity": "warning",
                                "message": "review {asset.tag}"}]});
    let rule = setup.post("/rules", flag).await?.expect_status(201).body["id"].clone();
    let run = || async {
        setup
            .post(
                "/rules/execute",
                json!({"rule_ids": [rule.clone()], "wait": true}),
            )
            .await
            .map(|reply| reply.expect_status(200))
    };
    run().await?;
    let old = setup.asset_id("M-100").await?;
    let deleted = setup.delete(&format!("/assets/{old}")).await?;
    let created = setup
        .post(
            "/assets",
            json!({"tag": "M-900", "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL"}),
        )
        .await?
        .expect_status(201);
    run().await?;

    // Act + Assert: each dry run counts what its rollback then does.
    for (batch, counted) in [
        (correlation_id(&deleted), "findings_reopened"),
        (correlation_id(&created), "findings_closed"),
    ] {
        let preview = setup
            .post(
                "/rules/rollback",
                json!({"correlation_id": batch, "dry_run": true}),
            )
            .await?
            .expect_status(200);
        let rollback = setup
            .post("/rules/rollback", json!({"correlation_id": batch}))
            .await?
            .expect_status(200);
        assert_eq!(rollback.body[counted], 1, "{:?}", rollback.body);
        assert_eq!(
            preview.body["counts"][counted], rollback.body[counted],
            "{counted}: {:?}",
            preview.body
        );
        for other in ["findings_closed", "findings_reopened"] {
            assert_eq!(
                preview.body["counts"][other], rollback.body[other],
                "{other}"
            );
        }
    }
    setup.command.stop().await
}

#[tokio::test]
async fn a_rollback_dry_run_keeps_its_idempotency_key_like_any_command() -> anyhow::Result<()> {
    // Arrange: a batch to roll back.
    let setup = setup().await?;
    let batch = setup.run_rule(vfd_rule()).await?;
    let logged = setup.logged().await?;
    let url = setup.command.url("/rules/rollback");
    let post = |body: Value, key: &str| {
        setup
            .http
            .post(&url)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let preview = json!({"correlation_id": batch, "dry_run": true});

    // Act
    let bad_key = post(preview.clone(), &"k".repeat(201)).await?;
    let first = Reply::from(post(preview.clone(), "preview-1").await?).await?;
    let again = Reply::from(post(preview, "preview-1").await?).await?;
    let reused = Reply::from(post(json!({"correlation_id": batch}), "preview-1").await?).await?;

    // Assert: a bad key is refused as on the real rollback; the retry answers the
    // first analysis; the key is not free for the real rollback, which did not run.
    assert_eq!(bad_key.status().as_u16(), 400);
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["would_roll_back"], true);
    assert_eq!((again.status, &again.body), (200, &first.body));
    assert_eq!(reused.status, 422, "{:?}", reused.body);
    assert_eq!(reused.body["type"], "/problems/idempotency-key-reused");
    assert_eq!(setup.logged().await?, logged);
    setup.command.stop().await
}

#[tokio::test]
async fn a_partial_rollback_redone_then_undone_leaves_the_batch_finishable_by_a_cascade(
) -> anyhow::Result<()> {
    // Arrange: an execution E over the small plant's motors; a later PATCH P of one
    // of them; E rolled back partially (RP: that motor is a conflict), RP rolled back
    // (RR: E's changes back), RR rolled back (RRR: undone again). Found by a helper:
    // E's changes were then in no rollback's marks, so every rollback of E counted
    // them as conflicts and a cascade answered 422 "more than 50 batches".
    let setup = setup().await?;
    let before = setup.state().await?;
    let execution = setup
        .run_rule(motor_rule("Oil", "oil", "'ISO VG 220'"))
        .await?;
    let motor = setup.asset_id("M-101").await?;
    let patch = setup.set_power(motor, &[99]).await?;
    let partial = setup.roll_back_partially(&execution).await?;
    let redo = setup.roll_back(&partial.body["correlation_id"]).await?;
    let (redo_id,): (String,) = sqlx::query_as(
        "select correlation_id::text from batches
         where kind = 'rollback' and request ->> 'target_correlation_id' = $1",
    )
    .bind(partial.body["correlation_id"].as_str().unwrap_or_default())
    .fetch_one(&setup.pool)
    .await?;
    setup.roll_back(&json!(redo_id)).await?;
    let undone = setup.state().await?;

    // Act
    let preview = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": execution, "mode": "cascade", "dry_run": true}),
        )
        .await?
        .expect_status(200);
    let cascade = setup
        .post(
            "/rules/rollback",
            json!({"correlation_id": execution, "mode": "cascade"}),
        )
        .await?;

    // Assert: the cascade rolls back P, then only what is left of E (M-101), as its
    // dry run says, and the plant is as before E.
    assert_ne!(undone, before, "M-101 keeps E's change and P's");
    assert!(redo.as_u64().is_some_and(|restored| restored > 0));
    assert_eq!(preview.body["cascade"], json!(patch), "{}", preview.body);
    assert_eq!(preview.body["counts"]["restored"], 1, "{}", preview.body);
    let cascade = cascade.expect_status(200);
    assert_eq!(cascade.body["restored"], 1, "{}", cascade.body);
    assert_eq!(setup.state().await?, before);
    setup.command.stop().await
}
