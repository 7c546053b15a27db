//! Writing one planned chunk: state, snapshots, findings and events, in the chunk's
//! transaction, with set-based statements (a chunk is a handful of statements,
//! whatever its size).

use super::planner::{Outcome, PlannedChange};
use crate::assets::store as asset_store;
use crate::links::{cable_store as cables, relationship_store as relationships};
use crate::rules::definition::CompiledRule;
use crate::store::batches::{Batch, ChangeTarget};
use crate::store::snapshot::{self, Snapshot};
use crate::store::statistics::{Growth, Table};
use crate::store::AppendError;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use std::collections::{HashMap, HashSet};
use synapse_shared::domain::{AssetState, CableState, Change, FindingPayload, RelationshipState};
use synapse_shared::{AggregateType, EventType, NewEvent};
use uuid::Uuid;

/// The rule outcome for one asset of a chunk.
#[derive(Debug, Clone)]
pub struct AssetOutcome {
    pub asset_id: Uuid,
    pub tag: String,
    pub outcome: Outcome,
}

/// Counts of outcomes, per rule and per batch. As the query service's batch read
/// models count them: `executed` includes assets whose condition no longer holds but
/// whose findings the rule resolved (`RULE_EXECUTED` with `"matched": false`), which
/// `matched` leaves out, as it leaves out `errors` of conditions that could not be
/// evaluated (`RULE_ERROR` with `"matched": false`); `changes` are changes of assets,
/// cables and relationships, findings counted apart.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(default)]
pub struct Counts {
    pub assets: u64,
    pub matched: u64,
    pub executed: u64,
    pub skipped: u64,
    pub errors: u64,
    pub changes: u64,
    /// Findings raised.
    pub findings: u64,
    /// Findings resolved.
    pub findings_resolved: u64,
}

impl Counts {
    /// The counts of a chunk's outcomes.
    pub fn of(outcomes: &[AssetOutcome]) -> Self {
        let mut counts = Self::default();
        outcomes
            .iter()
            .for_each(|outcome| counts.add(&outcome.outcome));
        counts
    }

    pub fn add(&mut self, outcome: &Outcome) {
        self.assets += 1;
        match outcome {
            Outcome::NotMatched => {}
            Outcome::Skipped { .. } => {
                self.matched += 1;
                self.skipped += 1;
            }
            Outcome::Executed { changes } => {
                self.matched += 1;
                self.executed += 1;
                self.count_changes(changes);
            }
            Outcome::Cleared { changes } => {
                self.executed += 1;
                self.count_changes(changes);
            }
            Outcome::Error { matched, .. } => {
                self.matched += u64::from(*matched);
                self.errors += 1;
            }
        }
    }

    fn count_changes(&mut self, changes: &[PlannedChange]) {
        for change in changes {
            match change {
                PlannedChange::FindingRaised { .. } => self.findings += 1,
                PlannedChange::FindingResolved { .. } => self.findings_resolved += 1,
                _ => self.changes += 1,
            }
        }
    }

    pub fn merge(&mut self, other: &Counts) {
        self.assets += other.assets;
        self.matched += other.matched;
        self.executed += other.executed;
        self.skipped += other.skipped;
        self.errors += other.errors;
        self.changes += other.changes;
        self.findings += other.findings;
        self.findings_resolved += other.findings_resolved;
    }
}

/// Where a chunk's state is written: the live tables, or a dry run's
/// [`overlay`](super::overlay).
#[derive(Debug, Clone, Copy)]
pub struct StateTables {
    pub assets: &'static str,
    pub cables: &'static str,
    pub relationships: &'static str,
    pub findings: &'static str,
    /// The live tables: pre-batch snapshots are taken (a dry run is never rolled
    /// back) and resolved findings deleted (a dry run need not: only the rule that
    /// raised a finding reads it, and a rule plans each asset once per execution).
    pub live: bool,
}

impl StateTables {
    pub const LIVE: Self = Self {
        assets: "assets",
        cables: "cables",
        relationships: "relationships",
        findings: "findings",
        live: true,
    };
}

/// A chunk's state writes (snapshots of the existing aggregates it changes, new
/// states, relationships, findings), built from its outcomes without the database, so that it
/// can be built before the chunk's transaction opens. Built last from a chunk's
/// outcomes (after its events), it takes their states over instead of copying them.
#[derive(Debug, Default)]
pub struct StateWrites {
    /// Rows created, per [`Table`] (`Table as usize`).
    created: [u64; Table::ALL.len()],
    snapshots: Vec<Snapshot>,
    assets: Vec<AssetState>,
    cables: Vec<CableState>,
    relationships: Vec<RelationshipState>,
    /// Asset, severity, message.
    findings: Vec<(Uuid, String, String)>,
    /// Asset, message of findings resolved.
    resolved: Vec<(Uuid, String)>,
    /// When the findings were raised, as their events say.
    raised_at: DateTime<Utc>,
}

impl StateWrites {
    /// The writes of `outcomes`, whose findings were raised at `raised_at` (as
    /// [`events`] says).
    pub fn of(outcomes: Vec<AssetOutcome>, raised_at: DateTime<Utc>) -> Self {
        let mut writes = Self {
            raised_at,
            ..Self::default()
        };
        let mut assets = HashMap::with_capacity(outcomes.len());
        let mut cable_states = HashMap::new();
        for outcome in outcomes {
            let (Outcome::Executed { changes } | Outcome::Cleared { changes }) = outcome.outcome
            else {
                continue;
            };
            for change in changes {
                match change {
                    PlannedChange::Asset { before, after } => {
                        writes.created[Table::Assets as usize] += u64::from(before.is_none());
                        if let Some(before) = before {
                            let version = before.version;
                            writes.snapshots.push(Snapshot::new(
                                AggregateType::Asset,
                                after.id,
                                Some(&crate::assets::commands::into_state_json(before)),
                                version,
                            ));
                        }
                        assets.insert(after.id, after);
                    }
                    PlannedChange::Cable { before, after } => {
                        writes.created[Table::Cables as usize] += u64::from(before.is_none());
                        if let Some(before) = before {
                            writes.snapshots.push(Snapshot::new(
                                AggregateType::Cable,
                                after.id,
                                Some(&json!(before)),
                                before.version,
                            ));
                        }
                        cable_states.insert(after.id, after);
                    }
                    PlannedChange::Relationship(relationship) => {
                        writes.created[Table::Relationships as usize] += 1;
                        writes.relationships.push(relationship);
                    }
                    PlannedChange::FindingResolved { asset_id, finding } => {
                        writes.resolved.push((asset_id, finding.message));
                    }
                    PlannedChange::FindingRaised {
                        asset_id,
                        severity,
                        message,
                    } => {
                        writes
                            .findings
                            .push((asset_id, severity.as_str().to_owned(), message));
                    }
                }
            }
        }
        writes.assets = assets.into_values().collect();
        writes.cables = cable_states.into_values().collect();
        writes
    }

    /// The assets and cables they change or create, and the assets whose findings they
    /// raise or resolve (whose rows stand in for their findings: see
    /// [`still_current`](super::ahead::still_current)).
    pub fn written(&self) -> HashSet<Uuid> {
        let assets = self.assets.iter().map(|asset| asset.id);
        let findings = self.findings.iter().map(|finding| finding.0);
        assets
            .chain(findings)
            .chain(self.resolved.iter().map(|resolved| resolved.0))
            .chain(self.cables.iter().map(|cable| cable.id))
            .collect()
    }

    /// How many rows of `table` they write (create or overwrite).
    pub fn rows(&self, table: Table) -> u64 {
        let rows = match table {
            Table::Assets => self.assets.len(),
            Table::Cables => self.cables.len(),
            Table::Relationships => self.relationships.len(),
        };
        rows as u64
    }

    /// Count the rows they create in `growth`.
    pub fn count_in(&self, growth: &mut Growth, pool: &PgPool) {
        for table in Table::ALL {
            growth.add(pool, table, self.created[table as usize]);
        }
    }

    /// Write them in the caller's transaction, for batch `correlation_id`, into the
    /// live tables. Every finding raised must be new and every finding resolved still
    /// open, or their events would not be changes: if another writer got there first,
    /// the chunk is refused as stale ([`AppendError::VersionConflict`]).
    pub async fn write(
        &self,
        connection: &mut PgConnection,
        correlation_id: Uuid,
        rule: &CompiledRule,
    ) -> Result<(), AppendError> {
        let findings = self
            .write_into(connection, correlation_id, rule, StateTables::LIVE)
            .await?;
        if findings != (self.findings.len() as u64, self.resolved.len() as u64) {
            return Err(AppendError::VersionConflict { aggregate_id: None });
        }
        Ok(())
    }

    /// Write them in the caller's transaction, for batch `correlation_id`, into
    /// `tables`; how many findings were raised and how many resolved.
    pub async fn write_into(
        &self,
        connection: &mut PgConnection,
        correlation_id: Uuid,
        rule: &CompiledRule,
        tables: StateTables,
    ) -> Result<(u64, u64), sqlx::Error> {
        if tables.live {
            snapshot::take_many(connection, correlation_id, &self.snapshots).await?;
        }
        asset_store::upsert_many_into(connection, tables.assets, &self.assets).await?;
        cables::upsert_into(connection, tables.cables, &self.cables).await?;
        relationships::insert_into(connection, tables.relationships, &self.relationships).await?;
        let (mut raised, mut resolved) = (0, 0);
        // Resolutions first: a rule's new version may resolve a finding and raise the
        // same message at another severity.
        if tables.live && !self.resolved.is_empty() {
            resolved = sqlx::query(
                "delete from findings f
                 using unnest($1::uuid[], $2::text[]) as r(asset_id, message)
                 where f.asset_id = r.asset_id and f.rule_id = $3 and f.message = r.message",
            )
            .bind(self.resolved.iter().map(|r| r.0).collect::<Vec<_>>())
            .bind(
                self.resolved
                    .iter()
                    .map(|r| r.1.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(rule.id)
            .execute(&mut *connection)
            .await?
            .rows_affected();
        }
        if !self.findings.is_empty() {
            let findings = &self.findings;
            // The table is one of `StateTables`, never input.
            raised = sqlx::query(&format!(
                "insert into {} (asset_id, rule_id, severity, message, correlation_id, rule_version,
                     raised_at)
                 select asset_id, $4, severity, message, $5, $6, $7 from unnest($1::uuid[], $2::text[], $3::text[])
                     as f(asset_id, severity, message)
                 on conflict do nothing",
                tables.findings
            ))
            .bind(findings.iter().map(|f| f.0).collect::<Vec<_>>())
            .bind(findings.iter().map(|f| f.1.as_str()).collect::<Vec<_>>())
            .bind(findings.iter().map(|f| f.2.as_str()).collect::<Vec<_>>())
            .bind(rule.id)
            .bind(correlation_id)
            .bind(rule.version)
            .bind(self.raised_at)
            .execute(connection)
            .await?
            .rows_affected();
        }
        Ok((raised, resolved))
    }
}

/// The events of a chunk's outcomes, in order: per asset its rule outcome, then the
/// changes it caused (causation = the `RULE_EXECUTED` event). Findings raised say they
/// were raised at `raised_at`, the time [`StateWrites::write`] gives their rows.
pub fn events(
    batch: &mut Batch,
    rule: &CompiledRule,
    outcomes: &[AssetOutcome],
    raised_at: DateTime<Utc>,
) -> Vec<NewEvent> {
    let mut events = Vec::new();
    for outcome in outcomes {
        let (event_type, payload) = match &outcome.outcome {
            Outcome::NotMatched => continue,
            Outcome::Skipped { reason } => (
                EventType::RuleSkipped,
                json!({"asset_id": outcome.asset_id, "tag": outcome.tag, "reason": reason}),
            ),
            // `matched` says whether the condition held: false when it could not be
            // evaluated.
            Outcome::Error { message, matched } => (
                EventType::RuleError,
                json!({"asset_id": outcome.asset_id, "tag": outcome.tag, "error": message, "matched": matched}),
            ),
            Outcome::Executed { changes } => (
                EventType::RuleExecuted,
                json!({"asset_id": outcome.asset_id, "tag": outcome.tag, "rule_name": rule.name, "changes": changes.len()}),
            ),
            // The condition was false: the rule only resolved its findings.
            Outcome::Cleared { changes } => (
                EventType::RuleExecuted,
                json!({"asset_id": outcome.asset_id, "tag": outcome.tag, "rule_name": rule.name, "changes": changes.len(), "matched": false}),
            ),
        };
        let head = rule_event(batch, rule, event_type, payload);
        let cause = head.event_id;
        events.push(head);
        if let Outcome::Executed { changes } | Outcome::Cleared { changes } = &outcome.outcome {
            for change in changes {
                let mut event = match change {
                    PlannedChange::FindingRaised {
                        asset_id,
                        severity,
                        message,
                    } => {
                        let payload = FindingPayload {
                            asset_id: *asset_id,
                            tag: Some(outcome.tag.clone()),
                            severity: severity.as_str().to_owned(),
                            message: message.clone(),
                            raised_in: None,
                            raised_by_rule_version: None,
                            rolled_back_correlation_id: None,
                            raised_at: Some(raised_at),
                        };
                        rule_event(batch, rule, EventType::FindingRaised, json!(payload))
                    }
                    PlannedChange::FindingResolved { asset_id, finding } => {
                        let payload = FindingPayload {
                            asset_id: *asset_id,
                            tag: Some(outcome.tag.clone()),
                            severity: finding.severity.clone(),
                            message: finding.message.clone(),
                            raised_in: Some(finding.raised_in),
                            raised_by_rule_version: finding.rule_version,
                            rolled_back_correlation_id: None,
                            raised_at: Some(finding.raised_at),
                        };
                        rule_event(batch, rule, EventType::FindingResolved, json!(payload))
                    }
                    other => match change_event(batch, other) {
                        Some(event) => event,
                        None => continue,
                    },
                };
                event.causation_id = Some(cause);
                event.rule_id = Some(rule.id);
                event.rule_version = Some(rule.version);
                events.push(event);
            }
        }
    }
    events
}

/// A batch-level event about `rule`.
pub fn rule_event(
    batch: &mut Batch,
    rule: &CompiledRule,
    event_type: EventType,
    payload: Value,
) -> NewEvent {
    let mut event = batch.event(event_type, payload);
    event.rule_id = Some(rule.id);
    event.rule_version = Some(rule.version);
    event.discipline = Some(rule.discipline.clone());
    event
}

/// The change event of an asset, cable or relationship change (`None` for findings,
/// which are batch events).
fn change_event(batch: &Batch, change: &PlannedChange) -> Option<NewEvent> {
    let (event_type, aggregate_type, id, version, discipline, before, after) = match change {
        PlannedChange::Asset { before, after } => (
            if before.is_some() {
                EventType::AssetUpdated
            } else {
                EventType::AssetCreated
            },
            AggregateType::Asset,
            after.id,
            after.version,
            Some(after.discipline.clone()),
            before.as_ref().map(crate::assets::commands::state_json),
            Some(crate::assets::commands::state_json(after)),
        ),
        PlannedChange::Cable { before, after } => (
            if before.is_some() {
                EventType::CableUpdated
            } else {
                EventType::CableCreated
            },
            AggregateType::Cable,
            after.id,
            after.version,
            Some(after.discipline.clone()),
            before.as_ref().map(|b| json!(b)),
            Some(json!(after)),
        ),
        PlannedChange::Relationship(relationship) => (
            EventType::RelationshipCreated,
            AggregateType::Relationship,
            relationship.id,
            relationship.version,
            None,
            None,
            Some(json!(relationship)),
        ),
        PlannedChange::FindingRaised { .. } | PlannedChange::FindingResolved { .. } => return None,
    };
    let target = ChangeTarget {
        event_type,
        aggregate_type,
        aggregate_id: id,
        version,
        discipline,
    };
    Some(batch.change(target, Change { before, after }, None))
}
