//! `bench rollback`: execute the rule over a plant, roll the batch back, compare the
//! times, and check the state after the rollback is the state before the execution.

use crate::api;
use crate::environment::{with_environment, Endpoints};
use crate::plant::{self, StateDigest};
use crate::report::{self, Table};
use crate::scenario::{self, seconds};
use anyhow::bail;
use serde_json::json;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// Assets in the plant.
    #[arg(long, default_value_t = 10_000)]
    pub assets: usize,
    /// Instead: a later batch changes the same motors again, and the rollback of the
    /// first is partial (every motor a conflict, every cable deleted).
    #[arg(long)]
    pub conflicting: bool,
    /// Also print the results as one JSON line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

struct Measured {
    assets: usize,
    execution_events: i64,
    execution: Duration,
    /// Peak memory of the service during the execution, and of a fresh one during the
    /// rollback.
    execution_peak_kib: u64,
    rollback_peak_kib: u64,
    rollback_events: i64,
    restored: u64,
    rollback: Duration,
    before: StateDigest,
    after_execution: StateDigest,
    after_rollback: StateDigest,
}

pub async fn run(args: RollbackArgs) -> anyhow::Result<()> {
    if args.assets <= plant::MCCS {
        bail!("--assets must be more than {}", plant::MCCS);
    }
    let assets = args.assets;
    if args.conflicting {
        return run_conflicting(args).await;
    }
    eprintln!("rollback: {assets} assets ...");
    let measured = with_environment(&args.endpoints, async |environment| {
        scenario::import_plant(environment, assets, true).await?;
        let rule_id = scenario::define_rule(environment).await?;
        let pool = environment.pool().await?;
        let before = plant::state_digest(&pool).await?;
        let executed = scenario::execute(environment, &rule_id, false).await?;
        let after_execution = plant::state_digest(&pool).await?;
        // A fresh service, with the execution's events already published, so that its
        // peak memory is the rollback's own and its relay publishes only the rollback.
        scenario::wait_for_relay(environment, scenario::RELAY_CATCH_UP).await?;
        environment.start_service(true).await?;
        let url = environment.service()?.url("/rules/rollback");
        let body = json!({"correlation_id": executed.correlation_id});
        let answer = api::post_json(&environment.http, &url, &body, "POST /rules/rollback").await?;
        let rollback_id: uuid::Uuid = api::field(&answer.body, "correlation_id")?.parse()?;
        let (rollback_events,): (i64,) =
            sqlx::query_as("select count(*) from workflow_events where correlation_id = $1")
                .bind(rollback_id)
                .fetch_one(&pool)
                .await?;
        let rollback_peak_kib = environment.service()?.peak_memory_kib()?;
        let after_rollback = plant::state_digest(&pool).await?;
        Ok(Measured {
            execution_peak_kib: executed.peak_kib,
            rollback_peak_kib,
            assets,
            execution_events: executed.events,
            execution: executed.elapsed,
            rollback_events,
            restored: answer.body["restored"].as_u64().unwrap_or(0),
            rollback: answer.elapsed,
            before,
            after_execution,
            after_rollback,
        })
    })
    .await?;
    let restored_state = measured.after_rollback == measured.before;
    let changed_state = measured.after_execution != measured.before;
    let ratio = seconds(measured.rollback) / seconds(measured.execution).max(f64::EPSILON);
    let mut table = Table::new(
        format!(
            "bench rollback: {} assets, one rule (set_property + upsert_cable)",
            report::count(measured.assets as f64)
        ),
        &["", "execution", "rollback"],
    );
    table.row(vec![
        "wall time".into(),
        report::secs(seconds(measured.execution)),
        report::secs(seconds(measured.rollback)),
    ]);
    table.row(vec![
        "events appended".into(),
        report::count(measured.execution_events as f64),
        report::count(measured.rollback_events as f64),
    ]);
    table.row(vec![
        "peak memory (VmHWM)".into(),
        report::mib(measured.execution_peak_kib),
        report::mib(measured.rollback_peak_kib),
    ]);
    table.row(vec![
        "aggregates restored".into(),
        String::new(),
        report::count(measured.restored as f64),
    ]);
    table.row(vec![
        "ratio rollback / execution".into(),
        String::new(),
        report::ratio(ratio),
    ]);
    table.print();
    let digest = |d: &StateDigest| format!("{} rows, md5 {}", d.rows, d.md5);
    println!("state before execution:   {}", digest(&measured.before));
    println!(
        "state after execution:    {}",
        digest(&measured.after_execution)
    );
    println!(
        "state after rollback:     {}",
        digest(&measured.after_rollback)
    );
    println!(
        "state after rollback equals state before: {}",
        if restored_state { "yes" } else { "NO" }
    );
    if args.json {
        report::json_line(&json!({
            "bench": "rollback",
            "assets": measured.assets,
            "execution_seconds": seconds(measured.execution),
            "execution_events": measured.execution_events,
            "rollback_seconds": seconds(measured.rollback),
            "rollback_events": measured.rollback_events,
            "execution_peak_kib": measured.execution_peak_kib,
            "rollback_peak_kib": measured.rollback_peak_kib,
            "restored": measured.restored,
            "ratio": ratio,
            "state_before": measured.before,
            "state_after_execution": measured.after_execution,
            "state_after_rollback": measured.after_rollback,
            "restored_state": restored_state,
        }));
    }
    if !changed_state {
        bail!("the execution changed nothing: the rollback check means nothing");
    }
    if !restored_state {
        bail!("the state after the rollback differs from the state before the execution");
    }
    Ok(())
}

/// What `--conflicting` measured.
struct Conflicting {
    execution: Duration,
    execution_peak_kib: u64,
    later: Duration,
    rollback: Duration,
    rollback_peak_kib: u64,
    restored: u64,
    skipped_count: u64,
    skipped_listed: usize,
}

/// Execute, execute a later rule over the same motors, then roll the first batch back
/// partially with a fresh service.
async fn run_conflicting(args: RollbackArgs) -> anyhow::Result<()> {
    let assets = args.assets;
    eprintln!("rollback --conflicting: {assets} assets ...");
    let measured = with_environment(&args.endpoints, async |environment| {
        scenario::import_plant(environment, assets, true).await?;
        let rule_id = scenario::define_rule(environment).await?;
        let executed = scenario::execute(environment, &rule_id, false).await?;
        let later_id = scenario::define(environment, &plant::follow_up_rule()).await?;
        let later = scenario::execute(environment, &later_id, false).await?;
        scenario::wait_for_relay(environment, scenario::RELAY_CATCH_UP).await?;
        environment.start_service(true).await?;
        let url = environment.service()?.url("/rules/rollback");
        let body = json!({"correlation_id": executed.correlation_id, "mode": "partial"});
        let answer = api::post_json(&environment.http, &url, &body, "POST /rules/rollback").await?;
        Ok(Conflicting {
            execution: executed.elapsed,
            execution_peak_kib: executed.peak_kib,
            later: later.elapsed,
            rollback: answer.elapsed,
            rollback_peak_kib: environment.service()?.peak_memory_kib()?,
            restored: answer.body["restored"].as_u64().unwrap_or(0),
            skipped_count: answer.body["skipped_count"].as_u64().unwrap_or(0),
            skipped_listed: answer.body["skipped"].as_array().map_or(0, Vec::len),
        })
    })
    .await?;
    let expected = plant::expected_matches(assets) as u64;
    let mut table = Table::new(
        format!(
            "bench rollback --conflicting: {} assets; a later batch changed the {} motors again",
            report::count(assets as f64),
            report::count(expected as f64)
        ),
        &["", "wall time", "peak memory (VmHWM)"],
    );
    table.row(vec![
        "execution".into(),
        report::secs(seconds(measured.execution)),
        report::mib(measured.execution_peak_kib),
    ]);
    table.row(vec![
        "later execution".into(),
        report::secs(seconds(measured.later)),
        String::new(),
    ]);
    table.row(vec![
        "partial rollback".into(),
        report::secs(seconds(measured.rollback)),
        report::mib(measured.rollback_peak_kib),
    ]);
    table.print();
    println!(
        "restored (the cables, deleted): {}; skipped (the motors): {}, {} of them listed",
        measured.restored, measured.skipped_count, measured.skipped_listed
    );
    if args.json {
        report::json_line(&json!({
            "bench": "rollback_conflicting",
            "assets": assets,
            "execution_seconds": seconds(measured.execution),
            "execution_peak_kib": measured.execution_peak_kib,
            "later_seconds": seconds(measured.later),
            "rollback_seconds": seconds(measured.rollback),
            "rollback_peak_kib": measured.rollback_peak_kib,
            "restored": measured.restored,
            "skipped_count": measured.skipped_count,
            "skipped_listed": measured.skipped_listed,
        }));
    }
    if measured.restored != expected || measured.skipped_count != expected {
        bail!("expected {expected} cables restored and {expected} motors skipped");
    }
    Ok(())
}
