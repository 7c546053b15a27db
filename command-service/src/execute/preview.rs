//! Dry runs: the whole execution planned in one transaction that is rolled back, so
//! later rules see earlier rules' changes exactly as in a real run, and nothing (state
//! or log) is written. The plan is stored for a later exact apply.
//!
//! A dry run locks nothing. What it only reads (an MCC every motor's cable starts at)
//! it reads without locks: the plan records the versions it read and an apply is
//! refused if any moved. What it would change it writes into its own
//! [`overlay`](super::overlay), never into the live tables, so an execution or import
//! over the same assets never waits for a preview.

use super::apply::{AssetOutcome, Counts, StateWrites};
use super::overlay::{self, Overlay};
use super::planner::{Claims, Ids, Outcome, PlannedChange};
use super::plans;
use super::request::{AssetFilter, ExecuteRequest};
use super::runner::{plan_chunk, Reads, RuleReport, CHUNK_SIZE};
use super::world::World;
use crate::assets::store::{self as asset_store, PageRead};
use crate::rules::definition::CompiledRule;
use crate::store::statistics::Table;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{Connection, PgPool};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// Most per-asset entries returned with a plan, and most stale reads listed when a
/// plan is refused; the counts always cover everything.
pub const MAX_ENTRIES: usize = 1_000;

/// What a rule would do to one asset.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PlanEntry {
    pub asset_id: Uuid,
    pub tag: String,
    pub rule_id: Uuid,
    pub rule_name: String,
    /// `executed`, `skipped` or `error`.
    pub outcome: String,
    pub reason: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<Value>,
}

/// A dry run's result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// Apply exactly this with `POST /rules/execute {"plan_id": ...}`.
    pub plan_id: Uuid,
    pub dry_run: bool,
    pub rules: Vec<RuleReport>,
    pub totals: Counts,
    /// Per asset and rule, at most [`MAX_ENTRIES`]: first every asset a rule would
    /// change or fails on, in plan order, then those it would skip.
    pub entries: Vec<PlanEntry>,
    /// More entries exist than were returned.
    pub truncated: bool,
}

/// Plan `rules` over `filter` without writing anything, then store the plan.
pub async fn preview(
    pool: &PgPool,
    actor: &str,
    request: &ExecuteRequest,
    rules: &[CompiledRule],
    filter: &AssetFilter,
) -> Result<Preview, sqlx::Error> {
    let plan_id = Uuid::now_v7();
    let rule_versions: BTreeMap<Uuid, i32> =
        rules.iter().map(|rule| (rule.id, rule.version)).collect();
    // The plan's rows, chunk by chunk, committed when the dry run has finished.
    let mut plan = pool.begin().await?;
    // Open while the dry run plans on the other connection (a chunk may take longer
    // than the pool's idle limit).
    sqlx::query("set local idle_in_transaction_session_timeout = 0")
        .execute(&mut *plan)
        .await?;
    plans::open(&mut plan, plan_id, actor, request, &rule_versions).await?;
    // The dry run's own changes, in an overlay that the rollback at the end removes,
    // on a connection that is closed afterwards (see `overlay`).
    let mut connection = pool.acquire().await?;
    connection.close_on_drop();
    let mut transaction = connection.begin().await?;
    sqlx::query("set local idle_in_transaction_session_timeout = 0")
        .execute(&mut *transaction)
        .await?;
    let mut overlay = Overlay::open(&mut transaction).await?;
    let mut ids = Ids::recording();
    let mut reports = Vec::new();
    let mut totals = Counts::default();
    let mut entries = Entries::default();
    let mut earlier = Arc::default();
    for rule in rules {
        let mut counts = Counts::default();
        let mut after = Uuid::nil();
        let claims = Claims::after(earlier);
        // As a real run: the assets selected when the rule starts.
        let selection = asset_store::select_for_execution(&mut transaction, filter).await?;
        loop {
            let page = asset_store::page_for_execution(
                &mut transaction,
                filter,
                selection,
                after,
                CHUNK_SIZE,
                PageRead::DryRun,
            )
            .await?;
            let Some(last) = page.last().map(|asset| asset.id) else {
                break;
            };
            after = last;
            let (outcomes, world) = plan_chunk(
                &mut transaction,
                rule,
                page,
                &mut ids,
                World::default(),
                Reads::Optimistic,
                &claims,
            )
            .await?;
            for outcome in &outcomes {
                counts.add(&outcome.outcome);
                entries.add(rule, outcome);
            }
            // Written into the overlay so later chunks and rules see it, while the
            // plan's connection records what the chunk read and created.
            let creations = ids.take_created();
            let writes = StateWrites::of(outcomes, chrono::Utc::now());
            tokio::try_join!(
                writes.write_into(&mut transaction, plan_id, rule, overlay::TABLES),
                plans::record(
                    &mut plan,
                    plan_id,
                    rule.id,
                    world.read_versions(),
                    &creations
                ),
            )?;
            for table in Table::ALL {
                overlay
                    .wrote(&mut transaction, table, writes.rows(table))
                    .await?;
            }
        }
        earlier = claims.with_earlier(rule.id);
        totals.merge(&counts);
        reports.push(RuleReport {
            rule_id: rule.id,
            rule_version: rule.version,
            name: rule.name.clone(),
            counts,
        });
    }
    transaction.rollback().await?;
    let summary = json!({"rules": reports, "totals": totals});
    plans::close(&mut plan, plan_id, &summary).await?;
    plan.commit().await?;
    Ok(Preview {
        plan_id,
        dry_run: true,
        rules: reports,
        totals,
        truncated: entries.truncated(),
        entries: entries.listed(),
    })
}

/// The entries a plan lists: what would change and what fails come before what would
/// be skipped, so that a plan over assets mostly in their desired state still shows
/// its changes.
#[derive(Debug, Default)]
struct Entries {
    changes: Vec<PlanEntry>,
    skipped: Vec<PlanEntry>,
    left_out: bool,
}

impl Entries {
    fn add(&mut self, rule: &CompiledRule, outcome: &AssetOutcome) {
        let list = match outcome.outcome {
            Outcome::NotMatched => return,
            Outcome::Skipped { .. } => &mut self.skipped,
            Outcome::Executed { .. } | Outcome::Cleared { .. } | Outcome::Error { .. } => {
                &mut self.changes
            }
        };
        if list.len() < MAX_ENTRIES {
            list.push(entry(rule, outcome));
        } else {
            self.left_out = true;
        }
    }

    fn truncated(&self) -> bool {
        self.left_out || self.changes.len() + self.skipped.len() > MAX_ENTRIES
    }

    fn listed(self) -> Vec<PlanEntry> {
        let room = MAX_ENTRIES - self.changes.len();
        let mut listed = self.changes;
        listed.extend(self.skipped.into_iter().take(room));
        listed
    }
}

fn entry(rule: &CompiledRule, outcome: &AssetOutcome) -> PlanEntry {
    let (kind, reason, changes) = match &outcome.outcome {
        Outcome::Skipped { reason } => ("skipped", Some(reason.clone()), Vec::new()),
        Outcome::Error { message, .. } => ("error", Some(message.clone()), Vec::new()),
        Outcome::Executed { changes } => {
            ("executed", None, changes.iter().map(change_json).collect())
        }
        Outcome::Cleared { changes } => (
            "executed",
            Some("condition no longer holds: its findings are resolved".to_owned()),
            changes.iter().map(change_json).collect(),
        ),
        Outcome::NotMatched => ("not_matched", None, Vec::new()),
    };
    PlanEntry {
        asset_id: outcome.asset_id,
        tag: outcome.tag.clone(),
        rule_id: rule.id,
        rule_name: rule.name.clone(),
        outcome: kind.to_owned(),
        reason,
        changes,
    }
}

/// A planned change as shown to engineers: what, which, before, after and the diff.
pub fn change_json(change: &PlannedChange) -> Value {
    let (aggregate_type, id, tag, before, after) = match change {
        PlannedChange::Asset { before, after } => (
            "asset",
            after.id,
            Some(after.tag.clone()),
            before.as_ref().map(crate::assets::commands::state_json),
            Some(crate::assets::commands::state_json(after)),
        ),
        PlannedChange::Cable { before, after } => (
            "cable",
            after.id,
            Some(after.tag.clone()),
            before.as_ref().map(|b| json!(b)),
            Some(json!(after)),
        ),
        PlannedChange::Relationship(relationship) => (
            "relationship",
            relationship.id,
            None,
            None,
            Some(json!(relationship)),
        ),
        PlannedChange::FindingRaised {
            asset_id,
            severity,
            message,
        } => {
            return json!({"aggregate_type": "finding", "change": "raised", "asset_id": asset_id, "severity": severity, "message": message})
        }
        PlannedChange::FindingResolved { asset_id, finding } => {
            return json!({"aggregate_type": "finding", "change": "resolved", "asset_id": asset_id, "severity": finding.severity, "message": finding.message})
        }
    };
    let diff = json_patch::diff(
        before.as_ref().unwrap_or(&Value::Null),
        after.as_ref().unwrap_or(&Value::Null),
    );
    json!({
        "aggregate_type": aggregate_type,
        "aggregate_id": id,
        "tag": tag,
        "change": if before.is_some() { "updated" } else { "created" },
        "before": before,
        "after": after,
        "diff": diff,
    })
}
