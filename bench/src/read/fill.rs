//! Filling the log to the requested size through the real command API: plants imported
//! as CSV, every rule executed over each plant, the execution over a smaller second plant
//! rolled back, and a last import to land on the target. Actors differ per kind of command, so the log holds a
//! realistic mix of event types, disciplines, rules, batches and actors.

use super::actors::Actors;
use super::plant;
use crate::api;
use crate::environment::Environment;
use anyhow::{bail, Context};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Events an import appends besides one per row (`BATCH_STARTED`, `CSV_IMPORTED`,
/// `BATCH_COMPLETED`).
const IMPORT_OVERHEAD: u64 = 3;
/// Smallest plant worth executing rules over; below it the rest is a plain import.
const MIN_PLANT: usize = 1_000;
/// Which plant's execution is rolled back (the second: the first stays as it was run).
const ROLLED_BACK_PLANT: usize = 1;

/// Assets per plant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub plant: usize,
    /// Of the plant whose execution is rolled back.
    pub rolled_back: usize,
}

/// What to do next to reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Import plant `plant` with `assets` assets, then execute every rule over it.
    Plant {
        plant: usize,
        assets: usize,
    },
    /// Roll back the execution over plant `plant`.
    Rollback {
        plant: usize,
    },
    /// Import `rows` more assets as plant `plant`, without executing rules.
    TopUp {
        plant: usize,
        rows: usize,
    },
    Done,
}

/// How far the fill got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Events in the log.
    pub events: u64,
    /// Plant numbers used so far (the next plant's number).
    pub plants: usize,
    /// Whether the planned rollback has run.
    pub rolled_back: bool,
}

/// Estimated events of executing every rule over a plant: per change its event, plus
/// one `RULE_EXECUTED` per matched asset and a few batch events per chunk.
fn execution_events(assets: usize) -> u64 {
    let matches = plant::matches(assets);
    let matched = matches.updated_assets + matches.findings;
    let changes = matches.updated_assets + matches.created_cables + matches.findings;
    (matched + changes + assets / 100 + 20) as u64
}

/// Events of importing a plant and executing every rule over it.
fn plant_events(assets: usize) -> u64 {
    assets as u64 + IMPORT_OVERHEAD + execution_events(assets)
}

/// Estimated events of rolling back a plant's execution: one per restored aggregate.
fn rollback_events(assets: usize) -> u64 {
    let matches = plant::matches(assets);
    (matches.updated_assets + matches.created_cables + 10) as u64
}

/// The next step towards `target` events.
pub fn next_step(progress: Progress, target: u64, sizes: Sizes) -> Step {
    let remaining = target.saturating_sub(progress.events);
    if remaining <= IMPORT_OVERHEAD {
        return Step::Done;
    }
    let rolled_back_plant_ran = progress.plants > ROLLED_BACK_PLANT;
    if rolled_back_plant_ran
        && !progress.rolled_back
        && rollback_events(sizes.rolled_back) + IMPORT_OVERHEAD < remaining
    {
        return Step::Rollback {
            plant: ROLLED_BACK_PLANT,
        };
    }
    let plant_assets = match progress.plants == ROLLED_BACK_PLANT && sizes.rolled_back >= MIN_PLANT
    {
        true => sizes.rolled_back,
        false => sizes.plant,
    };
    if plant_events(plant_assets) <= remaining {
        return Step::Plant {
            plant: progress.plants,
            assets: plant_assets,
        };
    }
    // A smaller last plant, sized so its estimate leaves a margin for a top-up.
    let smaller = (plant_assets as u64 * remaining / plant_events(plant_assets)) as usize * 9 / 10;
    if smaller >= MIN_PLANT && plant_events(smaller) <= remaining {
        return Step::Plant {
            plant: progress.plants,
            assets: smaller,
        };
    }
    Step::TopUp {
        plant: progress.plants,
        rows: ((remaining - IMPORT_OVERHEAD) as usize).min(plant_assets.max(1)),
    }
}

/// What the fill did.
pub struct Filled {
    pub events: u64,
    pub elapsed: Duration,
    pub plants: usize,
    pub executions: usize,
    pub rollbacks: usize,
}

/// Define the rules and run steps until the log holds `target` events.
pub async fn fill(
    environment: &mut Environment,
    actors: &Actors,
    target: u64,
    sizes: Sizes,
) -> anyhow::Result<Filled> {
    let started = Instant::now();
    let service = environment.service()?;
    let mut rule_ids = Vec::new();
    for rule in plant::rules() {
        let answer =
            api::post_json(&actors.admin, &service.url("/rules"), &rule, "POST /rules").await?;
        rule_ids.push(api::field(&answer.body, "id")?.parse::<Uuid>()?);
    }
    let pool = environment.pool().await?;
    let mut progress = Progress {
        events: log_events(&pool).await?,
        ..Progress::default()
    };
    let (mut executions, mut executed) = (0, Vec::new());
    let mut rollbacks = 0;
    loop {
        let step = next_step(progress, target, sizes);
        let step_started = Instant::now();
        let service = environment.service()?;
        match step {
            Step::Done => break,
            Step::Plant { plant, assets } => {
                import(
                    &actors.importer(plant),
                    &service.url("/assets/import"),
                    plant,
                    assets,
                )
                .await?;
                eprintln!(
                    "  plant {plant}: {assets} assets imported in {:.1} s",
                    step_started.elapsed().as_secs_f64()
                );
                let body = json!({
                    "rule_ids": rule_ids,
                    "filters": {"tag": format!("{}*", plant::tag_prefix(plant))},
                    "wait": true,
                });
                let answer = api::post_json(
                    &actors.executor(plant),
                    &service.url("/rules/execute"),
                    &body,
                    "POST /rules/execute",
                )
                .await?;
                if answer.body["status"] != "completed" {
                    bail!(
                        "the execution over plant {plant} did not complete: {}",
                        answer.body
                    );
                }
                executed.push(api::field(&answer.body, "correlation_id")?.parse::<Uuid>()?);
                executions += 1;
                progress.plants += 1;
            }
            Step::Rollback { plant } => {
                let correlation_id = executed
                    .get(plant)
                    .with_context(|| format!("plant {plant} has no execution to roll back"))?;
                api::post_json(
                    &actors.admin,
                    &service.url("/rules/rollback"),
                    &json!({"correlation_id": correlation_id}),
                    "POST /rules/rollback",
                )
                .await?;
                rollbacks += 1;
                progress.rolled_back = true;
            }
            Step::TopUp { plant, rows } => {
                import(
                    &actors.importer(plant),
                    &service.url("/assets/import"),
                    plant,
                    rows,
                )
                .await?;
                progress.plants += 1;
            }
        }
        progress.events = log_events(&pool).await?;
        eprintln!(
            "  {step:?}: {:.1} s, the log holds {} events",
            step_started.elapsed().as_secs_f64(),
            progress.events
        );
    }
    Ok(Filled {
        events: progress.events,
        elapsed: started.elapsed(),
        plants: progress.plants,
        executions,
        rollbacks,
    })
}

async fn import(
    client: &reqwest::Client,
    url: &str,
    plant: usize,
    assets: usize,
) -> anyhow::Result<()> {
    let answer = api::import_csv(client, url, plant::csv(plant, assets)).await?;
    let created = answer.body["created"].as_u64().unwrap_or(0) as usize;
    if created != assets {
        bail!(
            "the import of plant {plant} created {created} assets, not {assets}: {}",
            answer.body
        );
    }
    Ok(())
}

/// Events in the log.
pub async fn log_events(pool: &sqlx::PgPool) -> anyhow::Result<u64> {
    let (events,): (i64,) = sqlx::query_as("select count(*) from workflow_events")
        .fetch_one(pool)
        .await
        .context("counting the log")?;
    Ok(events as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the planner against a log that grows exactly by the estimates.
    fn simulate(target: u64, plant: usize, rolled_back: usize) -> (Vec<Step>, u64) {
        let sizes = Sizes { plant, rolled_back };
        let mut progress = Progress::default();
        let mut steps = Vec::new();
        loop {
            let step = next_step(progress, target, sizes);
            match step {
                Step::Done => return (steps, progress.events),
                Step::Plant { assets, .. } => {
                    progress.events += plant_events(assets);
                    progress.plants += 1;
                }
                Step::Rollback { .. } => {
                    progress.events += rollback_events(rolled_back);
                    progress.rolled_back = true;
                }
                Step::TopUp { rows, .. } => {
                    progress.events += rows as u64 + IMPORT_OVERHEAD;
                    progress.plants += 1;
                }
            }
            steps.push(step);
            assert!(
                steps.len() < 100,
                "the planner does not converge: {steps:?}"
            );
        }
    }

    #[test]
    fn a_million_events_are_plants_a_rollback_and_a_top_up_landing_on_the_target() {
        let (steps, events) = simulate(1_000_000, 100_000, 10_000);
        assert_eq!(events, 1_000_000, "{steps:?}");
        assert_eq!(
            steps[0],
            Step::Plant {
                plant: 0,
                assets: 100_000
            }
        );
        assert_eq!(
            steps[1],
            Step::Plant {
                plant: 1,
                assets: 10_000
            }
        );
        assert_eq!(steps[2], Step::Rollback { plant: 1 });
        assert!(
            matches!(steps.last(), Some(Step::TopUp { .. })),
            "{steps:?}"
        );
        let plants = steps
            .iter()
            .filter(|s| matches!(s, Step::Plant { .. }))
            .count();
        assert!(plants >= 3, "{steps:?}");
    }

    #[test]
    fn plant_numbers_are_never_reused() {
        let (steps, _) = simulate(500_000, 40_000, 40_000);
        let mut numbers: Vec<usize> = steps
            .iter()
            .filter_map(|step| match step {
                Step::Plant { plant, .. } | Step::TopUp { plant, .. } => Some(*plant),
                _ => None,
            })
            .collect();
        let count = numbers.len();
        numbers.dedup();
        assert_eq!(numbers.len(), count, "{steps:?}");
    }

    #[test]
    fn a_log_already_at_or_past_the_target_needs_nothing() {
        let at = Progress {
            events: 1_000,
            ..Progress::default()
        };
        let sizes = Sizes {
            plant: 100,
            rolled_back: 100,
        };
        assert_eq!(next_step(at, 1_000, sizes), Step::Done);
        assert_eq!(next_step(at, 500, sizes), Step::Done);
        assert_eq!(next_step(at, 1_003, sizes), Step::Done);
    }

    #[test]
    fn a_target_too_small_for_a_plant_is_one_import() {
        let (steps, events) = simulate(2_000, 100_000, 10_000);
        assert_eq!(
            steps,
            vec![Step::TopUp {
                plant: 0,
                rows: 1_997
            }]
        );
        assert_eq!(events, 2_000);
    }
}
