//! Property: over random sequences of single changes, executions and rollbacks, every
//! successful rollback restores exactly what its batch touched, the log replays to the
//! live state, and the read model agrees with the log.

use proptest::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::BTreeMap;
use synapse_tests::apps::System;
use synapse_tests::client::send;
use synapse_tests::plant::{small_plant, vfd_rule};

#[derive(Debug, Clone)]
enum Step {
    Create,
    Patch { asset: u8, value: i32 },
    Delete(u8),
    Execute(u8),
    Rollback(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Create),
        (any::<u8>(), 1..500i32).prop_map(|(asset, value)| Step::Patch { asset, value }),
        any::<u8>().prop_map(Step::Delete),
        (0..2u8).prop_map(Step::Execute),
        any::<u8>().prop_map(Step::Rollback),
        any::<u8>().prop_map(Step::Rollback),
    ]
}

/// Content of every aggregate (and finding), without versions.
async fn state(pool: &PgPool) -> anyhow::Result<BTreeMap<String, Value>> {
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "select id::text, to_jsonb(a) - 'version' from assets a
         union all select id::text, to_jsonb(c) - 'version' from cables c
         union all select id::text, to_jsonb(r) - 'version' from relationships r
         union all select 'finding:' || asset_id || ':' || message, to_jsonb(severity) from findings",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

async fn run_case(steps: Vec<Step>) -> anyhow::Result<()> {
    let system = System::start().await?;
    let pool = PgPool::connect(&system.database.url).await?;
    let http = &system.http;
    let command = |path: &str| system.command.url(path);
    for asset in small_plant() {
        send(http, Method::POST, &command("/assets"), Some(&asset))
            .await?
            .expect_status(201);
    }
    let mut rules = Vec::new();
    for rule in [
        vfd_rule(),
        json!({"name": "Inspect motors", "discipline": "ELECTRICAL",
        "when": "asset.asset_type == 'ELECTRIC_MOTOR'",
        "then": [{"type": "set_property", "name": "inspection", "value": "'due'"}]}),
    ] {
        rules.push(
            send(http, Method::POST, &command("/rules"), Some(&rule))
                .await?
                .expect_status(201)
                .body["id"]
                .clone(),
        );
    }
    // Batches in order, each with the state just before it.
    let mut batches: Vec<(String, BTreeMap<String, Value>)> = Vec::new();
    let mut created = 0;
    for step in steps {
        let before = state(&pool).await?;
        let ids: Vec<String> =
            sqlx::query_as::<_, (uuid::Uuid,)>("select id from assets order by tag")
                .fetch_all(&pool)
                .await?
                .into_iter()
                .map(|(id,)| id.to_string())
                .collect();
        let pick = |index: u8| ids.get(index as usize % ids.len().max(1)).cloned();
        let correlation_id = match step {
            Step::Create => {
                created += 1;
                let reply = send(http, Method::POST, &command("/assets"), Some(&json!({
                    "tag": format!("M-9{created:02}"), "asset_type": "ELECTRIC_MOTOR", "discipline": "ELECTRICAL",
                    "area": "U100", "properties": {"rated_power_kw": 60 + created, "mcc": "MCC-U100-01"}}))).await?;
                reply.body["correlation_id"].as_str().map(str::to_owned)
            }
            Step::Patch { asset, value } => match pick(asset) {
                Some(id) => send(
                    http,
                    Method::PATCH,
                    &command(&format!("/assets/{id}")),
                    Some(&json!({"properties": {"rated_power_kw": value}})),
                )
                .await?
                .body["correlation_id"]
                    .as_str()
                    .map(str::to_owned),
                None => None,
            },
            Step::Delete(asset) => match pick(asset) {
                Some(id) => send(
                    http,
                    Method::DELETE,
                    &command(&format!("/assets/{id}")),
                    None,
                )
                .await?
                .body["correlation_id"]
                    .as_str()
                    .map(str::to_owned),
                None => None,
            },
            Step::Execute(rule) => {
                let report = send(
                    http,
                    Method::POST,
                    &command("/rules/execute"),
                    Some(&json!({"rule_ids": [rules[rule as usize % rules.len()]], "wait": true})),
                )
                .await?
                .expect_status(200);
                report.body["correlation_id"].as_str().map(str::to_owned)
            }
            Step::Rollback(index) => {
                if batches.is_empty() {
                    continue;
                }
                let (target, before_target) = batches[index as usize % batches.len()].clone();
                let reply = send(
                    http,
                    Method::POST,
                    &command("/rules/rollback"),
                    Some(&json!({"correlation_id": target})),
                )
                .await?;
                prop_assert_ok(
                    reply.status == 200 || reply.status == 409,
                    &format!("rollback answered {reply:?}"),
                )?;
                if reply.status == 200 {
                    // Property: what the batch touched is as before it; the rest as before the rollback.
                    let touched: Vec<String> = sqlx::query_as::<_, (uuid::Uuid,)>(
                        "select distinct aggregate_id from workflow_events where correlation_id = $1::uuid and aggregate_type <> 'batch'")
                        .bind(&target).fetch_all(&pool).await?.into_iter().map(|(id,)| id.to_string()).collect();
                    let mut expected = before.clone();
                    for id in &touched {
                        match before_target.get(id) {
                            Some(content) => expected.insert(id.clone(), content.clone()),
                            None => expected.remove(id),
                        };
                    }
                    // Findings the batch raised are gone with it.
                    let raised: Vec<String> = sqlx::query_as::<_, (String,)>(
                        "select 'finding:' || (payload->>'asset_id') || ':' || (payload->>'message') from workflow_events
                         where correlation_id = $1::uuid and event_type = 'FINDING_RAISED'")
                        .bind(&target).fetch_all(&pool).await?.into_iter().map(|(key,)| key).collect();
                    for key in raised {
                        expected.remove(&key);
                    }
                    prop_assert_ok(
                        state(&pool).await? == expected,
                        "a rollback restores exactly its batch",
                    )?;
                }
                reply.body["correlation_id"].as_str().map(str::to_owned)
            }
        };
        if let Some(correlation_id) = correlation_id {
            batches.push((correlation_id, before));
        }
    }
    // The log replays to the live state.
    let mut folded = BTreeMap::new();
    for event in synapse_shared::event_log::read_after(&pool, 0, 1_000_000).await? {
        if event.event_type.is_state_change() {
            folded.insert(
                event.aggregate_id.to_string(),
                event.payload["after"].clone(),
            );
        }
    }
    folded.retain(|_, state| !state.is_null());
    let live: Vec<(uuid::Uuid, Value)> = sqlx::query_as(
        "select id, to_jsonb(a) from assets a union all select id, to_jsonb(c) from cables c
         union all select id, to_jsonb(r) from relationships r",
    )
    .fetch_all(&pool)
    .await?;
    let live: BTreeMap<String, Value> = live
        .into_iter()
        .map(|(id, state)| (id.to_string(), state))
        .collect();
    prop_assert_ok(
        normalise(&folded) == normalise(&live),
        "the log replays to the live state",
    )?;
    // The read model agrees with the log.
    system.wait_for_projection().await?;
    let projected: Vec<(uuid::Uuid, Value)> =
        sqlx::query_as("select aggregate_id, state from rm_aggregates where state is not null")
            .fetch_all(&pool)
            .await?;
    let projected: BTreeMap<String, Value> = projected
        .into_iter()
        .map(|(id, state)| (id.to_string(), state))
        .collect();
    prop_assert_ok(projected == folded, "the read model equals the log")?;
    Ok(())
}

/// Table rows and event payloads spell a state alike up to null-vs-absent fields.
fn normalise(states: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    states
        .iter()
        .map(|(id, state)| {
            let mut state = state.clone();
            if let Some(object) = state.as_object_mut() {
                object.retain(|_, value| !value.is_null());
            }
            (id.clone(), state)
        })
        .collect()
}

fn prop_assert_ok(condition: bool, message: &str) -> anyhow::Result<()> {
    anyhow::ensure!(condition, "{message}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 20, .. ProptestConfig::default() })]

    #[test]
    fn random_histories_roll_back_exactly_and_replay_to_the_live_state(steps in proptest::collection::vec(step(), 4..12)) {
        let runtime = tokio::runtime::Runtime::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime.block_on(run_case(steps)).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    }
}
