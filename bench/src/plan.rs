//! `bench plan`: a dry run of the rule over a plant and the apply of its plan, against
//! the plain execution of the same rule over the same plant (in a database of its own,
//! in the same run).
//!
//! Two sizes, like `bench execute`: the dry run holds the plan's reads and promised ids
//! in tables, not in memory, so neither its peak memory nor the apply's should grow
//! with the plant.
//!
//! Then whether a dry run makes writers wait: a second rule's dry run over the same
//! motors, and while it runs a change of the first motor it would change
//! (`PATCH /assets/{id}`), timed.

use crate::api;
use crate::environment::{with_environment, Endpoints};
use crate::plant;
use crate::report::{self, Table};
use crate::scenario::{self, seconds, Executed, PlantSizes};
use anyhow::{bail, Context};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub sizes: PlantSizes,
    /// Also print the results as one JSON line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

/// A dry run and the apply of its plan.
struct Planned {
    dry_run: Duration,
    dry_run_peak_kib: u64,
    /// Assets the plan executes the rule on.
    planned: u64,
    apply: Duration,
    apply_peak_kib: u64,
    applied: u64,
    apply_events: i64,
    probe: Probe,
}

/// A change made while a dry run would change the same asset.
struct Probe {
    /// How long after the dry run's request the change was sent.
    sent_after: Duration,
    /// How long the change took.
    change: Duration,
    dry_run: Duration,
}

/// One plant's measurements: the plan, and the plain execution it is compared with.
struct Case {
    assets: usize,
    planned: Planned,
    execution: Executed,
}

impl Case {
    fn dry_run_ratio(&self) -> f64 {
        seconds(self.planned.dry_run) / seconds(self.execution.elapsed).max(f64::EPSILON)
    }

    fn apply_ratio(&self) -> f64 {
        seconds(self.planned.apply) / seconds(self.execution.elapsed).max(f64::EPSILON)
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "assets": self.assets,
            "planned_assets": self.planned.planned,
            "dry_run_seconds": seconds(self.planned.dry_run),
            "dry_run_peak_kib": self.planned.dry_run_peak_kib,
            "apply_seconds": seconds(self.planned.apply),
            "apply_peak_kib": self.planned.apply_peak_kib,
            "apply_events": self.planned.apply_events,
            "execution_seconds": seconds(self.execution.elapsed),
            "execution_peak_kib": self.execution.peak_kib,
            "execution_events": self.execution.events,
            "change_during_dry_run_seconds": seconds(self.planned.probe.change),
            "change_sent_after_seconds": seconds(self.planned.probe.sent_after),
            "second_dry_run_seconds": seconds(self.planned.probe.dry_run),
            "dry_run_ratio": self.dry_run_ratio(),
            "apply_ratio": self.apply_ratio(),
        })
    }
}

pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let mut cases = Vec::new();
    for assets in args.sizes.list()? {
        eprintln!("plan: {assets} assets ...");
        let planned = with_environment(&args.endpoints, async |environment| {
            scenario::import_plant(environment, assets, true).await?;
            let rule_id = scenario::define_rule(environment).await?;
            plan_and_apply(environment, &rule_id).await
        })
        .await?;
        eprintln!(
            "  dry run {:.2} s, apply {:.2} s",
            seconds(planned.dry_run),
            seconds(planned.apply)
        );
        let execution = with_environment(&args.endpoints, async |environment| {
            scenario::import_plant(environment, assets, true).await?;
            let rule_id = scenario::define_rule(environment).await?;
            scenario::execute(environment, &rule_id, false).await
        })
        .await?;
        let expected = plant::expected_matches(assets) as u64;
        let counts = [planned.planned, planned.applied, execution.executed];
        if counts.iter().any(|count| *count != expected) {
            bail!(
                "the rule ran on {counts:?} assets (plan, apply, execution), expected {expected}"
            );
        }
        if planned.apply_events != execution.events {
            bail!(
                "the apply appended {} events, the execution {}",
                planned.apply_events,
                execution.events
            );
        }
        cases.push(Case {
            assets,
            planned,
            execution,
        });
    }
    print(&cases);
    if args.json {
        report::json_line(&json!({
            "bench": "plan",
            "cases": cases.iter().map(Case::json).collect::<Vec<_>>(),
        }));
    }
    Ok(())
}

/// Dry run, then apply the plan with a fresh service (so each peak is its own).
async fn plan_and_apply(
    environment: &mut crate::environment::Environment,
    rule_id: &str,
) -> anyhow::Result<Planned> {
    let url = environment.service()?.url("/rules/execute");
    let body = json!({"rule_ids": [rule_id], "dry_run": true});
    let plan = api::post_json(
        &environment.http,
        &url,
        &body,
        "POST /rules/execute (dry run)",
    )
    .await?;
    let dry_run_peak_kib = environment.service()?.peak_memory_kib()?;
    let plan_id = api::field(&plan.body, "plan_id")?.to_owned();
    // The dry run appended nothing, so the new service's relay has nothing to publish.
    environment.start_service(true).await?;
    let url = environment.service()?.url("/rules/execute");
    let body = json!({"plan_id": plan_id, "wait": true});
    let applied = api::post_json(
        &environment.http,
        &url,
        &body,
        "POST /rules/execute (apply)",
    )
    .await?;
    let apply_peak_kib = environment.service()?.peak_memory_kib()?;
    if applied.body["status"] != "completed" {
        bail!("the apply did not complete: {}", applied.body);
    }
    let correlation_id: Uuid = api::field(&applied.body, "correlation_id")?
        .parse()
        .context("the apply's correlation_id is not a UUID")?;
    let pool = environment.pool().await?;
    let (apply_events,): (i64,) =
        sqlx::query_as("select count(*) from workflow_events where correlation_id = $1")
            .bind(correlation_id)
            .fetch_one(&pool)
            .await?;
    let probe = change_during_dry_run(environment, plan.elapsed).await?;
    Ok(Planned {
        dry_run: plan.elapsed,
        dry_run_peak_kib,
        planned: plan.body["totals"]["executed"].as_u64().unwrap_or(0),
        apply: applied.elapsed,
        apply_peak_kib,
        applied: applied.body["totals"]["executed"].as_u64().unwrap_or(0),
        apply_events,
        probe,
    })
}

/// Dry-run the follow-up rule (it changes every motor the first rule changed) and,
/// a quarter of `first_dry_run` into it, change the first of those motors in id order:
/// the dry run has planned it by then.
async fn change_during_dry_run(
    environment: &mut crate::environment::Environment,
    first_dry_run: Duration,
) -> anyhow::Result<Probe> {
    let rule_id = scenario::define(environment, &plant::follow_up_rule()).await?;
    let pool = environment.pool().await?;
    let (motor,): (Uuid,) =
        sqlx::query_as("select id from assets where properties ? 'needs_vfd' order by id limit 1")
            .fetch_one(&pool)
            .await?;
    let service = environment.service()?;
    let (execute, change) = (
        service.url("/rules/execute"),
        service.url(&format!("/assets/{motor}")),
    );
    let http = environment.http.clone();
    let dry_run = tokio::spawn(async move {
        let body = json!({"rule_ids": [rule_id], "dry_run": true});
        api::post_json(
            &http,
            &execute,
            &body,
            "POST /rules/execute (second dry run)",
        )
        .await
    });
    let sent_after = (first_dry_run / 4).max(Duration::from_millis(50));
    tokio::time::sleep(sent_after).await;
    let body = json!({"name": "Changed during a dry run"});
    let changed = api::patch_json(&environment.http, &change, &body, "PATCH /assets/{id}").await?;
    let planned = dry_run.await.context("the second dry run's task")??;
    if planned.elapsed <= sent_after {
        bail!(
            "the second dry run ended ({:.2} s) before the change was sent",
            seconds(planned.elapsed)
        );
    }
    Ok(Probe {
        sent_after,
        change: changed.elapsed,
        dry_run: planned.elapsed,
    })
}

fn print(cases: &[Case]) {
    let mut header = vec!["".to_owned()];
    header.extend(
        cases
            .iter()
            .map(|case| format!("{} assets", report::count(case.assets as f64))),
    );
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = Table::new(
        "bench plan: dry run and apply of one rule (set_property + upsert_cable), relay on",
        &header,
    );
    let mut row = |label: &str, cell: &dyn Fn(&Case) -> String| {
        let mut cells = vec![label.to_owned()];
        cells.extend(cases.iter().map(cell));
        table.row(cells);
    };
    row("assets the plan changes", &|c| {
        report::count(c.planned.planned as f64)
    });
    row("dry run wall time", &|c| {
        report::secs(seconds(c.planned.dry_run))
    });
    row("dry run peak memory (VmHWM)", &|c| {
        report::mib(c.planned.dry_run_peak_kib)
    });
    row("apply wall time", &|c| {
        report::secs(seconds(c.planned.apply))
    });
    row("apply peak memory (VmHWM)", &|c| {
        report::mib(c.planned.apply_peak_kib)
    });
    row("change of a motor a dry run changes", &|c| {
        format!("{} ms", (seconds(c.planned.probe.change) * 1000.0).round())
    });
    row("  sent into that dry run / its wall time", &|c| {
        let probe = &c.planned.probe;
        format!(
            "{:.2} s / {:.2} s",
            seconds(probe.sent_after),
            seconds(probe.dry_run)
        )
    });
    row("events appended by the apply", &|c| {
        report::count(c.planned.apply_events as f64)
    });
    row("LIMIT plain execution wall time", &|c| {
        report::secs(seconds(c.execution.elapsed))
    });
    row("plain execution peak memory", &|c| {
        report::mib(c.execution.peak_kib)
    });
    row("ratio dry run / execution", &|c| {
        report::ratio(c.dry_run_ratio())
    });
    row("ratio apply / execution", &|c| {
        report::ratio(c.apply_ratio())
    });
    table.print();
}
