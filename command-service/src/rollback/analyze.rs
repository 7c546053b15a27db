//! What rolling back a batch would do, read from the snapshots, the log and the
//! current state, in the caller's transaction.

use super::MAX_LISTED;
use crate::store::snapshot;
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::{BTreeSet, HashMap, HashSet};
use uuid::Uuid;

/// One aggregate a rollback returns to its pre-batch state. Its states are read when
/// they are needed ([`current_states`], the snapshots), a slice at a time: a rollback
/// holds only these.
#[derive(Debug, Clone)]
pub struct Restoration {
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    /// The version the aggregate gets (one past the newest in the log).
    pub new_version: i64,
    /// `restored`, `deleted` or `recreated`.
    pub change: &'static str,
    /// Whether it returns to a pre-batch state; `false`: it did not exist before the
    /// batch (the batch created it), and the rollback deletes it.
    pub returns: bool,
}

impl Restoration {
    /// The state it returns to, from the batch's snapshot of it: with its new version,
    /// or `None` if it is deleted.
    pub fn restored_from(&self, snapshot: Option<Value>) -> Option<Value> {
        if !self.returns {
            return None;
        }
        snapshot.map(|mut state| {
            if let Some(object) = state.as_object_mut() {
                object.insert("version".into(), Value::from(self.new_version));
            }
            state
        })
    }
}

/// The state of an aggregate now, as the state payloads have it; the SQL of a `case`
/// over `t.aggregate_type` and `t.aggregate_id`.
const CURRENT_STATE: &str = "case t.aggregate_type
    when 'asset' then (select jsonb_build_object('id', a.id, 'tag', a.tag, 'asset_type', a.asset_type,
        'discipline', a.discipline, 'name', a.name, 'area', a.area, 'properties', a.properties,
        'version', a.version) from assets a where a.id = t.aggregate_id)
    when 'cable' then (select jsonb_build_object('id', c.id, 'tag', c.tag, 'from_asset', c.from_asset,
        'to_asset', c.to_asset, 'cable_type', c.cable_type, 'discipline', c.discipline,
        'properties', c.properties, 'version', c.version) from cables c where c.id = t.aggregate_id)
    when 'relationship' then (select jsonb_build_object('id', r.id, 'kind', r.kind,
        'from_asset', r.from_asset, 'to_asset', r.to_asset, 'properties', r.properties,
        'version', r.version) from relationships r where r.id = t.aggregate_id)
end";

/// The states of `restorations` now, in their order (`None`: it does not exist).
pub async fn current_states(
    connection: &mut PgConnection,
    restorations: &[Restoration],
) -> Result<Vec<Option<Value>>, sqlx::Error> {
    let rows: Vec<(Option<Value>,)> = sqlx::query_as(&format!(
        "select {CURRENT_STATE}
         from unnest($1::uuid[], $2::text[]) with ordinality as t(aggregate_id, aggregate_type, ordinal)
         order by t.ordinal"
    ))
    .bind(restorations.iter().map(|r| r.aggregate_id).collect::<Vec<_>>())
    .bind(
        restorations
            .iter()
            .map(|r| r.aggregate_type.as_str())
            .collect::<Vec<_>>(),
    )
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(|(state,)| state).collect())
}

/// A restoration as an answer lists it, with the patch it applies.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListedRestoration {
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    /// The state now (null: does not exist).
    #[schema(value_type = Option<Object>)]
    pub current: Option<Value>,
    /// The pre-batch state it returns to (null: it is deleted).
    #[schema(value_type = Option<Object>)]
    pub restored: Option<Value>,
    /// The version the aggregate gets (one past the newest in the log).
    pub new_version: i64,
    /// `restored`, `deleted` or `recreated`.
    pub change: String,
    /// RFC 6902 patch from `current` to `restored`.
    #[schema(value_type = Vec<Object>)]
    pub diff: Value,
}

impl ListedRestoration {
    fn of(restoration: Restoration, current: Option<Value>, restored: Option<Value>) -> Self {
        let diff = json_patch::diff(
            current.as_ref().unwrap_or(&Value::Null),
            restored.as_ref().unwrap_or(&Value::Null),
        );
        Self {
            aggregate_type: restoration.aggregate_type,
            aggregate_id: restoration.aggregate_id,
            current,
            restored,
            new_version: restoration.new_version,
            change: restoration.change.to_owned(),
            diff: serde_json::to_value(diff).unwrap_or(Value::Null),
        }
    }
}

/// An aggregate the rollback cannot return to its pre-batch state: a later batch
/// changed it, or links would be left naming an asset that does not exist.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Conflict {
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    /// An asset's or cable's tag: as it is now, or as the batch knew it if it is gone;
    /// none for a relationship.
    pub tag: Option<String>,
    /// `changed`: a later batch changed it. `tag_taken`: another asset or cable has its
    /// pre-batch tag now. `link_taken`: another relationship of its kind joins its two
    /// assets now. `linked`: an asset the batch created, which cables or
    /// relationships of later batches name. `end_gone`: a cable or relationship whose
    /// pre-batch end is an asset that no longer exists.
    pub reason: &'static str,
    /// Batches after this one in the way (those that changed the aggregate; made the
    /// links; deleted the end) and not rolled back.
    pub later_batches: Vec<Uuid>,
    /// RFC 6902 patch from this batch's result to the current state.
    #[schema(value_type = Vec<Object>)]
    pub diff: Value,
}

/// The rollback of one batch, as it would happen now.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub correlation_id: Uuid,
    pub restorations: Vec<Restoration>,
    /// The first [`MAX_LISTED`] aggregates that conflict, in the batch's order: only
    /// these are answered, so only these keep their states and diffs.
    pub conflicts: Vec<Conflict>,
    /// How many aggregates conflict.
    pub conflict_count: usize,
    /// Every batch in the way: those after this one that changed any conflicting
    /// aggregate and are not rolled back (what a cascade rolls back first).
    pub later_batches: BTreeSet<Uuid>,
    /// Every conflicting aggregate, with what the rollback would do to it once the
    /// batches in its way are rolled back (what a cascade's dry run counts).
    pub pending: Vec<Pending>,
    /// Whether the batch raised or resolved findings, which a rollback undoes besides
    /// its restorations.
    pub findings: bool,
    /// Of those, what the rollback would do now: close the ones the batch raised that
    /// are still open as it raised them, reopen the ones it resolved that are not open
    /// again (on assets that still exist); none on the assets it leaves in conflict.
    pub findings_closed: usize,
    pub findings_reopened: usize,
}

/// A conflicting aggregate, as a cascade would find it after rolling back the batches
/// in its way.
#[derive(Debug, Clone)]
pub struct Pending {
    pub aggregate_id: Uuid,
    /// What the rollback would do to it then (`restored`, `deleted`, `recreated`), or
    /// `None`: no rollback of later batches clears it (its pre-batch state is unknown).
    pub change: Option<&'static str>,
    /// The batches in its way; none: nothing a cascade rolls back clears it.
    pub later_batches: Vec<Uuid>,
    /// A later batch changed it: the position of this batch's last event on it (whose
    /// `after` a rollback of the later ones may bring back before all are rolled back).
    pub changed_after: Option<i64>,
}

/// What a cascade has rolled back so far, as its dry run walks it: the batches
/// (`rolled`), the aggregates their rollbacks leave alone (`stuck`), and those of the
/// batch at hand whose content those rollbacks already bring back to its own result
/// (`returned`, [`super::cascade`] reads them from the log).
#[derive(Debug, Default)]
pub struct Cleared {
    pub rolled: BTreeSet<Uuid>,
    pub stuck: HashSet<Uuid>,
    pub returned: HashSet<Uuid>,
}

impl Pending {
    /// Whether what `cleared` says was rolled back clears this conflict: all the batches
    /// in its way are rolled back, or enough of them to bring its content back, and no
    /// rollback left it alone.
    pub fn cleared_by(&self, cleared: &Cleared) -> bool {
        let all_rolled = !self.later_batches.is_empty()
            && self
                .later_batches
                .iter()
                .all(|batch| cleared.rolled.contains(batch));
        self.change.is_some()
            && (all_rolled || cleared.returned.contains(&self.aggregate_id))
            && !cleared.stuck.contains(&self.aggregate_id)
    }
}

/// An analysis as an answer lists it: at most [`MAX_LISTED`] restorations and as many
/// conflicts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Analysis)]
pub struct ListedAnalysis {
    pub correlation_id: Uuid,
    pub restorations: Vec<ListedRestoration>,
    pub conflicts: Vec<Conflict>,
}

/// How many aggregates an analysis covers, by what the rollback does to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AnalysisCounts {
    /// Returned to their pre-batch state.
    pub restored: usize,
    /// Deleted: the batch created them.
    pub deleted: usize,
    /// Created again: they are gone now, and existed before the batch.
    pub recreated: usize,
    /// Left alone: a later batch changed them.
    pub conflicts: usize,
    /// Findings the batch raised that the rollback closes (`FINDING_RESOLVED`).
    pub findings_closed: usize,
    /// Findings the batch resolved that the rollback opens again (`FINDING_RAISED`).
    pub findings_reopened: usize,
}

impl AnalysisCounts {
    fn add(&mut self, change: &str) {
        match change {
            "deleted" => self.deleted += 1,
            "recreated" => self.recreated += 1,
            _ => self.restored += 1,
        }
    }
}

impl Analysis {
    pub fn counts(&self) -> AnalysisCounts {
        let mut counts = AnalysisCounts {
            conflicts: self.conflict_count,
            findings_closed: self.findings_closed,
            findings_reopened: self.findings_reopened,
            ..AnalysisCounts::default()
        };
        for restoration in &self.restorations {
            counts.add(restoration.change);
        }
        counts
    }

    /// The counts once what `cleared` says is rolled back (a cascade's).
    pub fn counts_after(&self, cleared: &Cleared) -> AnalysisCounts {
        let mut counts = self.counts();
        for pending in &self.pending {
            if let (true, Some(change)) = (pending.cleared_by(cleared), pending.change) {
                counts.conflicts -= 1;
                counts.add(change);
            }
        }
        counts
    }

    /// The conflicts still there once what `cleared` says is rolled back.
    pub fn still_conflicting<'a>(
        &'a self,
        cleared: &'a Cleared,
    ) -> impl Iterator<Item = &'a Pending> + 'a {
        self.pending
            .iter()
            .filter(|pending| !pending.cleared_by(cleared))
    }

    /// The analysis as an answer lists it: the first [`MAX_LISTED`] restorations (with
    /// their states, read in the caller's transaction, and patches) and conflicts;
    /// `true` if any were left out.
    pub async fn listed(
        self,
        connection: &mut PgConnection,
    ) -> Result<(ListedAnalysis, bool), sqlx::Error> {
        let truncated =
            self.restorations.len() > MAX_LISTED || self.conflict_count > self.conflicts.len();
        let mut restorations = self.restorations;
        restorations.truncate(MAX_LISTED);
        let current = current_states(connection, &restorations).await?;
        let ids: Vec<Uuid> = restorations.iter().map(|r| r.aggregate_id).collect();
        let pre_batch = snapshot::read_many(connection, self.correlation_id, &ids).await?;
        let listed = ListedAnalysis {
            correlation_id: self.correlation_id,
            restorations: restorations
                .into_iter()
                .zip(current.into_iter().zip(pre_batch))
                .map(|(restoration, (current, pre_batch))| {
                    let restored = restoration.restored_from(pre_batch);
                    ListedRestoration::of(restoration, current, restored)
                })
                .collect(),
            conflicts: self.conflicts,
        };
        Ok((listed, truncated))
    }

    /// The listed conflicts; `true` if any were left out.
    pub fn listed_conflicts(self) -> (Vec<Conflict>, bool) {
        let truncated = self.conflict_count > self.conflicts.len();
        (self.conflicts, truncated)
    }
}

#[derive(sqlx::FromRow)]
struct Touched {
    aggregate_type: String,
    aggregate_id: Uuid,
    /// Whether the batch's snapshot holds a state (not: the aggregate did not exist).
    has_pre_state: bool,
    /// Whether the batch took a snapshot. It takes none of an aggregate it creates: an
    /// aggregate without one did not exist before the batch.
    has_snapshot: bool,
    /// The type of the batch's first event on the aggregate.
    first_event_type: String,
    /// This batch's result: `after` of its last event on the aggregate.
    batch_after: Option<Value>,
    batch_last_position: i64,
    current: Option<Value>,
    newest_version: i64,
}

impl Touched {
    /// The batch created the aggregate: it did not exist before, whatever snapshot a
    /// later rule of the same batch took of it (of the state the batch had made).
    fn created_by_batch(&self) -> bool {
        self.first_event_type.ends_with("_CREATED")
    }

    /// No snapshot, yet the batch did not create it: its pre-batch state is unknown,
    /// so it cannot be restored (a writer broke the rule of snapshotting what exists).
    fn pre_state_unknown(&self) -> bool {
        !self.has_snapshot && !self.created_by_batch()
    }
}

/// Analyse the rollback of `correlation_id`. Aggregates whose events of this batch are
/// already marked rolled back (by an earlier partial rollback) are left out.
pub async fn analyze(
    connection: &mut PgConnection,
    correlation_id: Uuid,
) -> Result<Analysis, sqlx::Error> {
    let sql = format!(
        "with changes as (
             select e.aggregate_type, e.aggregate_id, e.event_type, e.payload -> 'after' as after, e.position
             from workflow_events e
             where e.correlation_id = $1 and e.aggregate_type <> 'batch'
               and not exists (select 1 from event_rollbacks r where r.event_id = e.event_id)
         ),
         last_change as (
             select distinct on (aggregate_id) aggregate_type, aggregate_id, after as batch_after, position
             from changes order by aggregate_id, position desc
         ),
         first_change as (
             select distinct on (aggregate_id) aggregate_id, event_type as first_event_type
             from changes order by aggregate_id, position
         )
         select t.aggregate_type, t.aggregate_id, s.aggregate_id is not null as has_snapshot,
                s.state is not null as has_pre_state,
                f.first_event_type, nullif(t.batch_after, 'null'::jsonb) as batch_after,
                t.position as batch_last_position, {CURRENT_STATE} as current,
                (select max(w.aggregate_version) from workflow_events w where w.aggregate_id = t.aggregate_id) as newest_version
         from last_change t
         join first_change f on f.aggregate_id = t.aggregate_id
         left join execution_snapshots s on s.correlation_id = $1 and s.aggregate_id = t.aggregate_id
         order by t.position"
    );
    let mut touched = sqlx::query_as::<_, Touched>(&sql)
        .bind(correlation_id)
        .fetch(&mut *connection);

    // Row by row: a restoration keeps none of the row's states, a conflict only if it
    // is listed.
    let mut restorations: Vec<Restoration> = Vec::new();
    let mut listed = Vec::new();
    let mut conflicting = Vec::new();
    let mut pending = Vec::new();
    while let Some(aggregate) = touched.try_next().await? {
        let returns = aggregate.has_pre_state && !aggregate.created_by_batch();
        if aggregate.pre_state_unknown()
            || !same_but_version(aggregate.current.as_ref(), aggregate.batch_after.as_ref())
        {
            conflicting.push((aggregate.aggregate_id, aggregate.batch_last_position));
            // Once the later batches are rolled back, it is as this batch left it.
            pending.push(Pending {
                aggregate_id: aggregate.aggregate_id,
                change: (!aggregate.pre_state_unknown())
                    .then(|| change(aggregate.batch_after.is_some(), returns)),
                later_batches: Vec::new(),
                changed_after: Some(aggregate.batch_last_position),
            });
            if listed.len() < MAX_LISTED {
                listed.push(aggregate);
            }
            continue;
        }
        let change = change(aggregate.current.is_some(), returns);
        restorations.push(Restoration {
            aggregate_type: aggregate.aggregate_type,
            aggregate_id: aggregate.aggregate_id,
            new_version: aggregate.newest_version + 1,
            change,
            returns,
        });
    }
    drop(touched);
    let mut in_the_way = later_batches(connection, &conflicting).await?;
    let mut later_batches = BTreeSet::new();
    for pending in &mut pending {
        if let Some(batches) = in_the_way.remove(&pending.aggregate_id) {
            later_batches.extend(batches.iter().copied());
            pending.later_batches = batches;
        }
    }
    let mut conflicts = listed_conflicts(connection, &listed).await?;
    let mut conflict_count = conflicting.len();
    // Then, one check after the other (each on what the ones before left): what would
    // take a tag another asset or cable has now (or a relationship's kind and ends),
    // then what would leave links naming assets that do not exist: links brought back
    // to ends that are gone, and assets deleted that links of later batches name.
    for check in [Check::TagsTaken, Check::GoneEnds, Check::LinkedAssets] {
        let found = match check {
            Check::TagsTaken => tags_taken(connection, correlation_id, &restorations).await?,
            Check::GoneEnds => {
                links_to_gone_ends(connection, correlation_id, &restorations).await?
            }
            Check::LinkedAssets => linked_assets(connection, &restorations).await?,
        };
        let dropped: HashSet<Uuid> = found.iter().map(|c| c.aggregate_id).collect();
        let changes: HashMap<Uuid, &'static str> = restorations
            .iter()
            .filter(|r| dropped.contains(&r.aggregate_id))
            .map(|r| (r.aggregate_id, r.change))
            .collect();
        for conflict in found {
            later_batches.extend(conflict.later_batches.iter().copied());
            pending.push(Pending {
                aggregate_id: conflict.aggregate_id,
                change: changes.get(&conflict.aggregate_id).copied(),
                later_batches: conflict.later_batches.clone(),
                changed_after: None,
            });
            conflict_count += 1;
            if conflicts.len() < MAX_LISTED {
                conflicts.push(conflict);
            }
        }
        restorations.retain(|restoration| !dropped.contains(&restoration.aggregate_id));
    }
    name_conflicts(connection, correlation_id, &mut conflicts).await?;
    // Findings are the batch's own events, not aggregates: a rollback undoes them
    // whatever conflicts, but for those of the assets a partial rollback leaves.
    // Counted as `restore::restore_findings` undoes them.
    let kept: Vec<Uuid> = pending.iter().map(|pending| pending.aggregate_id).collect();
    // The assets the rollback brings back (a finding on one reopens) and those it
    // deletes (their findings close, whoever raised them, as a deletion closes them).
    let assets = |returns: bool| -> Vec<Uuid> {
        restorations
            .iter()
            .filter(|r| r.aggregate_type == "asset" && r.returns == returns)
            .map(|r| r.aggregate_id)
            .collect()
    };
    let (back, deleted) = (assets(true), assets(false));
    let (findings, findings_closed, findings_reopened): (bool, i64, i64) = sqlx::query_as(
        "with events as (
             select e.event_type, (e.payload ->> 'asset_id')::uuid as asset_id, e.rule_id,
                 e.payload ->> 'message' as message,
                 coalesce((e.payload ->> 'raised_in')::uuid, e.correlation_id) as raised_in
             from workflow_events e
             where e.correlation_id = $1
               and e.event_type in ('FINDING_RAISED', 'FINDING_RESOLVED'))
         select count(*) > 0,
             count(*) filter (
                 where event_type = 'FINDING_RAISED' and rule_id is not null
                   and asset_id <> all($2)
                   and exists (select 1 from findings f
                               where (f.asset_id, f.rule_id, f.message, f.correlation_id)
                                     = (events.asset_id, events.rule_id, events.message,
                                        events.raised_in)))
             + (select count(*) from findings f
                where f.asset_id = any($4) and f.correlation_id <> $1)::bigint,
             count(*) filter (
                 where event_type = 'FINDING_RESOLVED' and rule_id is not null
                   and asset_id <> all($2) and asset_id <> all($4)
                   and (asset_id = any($3)
                        or exists (select 1 from assets a where a.id = events.asset_id))
                   and not exists (select 1 from findings f
                                   where (f.asset_id, f.rule_id, f.message)
                                         = (events.asset_id, events.rule_id, events.message)
                                     and f.correlation_id <> $1))
         from events",
    )
    .bind(correlation_id)
    .bind(&kept)
    .bind(&back)
    .bind(&deleted)
    .fetch_one(&mut *connection)
    .await?;
    Ok(Analysis {
        correlation_id,
        restorations,
        conflicts,
        conflict_count,
        later_batches,
        pending,
        findings,
        findings_closed: usize::try_from(findings_closed).unwrap_or_default(),
        findings_reopened: usize::try_from(findings_reopened).unwrap_or_default(),
    })
}

/// What a rollback does to an aggregate that exists now (`exists`) and returns to a
/// pre-batch state (`returns`).
fn change(exists: bool, returns: bool) -> &'static str {
    match (exists, returns) {
        (true, true) => "restored",
        (true, false) => "deleted",
        (false, _) => "recreated",
    }
}

/// The checks a rollback's restorations go through after the versions'.
#[derive(Clone, Copy)]
enum Check {
    TagsTaken,
    GoneEnds,
    LinkedAssets,
}

/// The assets and cables the rollback would bring back (restore or recreate) with a tag
/// that another one has now, and the relationships it would bring back whose kind and
/// ends another relationship has now, which the rollback leaves as they are: tags are
/// unique, and so is a relationship of a kind between two assets.
async fn tags_taken(
    connection: &mut PgConnection,
    correlation_id: Uuid,
    restorations: &[Restoration],
) -> Result<Vec<Conflict>, sqlx::Error> {
    let back: Vec<Uuid> = restorations
        .iter()
        .filter(|r| {
            r.returns
                && matches!(
                    r.aggregate_type.as_str(),
                    "asset" | "cable" | "relationship"
                )
        })
        .map(|r| r.aggregate_id)
        .collect();
    if back.is_empty() {
        return Ok(Vec::new());
    }
    let handled: HashSet<Uuid> = restorations.iter().map(|r| r.aggregate_id).collect();
    // Each one's pre-batch tag, who has it now, and the batch that gave the holder
    // that tag (made it, renamed it, or brought it back): the one to roll back to free
    // the tag. Before, the batch of the holder's last event was named, a later one that
    // only changed it: a cascade rolled that back and still found the tag taken.
    let holders: Vec<(Uuid, String, Uuid, Option<Uuid>)> = sqlx::query_as(
        "select s.aggregate_id, s.aggregate_type, h.id,
             (select w.correlation_id from workflow_events w
              where w.aggregate_id = h.id and jsonb_typeof(w.payload -> 'after') = 'object'
                and (jsonb_typeof(w.payload -> 'before') is distinct from 'object'
                     or (w.payload -> 'before' ->> 'tag')
                        is distinct from (w.payload -> 'after' ->> 'tag'))
              order by w.aggregate_version desc limit 1)
         from execution_snapshots s
         cross join lateral (
             select a.id from assets a
             where s.aggregate_type = 'asset' and a.tag = s.state->>'tag' and a.id <> s.aggregate_id
             union all
             select c.id from cables c
             where s.aggregate_type = 'cable' and c.tag = s.state->>'tag' and c.id <> s.aggregate_id
             union all
             select r.id from relationships r
             where s.aggregate_type = 'relationship' and r.kind = s.state->>'kind'
               and r.from_asset = (s.state->>'from_asset')::uuid
               and r.to_asset = (s.state->>'to_asset')::uuid and r.id <> s.aggregate_id
         ) h
         where s.correlation_id = $1 and s.aggregate_id = any($2) and s.state is not null
         order by s.aggregate_id",
    )
    .bind(correlation_id)
    .bind(&back)
    .fetch_all(connection)
    .await?;
    Ok(holders
        .into_iter()
        .filter(|(_, _, holder, _)| !handled.contains(holder))
        .map(|(aggregate_id, aggregate_type, _, last_batch)| Conflict {
            tag: None,
            reason: if aggregate_type == "relationship" {
                "link_taken"
            } else {
                "tag_taken"
            },
            aggregate_type,
            aggregate_id,
            later_batches: last_batch
                .filter(|batch| *batch != correlation_id)
                .into_iter()
                .collect(),
            diff: Value::Array(Vec::new()),
        })
        .collect())
}

/// Whether a restoration is of a cable or a relationship.
pub(super) fn is_link(restoration: &Restoration) -> bool {
    matches!(
        restoration.aggregate_type.as_str(),
        "cable" | "relationship"
    )
}

/// The links the rollback would bring back (restore or recreate) whose pre-batch ends
/// include an asset that will not exist after it: gone now and not recreated by it,
/// or deleted by it.
async fn links_to_gone_ends(
    connection: &mut PgConnection,
    correlation_id: Uuid,
    restorations: &[Restoration],
) -> Result<Vec<Conflict>, sqlx::Error> {
    let links: Vec<Uuid> = restorations
        .iter()
        .filter(|r| r.returns && is_link(r))
        .map(|r| r.aggregate_id)
        .collect();
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let (recreated, deleted): (HashSet<Uuid>, HashSet<Uuid>) = {
        let assets = restorations.iter().filter(|r| r.aggregate_type == "asset");
        let (back, gone): (Vec<_>, Vec<_>) = assets.partition(|r| r.returns);
        (
            back.iter().map(|r| r.aggregate_id).collect(),
            gone.iter().map(|r| r.aggregate_id).collect(),
        )
    };
    // Each link's ends: whether the asset exists now, and the batch of its last event.
    let ends: Vec<(Uuid, String, Uuid, bool, Option<Uuid>)> = sqlx::query_as(
        "select s.aggregate_id, s.aggregate_type, e.end_id,
             exists (select 1 from assets a where a.id = e.end_id),
             (select w.correlation_id from workflow_events w where w.aggregate_id = e.end_id
              order by w.aggregate_version desc limit 1)
         from execution_snapshots s
         cross join lateral (values ((s.state->>'from_asset')::uuid), ((s.state->>'to_asset')::uuid))
             as e(end_id)
         where s.correlation_id = $1 and s.aggregate_id = any($2) and s.state is not null
         order by s.aggregate_id",
    )
    .bind(correlation_id)
    .bind(&links)
    .fetch_all(connection)
    .await?;
    let mut conflicts: Vec<Conflict> = Vec::new();
    for (link, aggregate_type, end, exists, last_batch) in ends {
        let stays = (exists && !deleted.contains(&end)) || recreated.contains(&end);
        if stays || conflicts.last().is_some_and(|c| c.aggregate_id == link) {
            continue;
        }
        conflicts.push(Conflict {
            tag: None,
            aggregate_type,
            aggregate_id: link,
            reason: "end_gone",
            later_batches: last_batch
                .filter(|batch| *batch != correlation_id)
                .into_iter()
                .collect(),
            diff: Value::Array(Vec::new()),
        });
    }
    Ok(conflicts)
}

/// The assets the rollback would delete (the batch created them) that cables or
/// relationships it leaves in place name: those links came later.
async fn linked_assets(
    connection: &mut PgConnection,
    restorations: &[Restoration],
) -> Result<Vec<Conflict>, sqlx::Error> {
    let deleted: Vec<Uuid> = restorations
        .iter()
        .filter(|r| !r.returns && r.aggregate_type == "asset")
        .map(|r| r.aggregate_id)
        .collect();
    if deleted.is_empty() {
        return Ok(Vec::new());
    }
    let handled: HashSet<Uuid> = restorations
        .iter()
        .filter(|r| is_link(r))
        .map(|r| r.aggregate_id)
        .collect();
    // Each link naming one of them, and the batch of the link's last event.
    let links: Vec<(Uuid, Uuid, Option<Uuid>)> = sqlx::query_as(
        "select d.id, l.id,
             (select w.correlation_id from workflow_events w where w.aggregate_id = l.id
              order by w.aggregate_version desc limit 1)
         from unnest($1::uuid[]) with ordinality as d(id, n)
         cross join lateral (
             select c.id from cables c where c.from_asset = d.id or c.to_asset = d.id
             union
             select r.id from relationships r where r.from_asset = d.id or r.to_asset = d.id
         ) l
         order by d.n",
    )
    .bind(&deleted)
    .fetch_all(connection)
    .await?;
    let mut conflicts: Vec<Conflict> = Vec::new();
    for (asset, link, last_batch) in links {
        if handled.contains(&link) {
            continue;
        }
        if conflicts.last().is_none_or(|c| c.aggregate_id != asset) {
            conflicts.push(Conflict {
                tag: None,
                aggregate_type: "asset".to_owned(),
                aggregate_id: asset,
                reason: "linked",
                later_batches: Vec::new(),
                diff: Value::Array(Vec::new()),
            });
        }
        if let (Some(conflict), Some(batch)) = (conflicts.last_mut(), last_batch) {
            if !conflict.later_batches.contains(&batch) {
                conflict.later_batches.push(batch);
                conflict.later_batches.sort();
            }
        }
    }
    Ok(conflicts)
}

/// The events after this batch's last on each aggregate (`$1` ids, `$2` positions)
/// that are not rolled back.
const LATER_EVENTS: &str = "from workflow_events e
     join unnest($1::uuid[], $2::int8[]) as t(aggregate_id, after_position)
       on e.aggregate_id = t.aggregate_id and e.position > t.after_position
     where not exists (select 1 from event_rollbacks r where r.event_id = e.event_id)";

/// The batches in the way of each of `conflicting` (aggregate id and the position of
/// this batch's last event on it), sorted; an aggregate no later batch changed is left
/// out.
async fn later_batches(
    connection: &mut PgConnection,
    conflicting: &[(Uuid, i64)],
) -> Result<HashMap<Uuid, Vec<Uuid>>, sqlx::Error> {
    if conflicting.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "select distinct e.aggregate_id, e.correlation_id {LATER_EVENTS}
         order by e.aggregate_id, e.correlation_id"
    );
    let mut rows = sqlx::query_as::<_, (Uuid, Uuid)>(&sql)
        .bind(conflicting.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(conflicting.iter().map(|c| c.1).collect::<Vec<_>>())
        .fetch(connection);
    let mut by_aggregate: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    while let Some((aggregate_id, batch)) = rows.try_next().await? {
        by_aggregate.entry(aggregate_id).or_default().push(batch);
    }
    Ok(by_aggregate)
}

/// The listed conflicts with their later batches and their diffs.
async fn listed_conflicts(
    connection: &mut PgConnection,
    listed: &[Touched],
) -> Result<Vec<Conflict>, sqlx::Error> {
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(&format!(
        "select distinct e.aggregate_id, e.correlation_id {LATER_EVENTS}"
    ))
    .bind(listed.iter().map(|t| t.aggregate_id).collect::<Vec<_>>())
    .bind(
        listed
            .iter()
            .map(|t| t.batch_last_position)
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *connection)
    .await?;
    let mut by_aggregate: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (aggregate_id, correlation_id) in rows {
        by_aggregate
            .entry(aggregate_id)
            .or_default()
            .push(correlation_id);
    }
    Ok(listed
        .iter()
        .map(|aggregate| {
            let diff = json_patch::diff(
                aggregate.batch_after.as_ref().unwrap_or(&Value::Null),
                aggregate.current.as_ref().unwrap_or(&Value::Null),
            );
            let mut later = by_aggregate
                .remove(&aggregate.aggregate_id)
                .unwrap_or_default();
            later.sort();
            Conflict {
                tag: None,
                aggregate_type: aggregate.aggregate_type.clone(),
                aggregate_id: aggregate.aggregate_id,
                reason: "changed",
                later_batches: later,
                diff: serde_json::to_value(diff).unwrap_or(Value::Null),
            }
        })
        .collect())
}

/// Whether two states are the same but for their versions: equal content is "the
/// same" even if a later batch and its rollback moved the version on.
fn same_but_version(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let content = |state: &serde_json::Map<String, Value>| {
                state
                    .iter()
                    .filter(|(name, _)| name.as_str() != "version")
                    .count()
            };
            content(a) == content(b)
                && a.iter()
                    .filter(|(name, _)| name.as_str() != "version")
                    .all(|(name, value)| b.get(name) == Some(value))
        }
        (a, b) => a == b,
    }
}

/// Give each listed conflict its tag (a helper, area A: the answers named aggregates
/// by id only, where a stale plan's names them by tag): the asset's or cable's now,
/// else the one the batch last gave it.
async fn name_conflicts(
    connection: &mut PgConnection,
    correlation_id: Uuid,
    conflicts: &mut [Conflict],
) -> Result<(), sqlx::Error> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = conflicts.iter().map(|c| c.aggregate_id).collect();
    let tags: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, Option<String>)>(
        "select c.id, coalesce(
             (select tag from assets where id = c.id),
             (select tag from cables where id = c.id),
             (select s.state ->> 'tag' from execution_snapshots s
              where s.correlation_id = $2 and s.aggregate_id = c.id),
             (select coalesce(nullif(w.payload -> 'after', 'null'::jsonb),
                              w.payload -> 'before') ->> 'tag'
              from workflow_events w where w.aggregate_id = c.id and w.correlation_id = $2
              order by w.aggregate_version desc limit 1))
         from unnest($1::uuid[]) as c(id)",
    )
    .bind(&ids)
    .bind(correlation_id)
    .fetch_all(connection)
    .await?
    .into_iter()
    .filter_map(|(id, tag)| Some((id, tag?)))
    .collect();
    for conflict in conflicts {
        if conflict.aggregate_type != "relationship" {
            conflict.tag = tags.get(&conflict.aggregate_id).cloned();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::same_but_version;
    use serde_json::json;

    #[test]
    fn states_that_differ_only_in_version_are_the_same() {
        let a = json!({"tag": "M-1", "properties": {"kw": 75}, "version": 2});
        let b = json!({"version": 4, "properties": {"kw": 75}, "tag": "M-1"});
        assert!(same_but_version(Some(&a), Some(&b)));
        assert!(same_but_version(None, None));
    }

    #[test]
    fn a_changed_missing_or_extra_field_is_a_difference() {
        let a = json!({"tag": "M-1", "properties": {"kw": 75}, "version": 2});
        let changed = json!({"tag": "M-1", "properties": {"kw": 90}, "version": 2});
        let missing = json!({"tag": "M-1", "version": 2});
        let extra = json!({"tag": "M-1", "properties": {"kw": 75}, "area": "U1", "version": 2});
        for other in [&changed, &missing, &extra] {
            assert!(!same_but_version(Some(&a), Some(other)), "{other}");
            assert!(!same_but_version(Some(other), Some(&a)), "{other}");
        }
        assert!(!same_but_version(Some(&a), None));
        assert!(!same_but_version(None, Some(&a)));
    }
}
