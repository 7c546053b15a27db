//! Writing a rollback batch: restored state, snapshots (so a rollback can itself be
//! rolled back), `ROLLBACK` events, the rolled-back marks, all in one transaction.

use super::analyze::{self, Analysis, Restoration};
use super::{Mode, RollbackError};
use crate::assets::store as asset_store;
use crate::links::{cable_store as cables, relationship_store as relationships};
use crate::store::batches::{self, Batch, BatchKind, BatchStatus, ChangeTarget};
use crate::store::snapshot::{self, Snapshot};
use crate::store::{append, single};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgConnection;
use std::collections::HashSet;
use synapse_shared::domain::{AssetState, CableState, Change, FindingPayload, RelationshipState};
use synapse_shared::{AggregateType, EventType, NewEvent};
use uuid::Uuid;

/// Aggregates per slice: each pass reads, writes and appends one slice at a time, so a
/// rollback's memory and each statement's parameter arrays stay bounded.
const SLICE: usize = 5_000;

/// What a rollback did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RollbackOutcome {
    /// The rollback batch.
    pub correlation_id: Uuid,
    /// The batch rolled back.
    pub rolled_back: Uuid,
    pub mode: Mode,
    pub restored: usize,
    /// Aggregates left alone (partial mode), each with the later batches: the first
    /// [`MAX_LISTED`] of them.
    pub skipped: Vec<super::analyze::Conflict>,
    /// How many aggregates were left alone.
    pub skipped_count: usize,
    /// Findings closed (`FINDING_RESOLVED`): raised by the batch, or still open on an
    /// asset the rollback deleted.
    pub findings_closed: usize,
    /// Findings the batch resolved that were opened again (`FINDING_RAISED`).
    pub findings_reopened: usize,
    /// Cascade mode: the rollbacks run first, in the order they ran (the newest batch in
    /// the way first), those of an earlier attempt of the cascade included.
    pub cascaded: Vec<Uuid>,
}

/// A finding event of the batch a rollback undoes.
#[derive(Debug, sqlx::FromRow)]
struct FindingEvent {
    position: i64,
    /// `FINDING_RAISED` or `FINDING_RESOLVED`.
    event_type: String,
    asset_id: Uuid,
    rule_id: Uuid,
    message: String,
    severity: String,
    /// The batch that raised it.
    raised_in: Uuid,
    rule_version: Option<i32>,
    discipline: Option<String>,
    tag: Option<String>,
    /// When it was first raised: the event's own time for a raise; for a resolution,
    /// what it says (none if written before resolutions said it).
    raised_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Findings as before `target`, from its finding events, a slice at a time: what it
/// raised (and is still open as it raised it) is closed, what it resolved is open again
/// as raised by the batch that raised it (unless raised again since, or its asset is
/// gone). Each is appended as an event of the rollback (`FINDING_RESOLVED` for a
/// closed finding, `FINDING_RAISED` for a reopened one), so a rollback of this
/// rollback redoes them like any batch's. The findings of the assets in `kept` (those a
/// partial rollback skips) stay as they are.
async fn restore_findings(
    connection: &mut PgConnection,
    batch: &mut Batch,
    target: Uuid,
    kept: &[Uuid],
    started_id: Uuid,
) -> Result<(usize, usize), RollbackError> {
    let kept: HashSet<Uuid> = kept.iter().copied().collect();
    let mut after = 0;
    let (mut closed_count, mut reopened_count) = (0, 0);
    loop {
        let slice: Vec<FindingEvent> = sqlx::query_as(
            "select e.position, e.event_type, (e.payload->>'asset_id')::uuid as asset_id,
                 e.rule_id, e.payload->>'message' as message,
                 coalesce(e.payload->>'severity', 'info') as severity,
                 coalesce((e.payload->>'raised_in')::uuid, e.correlation_id) as raised_in,
                 coalesce((e.payload->>'raised_by_rule_version')::int, e.rule_version) as rule_version,
                 e.discipline, e.payload->>'tag' as tag,
                 coalesce((e.payload->>'raised_at')::timestamptz,
                          case when e.event_type = 'FINDING_RAISED' then e.occurred_at end)
                     as raised_at
             from workflow_events e
             where e.correlation_id = $1 and e.position > $2 and e.rule_id is not null
               and e.event_type in ('FINDING_RAISED', 'FINDING_RESOLVED')
             order by e.position
             limit $3",
        )
        .bind(target)
        .bind(after)
        .bind(SLICE as i64)
        .fetch_all(&mut *connection)
        .await?;
        let Some(last) = slice.last() else {
            return Ok((closed_count, reopened_count));
        };
        after = last.position;
        let (raised, resolved): (Vec<&FindingEvent>, Vec<&FindingEvent>) = slice
            .iter()
            .filter(|finding| !kept.contains(&finding.asset_id))
            .partition(|finding| finding.event_type == "FINDING_RAISED");
        let key =
            |finding: &FindingEvent| (finding.asset_id, finding.rule_id, finding.message.clone());
        let closed: HashSet<(Uuid, Uuid, String)> = sqlx::query_as(
            "delete from findings f
             using unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[])
                 as r(asset_id, rule_id, message, raised_in)
             where f.asset_id = r.asset_id and f.rule_id = r.rule_id and f.message = r.message
               and f.correlation_id = r.raised_in
             returning f.asset_id, f.rule_id, f.message",
        )
        .bind(raised.iter().map(|f| f.asset_id).collect::<Vec<_>>())
        .bind(raised.iter().map(|f| f.rule_id).collect::<Vec<_>>())
        .bind(
            raised
                .iter()
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(raised.iter().map(|f| f.raised_in).collect::<Vec<_>>())
        .fetch_all(&mut *connection)
        .await?
        .into_iter()
        .collect();
        let reopened: HashSet<(Uuid, Uuid, String)> = sqlx::query_as(
            "insert into findings (asset_id, rule_id, message, severity, correlation_id, rule_version,
                 raised_at)
             select r.asset_id, r.rule_id, r.message, r.severity, r.raised_in, r.rule_version,
                 coalesce(r.raised_at, now())
             from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::int4[],
                 $7::timestamptz[])
                 as r(asset_id, rule_id, message, severity, raised_in, rule_version, raised_at)
             where exists (select 1 from assets a where a.id = r.asset_id)
             on conflict (asset_id, rule_id, message) do update
                 set severity = excluded.severity, correlation_id = excluded.correlation_id,
                     rule_version = excluded.rule_version, raised_at = excluded.raised_at
                 where findings.correlation_id = $8
             returning asset_id, rule_id, message",
        )
        .bind(resolved.iter().map(|f| f.asset_id).collect::<Vec<_>>())
        .bind(resolved.iter().map(|f| f.rule_id).collect::<Vec<_>>())
        .bind(
            resolved
                .iter()
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            resolved
                .iter()
                .map(|f| f.severity.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(resolved.iter().map(|f| f.raised_in).collect::<Vec<_>>())
        .bind(resolved.iter().map(|f| f.rule_version).collect::<Vec<_>>())
        .bind(resolved.iter().map(|f| f.raised_at).collect::<Vec<_>>())
        // The same message raised again by the batch itself (at another severity, by a
        // new version of its rule) is the batch's to undo: it gives way to the one
        // reopened, also when its own event comes in a later slice.
        .bind(target)
        .fetch_all(&mut *connection)
        .await?
        .into_iter()
        .collect();
        let raised: Vec<&FindingEvent> = raised
            .into_iter()
            .filter(|finding| closed.contains(&key(finding)))
            .collect();
        let resolved: Vec<&FindingEvent> = resolved
            .into_iter()
            .filter(|finding| reopened.contains(&key(finding)))
            .collect();
        closed_count += raised.len();
        reopened_count += resolved.len();
        let events: Vec<NewEvent> = raised
            .into_iter()
            .map(|finding| (EventType::FindingResolved, finding))
            .chain(
                resolved
                    .into_iter()
                    .map(|finding| (EventType::FindingRaised, finding)),
            )
            .map(|(event_type, finding)| {
                finding_event(batch, event_type, finding, target, started_id)
            })
            .collect();
        if !events.is_empty() {
            append(connection, events).await?;
        }
    }
}

/// The event of a finding a rollback of `target` closed (`FINDING_RESOLVED`) or
/// reopened (`FINDING_RAISED`).
fn finding_event(
    batch: &mut Batch,
    event_type: EventType,
    finding: &FindingEvent,
    target: Uuid,
    started_id: Uuid,
) -> NewEvent {
    let payload = FindingPayload {
        asset_id: finding.asset_id,
        tag: finding.tag.clone(),
        severity: finding.severity.clone(),
        message: finding.message.clone(),
        raised_in: Some(finding.raised_in),
        raised_by_rule_version: finding.rule_version,
        rolled_back_correlation_id: Some(target),
        raised_at: finding.raised_at,
    };
    let mut event = batch.event(event_type, json!(payload));
    event.causation_id = Some(started_id);
    event.rule_id = Some(finding.rule_id);
    event.rule_version = finding.rule_version;
    event.discipline = finding.discipline.clone();
    event
}

/// Roll back `analysis` as a new batch. The caller holds the target batch's row lock.
pub async fn restore(
    connection: &mut PgConnection,
    actor: &str,
    analysis: Analysis,
    mode: Mode,
    cascade_of: Option<Uuid>,
) -> Result<RollbackOutcome, RollbackError> {
    let target = analysis.correlation_id;
    let mut batch = Batch::new(BatchKind::Rollback, actor);
    // A rollback a cascade makes on its way says whose way it cleared: a retried
    // cascade names it even when an earlier attempt made it.
    let mut request = json!({"target_correlation_id": target, "mode": mode});
    if let Some(cascade_of) = cascade_of {
        request["cascade_of"] = json!(cascade_of);
    }
    batches::open(connection, &batch, Some(&request)).await?;
    let (cause,): (Option<Uuid>,) = sqlx::query_as(
        "select event_id from workflow_events where correlation_id = $1 order by position limit 1",
    )
    .bind(target)
    .fetch_optional(&mut *connection)
    .await?
    .unwrap_or((None,));

    // Slice by slice, so that memory does not grow with the batch: first what every
    // aggregate is now, as this batch's snapshots (so that the rollback can itself be
    // rolled back, and its events can say what each aggregate was); then the states.
    for slice in analysis.restorations.chunks(SLICE) {
        let current = analyze::current_states(connection, slice).await?;
        let snapshots: Vec<Snapshot> = slice
            .iter()
            .zip(&current)
            .map(|(r, current)| {
                Snapshot::new(
                    aggregate_type(&r.aggregate_type),
                    r.aggregate_id,
                    current.as_ref(),
                    r.new_version - 1,
                )
            })
            .collect();
        snapshot::take_many(connection, batch.correlation_id, &snapshots).await?;
    }
    let gone = delete_created(connection, &analysis.restorations).await?;
    for slice in analysis.restorations.chunks(SLICE) {
        let pre_batch = snapshot::read_many(connection, target, &ids(slice)).await?;
        let restored: Vec<(&Restoration, Value)> = slice
            .iter()
            .zip(pre_batch)
            .filter_map(|(r, snapshot)| r.restored_from(snapshot).map(|state| (r, state)))
            .collect();
        // A tag (or a relationship's kind and ends) the analysis saw free, taken since
        // by a concurrent request: refused as concurrent, as a version taken is.
        write_restored(connection, &restored)
            .await
            .map_err(|error| match error.as_database_error() {
                Some(database) if database.is_unique_violation() => RollbackError::Concurrent,
                _ => RollbackError::Database(error),
            })?;
    }

    let restored = analysis.restorations.len();
    let skipped_count = analysis.conflict_count;
    tracing::info!(
        correlation_id = %batch.correlation_id,
        target = %target,
        restored,
        skipped = skipped_count,
        "rollback written"
    );
    let status = if skipped_count == 0 {
        "rolled_back"
    } else {
        "partially_rolled_back"
    };
    mark_rolled_back(
        connection,
        target,
        batch.correlation_id,
        &analysis.restorations,
    )
    .await?;
    // Only a rollback's rollback redoes (or undoes a redo): for any other target both
    // are no-ops, and the second would read every event of the target to find it.
    let (target_is_rollback,): (bool,) =
        sqlx::query_as("select kind = 'rollback' from batches where correlation_id = $1")
            .bind(target)
            .fetch_one(&mut *connection)
            .await?;
    if target_is_rollback {
        unmark_redone(connection, target, &analysis.restorations).await?;
        remark_undone(connection, target, &analysis.restorations).await?;
    }
    sqlx::query("update batches set status = $2, rolled_back_by = $3 where correlation_id = $1")
        .bind(target)
        .bind(status)
        .bind(batch.correlation_id)
        .execute(&mut *connection)
        .await?;

    // Events last, slice by slice: each restoration's state before, from this batch's
    // snapshot, and after, from the target's.
    let mut started = batch.event(
        EventType::BatchStarted,
        json!({"kind": batch.kind.as_str(), "target_correlation_id": target, "mode": mode}),
    );
    started.causation_id = cause;
    let started_id = started.event_id;
    let mut events = vec![started];
    for slice in analysis.restorations.chunks(SLICE) {
        let ids = ids(slice);
        let before = snapshot::read_many(connection, batch.correlation_id, &ids).await?;
        let pre_batch = snapshot::read_many(connection, target, &ids).await?;
        events.extend(slice.iter().zip(before).zip(pre_batch).map(
            |((restoration, before), pre_batch)| {
                let change = Change {
                    before,
                    after: restoration.restored_from(pre_batch),
                };
                rollback_event(&batch, restoration, change, target, started_id)
            },
        ));
        append(connection, std::mem::take(&mut events)).await?;
    }
    // A rollback that restores no aggregate (one of a run that only raised or
    // resolved findings) appends its `BATCH_STARTED` here, before its finding events.
    if !events.is_empty() {
        append(connection, std::mem::take(&mut events)).await?;
    }
    // A partial rollback leaves the assets it skips as the batch left them, findings
    // included.
    let kept: Vec<Uuid> = analysis.pending.iter().map(|p| p.aggregate_id).collect();
    let (mut findings_closed, findings_reopened) =
        restore_findings(connection, &mut batch, target, &kept, started_id).await?;
    // What is still open on the assets it deleted (raised by later batches) is closed,
    // as a deletion of the asset closes it.
    for slice in gone.chunks(SLICE) {
        let closed = single::close_findings_of(connection, slice).await?;
        let resolutions: Vec<NewEvent> = closed
            .into_iter()
            .map(|finding| single::resolution(&mut batch, finding, started_id, Some(target)))
            .collect();
        findings_closed += resolutions.len();
        append(connection, resolutions).await?;
    }
    mark_findings(connection, target, batch.correlation_id).await?;
    let mut rolled = batch.event(
        EventType::BatchRolledBack,
        json!({"target_correlation_id": target, "mode": mode, "restored": restored,
               "skipped": skipped_count, "status": status}),
    );
    rolled.causation_id = Some(started_id);
    events.push(rolled);
    events.push(batch.event(
        EventType::BatchCompleted,
        json!({"kind": batch.kind.as_str(), "restored": restored}),
    ));
    // Recorded once every event is built: the row's version is the last event's.
    batches::record(connection, &batch, BatchStatus::Completed).await?;
    append(connection, events).await?;
    Ok(RollbackOutcome {
        correlation_id: batch.correlation_id,
        rolled_back: target,
        mode,
        restored,
        skipped: analysis.conflicts,
        skipped_count,
        findings_closed,
        findings_reopened,
        cascaded: Vec::new(),
    })
}

/// The `ROLLBACK` event of one restored aggregate: `change` from its state before the
/// rollback to the restored one.
fn rollback_event(
    batch: &Batch,
    restoration: &Restoration,
    change: Change,
    target: Uuid,
    started_id: Uuid,
) -> NewEvent {
    let discipline = change
        .after
        .as_ref()
        .or(change.before.as_ref())
        .and_then(|state| state.get("discipline"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let target_kind = ChangeTarget {
        event_type: EventType::Rollback,
        aggregate_type: aggregate_type(&restoration.aggregate_type),
        aggregate_id: restoration.aggregate_id,
        version: restoration.new_version,
        discipline,
    };
    let mut event = batch.change(target_kind, change, Some(started_id));
    if let Some(payload) = event.payload.as_object_mut() {
        payload.insert("rolled_back_correlation_id".into(), json!(target));
    }
    event
}

/// Delete what the batch created, before any state is restored (a restored tag may be
/// held by a row the batch created); the assets deleted, by id and tag.
///
/// The assets are locked before they go, and then no link may name them but those the
/// rollback restores elsewhere: the analysis read without locks, so a cable or
/// relationship made to one of them meanwhile (which holds its ends `for share` until
/// it commits) would be left naming an asset that does not exist. Such a rollback is
/// refused as concurrent; its retry sees the link as a `linked` conflict. A link made
/// after the lock waits for it, then finds its end gone.
async fn delete_created(
    connection: &mut PgConnection,
    restorations: &[Restoration],
) -> Result<Vec<(Uuid, String)>, RollbackError> {
    let deleted = |kind: &str| -> Vec<Uuid> {
        restorations
            .iter()
            .filter(|r| r.aggregate_type == kind && !r.returns)
            .map(|r| r.aggregate_id)
            .collect()
    };
    sqlx::query("delete from relationships where id = any($1)")
        .bind(deleted("relationship"))
        .execute(&mut *connection)
        .await?;
    sqlx::query("delete from cables where id = any($1)")
        .bind(deleted("cable"))
        .execute(&mut *connection)
        .await?;
    let assets = deleted("asset");
    if assets.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query("select 1 from assets where id = any($1) order by id for update")
        .bind(&assets)
        .execute(&mut *connection)
        .await?;
    let restored_links: Vec<Uuid> = restorations
        .iter()
        .filter(|r| analyze::is_link(r))
        .map(|r| r.aggregate_id)
        .collect();
    let linked: bool = sqlx::query_scalar(
        "select exists (
             select 1 from cables
             where (from_asset = any($1) or to_asset = any($1)) and id <> all($2)
             union all
             select 1 from relationships
             where (from_asset = any($1) or to_asset = any($1)) and id <> all($2))",
    )
    .bind(&assets)
    .bind(&restored_links)
    .fetch_one(&mut *connection)
    .await?;
    if linked {
        return Err(RollbackError::Concurrent);
    }
    Ok(
        sqlx::query_as("delete from assets where id = any($1) returning id, tag")
            .bind(&assets)
            .fetch_all(&mut *connection)
            .await?,
    )
}

/// Upsert restored states with their new versions.
async fn write_restored(
    connection: &mut PgConnection,
    restored: &[(&Restoration, Value)],
) -> Result<(), sqlx::Error> {
    let states = |kind: &'static str| {
        restored
            .iter()
            .filter(move |(r, _)| r.aggregate_type == kind)
            .map(|(_, state)| state)
    };
    let assets: Vec<AssetState> = states("asset")
        .filter_map(|s| AssetState::deserialize(s).ok())
        .collect();
    let cable_states: Vec<CableState> = states("cable")
        .filter_map(|s| CableState::deserialize(s).ok())
        .collect();
    let relationship_states: Vec<RelationshipState> = states("relationship")
        .filter_map(|s| RelationshipState::deserialize(s).ok())
        .collect();
    asset_store::upsert_many(connection, &assets).await?;
    cables::upsert(connection, &cable_states).await?;
    sqlx::query("delete from relationships where id = any($1)")
        .bind(relationship_states.iter().map(|r| r.id).collect::<Vec<_>>())
        .execute(&mut *connection)
        .await?;
    relationships::insert(connection, &relationship_states).await?;
    Ok(())
}

fn ids(restorations: &[Restoration]) -> Vec<Uuid> {
    restorations.iter().map(|r| r.aggregate_id).collect()
}

/// Mark the target's events of the restored aggregates, and its batch-level events
/// but its findings' ([`mark_findings`]), as rolled back by `rollback`.
async fn mark_rolled_back(
    connection: &mut PgConnection,
    target: Uuid,
    rollback: Uuid,
    restorations: &[Restoration],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into event_rollbacks (event_id, rolled_back_by)
         select event_id, $2 from workflow_events
         where correlation_id = $1
           and ((aggregate_type = 'batch'
                 and event_type not in ('FINDING_RAISED', 'FINDING_RESOLVED'))
                or aggregate_id = any($3))
         on conflict (event_id) do nothing",
    )
    .bind(target)
    .bind(rollback)
    .bind(
        restorations
            .iter()
            .map(|r| r.aggregate_id)
            .collect::<Vec<_>>(),
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// The finding events of `target` that `rollback` undid, by its own finding events
/// (each names `target` and the finding: a `FINDING_RESOLVED` undoes a raise, a
/// `FINDING_RAISED` a resolution), are rolled back by it; where `target` is a rollback
/// that had undone the same finding event of its own target, that event is live again.
/// Before, every finding event of the target was marked, also those of the assets a
/// partial rollback left as they were, and a rollback of the rollback left them marked
/// while their findings were open again (a helper, area A).
async fn mark_findings(
    connection: &mut PgConnection,
    target: Uuid,
    rollback: Uuid,
) -> Result<(), sqlx::Error> {
    if let Some(undone) = target_of_rollback(connection, target).await? {
        sqlx::query(&format!(
            "delete from event_rollbacks r
             using workflow_events e, workflow_events f
             where e.correlation_id = $3 and e.event_type in {FINDING_EVENTS}
               and r.event_id = e.event_id and r.rolled_back_by = $1
               and f.correlation_id = $2 and f.event_type = e.event_type
               and (f.payload ->> 'rolled_back_correlation_id')::uuid = $1
               and {SAME_FINDING}"
        ))
        .bind(target)
        .bind(rollback)
        .bind(undone)
        .execute(&mut *connection)
        .await?;
        // Where `target` was a redo (its target a rollback too), the events of that
        // rollback it had unmarked are live again and undo their target's as before:
        // marked by it once more (a helper, area G: after a partial rollback, its redo
        // and the redo's undo, the first raise was live beside two resolutions).
        if let Some(first) = target_of_rollback(connection, undone).await? {
            mark_undone_findings(connection, (rollback, target), first, undone).await?;
        }
    }
    mark_undone_findings(connection, (rollback, target), target, rollback).await
}

/// Of `rollback`'s finding events that name `target`, each undoes the finding event
/// of `batch` of the same finding and the other type: mark those rolled back by
/// `marker`.
async fn mark_undone_findings(
    connection: &mut PgConnection,
    (rollback, target): (Uuid, Uuid),
    batch: Uuid,
    marker: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "insert into event_rollbacks (event_id, rolled_back_by)
         select e.event_id, $4
         from workflow_events f
         join workflow_events e
           on e.correlation_id = $3 and e.event_type in {FINDING_EVENTS}
          and e.event_type <> f.event_type and {SAME_FINDING}
         where f.correlation_id = $2 and f.event_type in {FINDING_EVENTS}
           and (f.payload ->> 'rolled_back_correlation_id')::uuid = $1
         on conflict (event_id) do nothing"
    ))
    .bind(target)
    .bind(rollback)
    .bind(batch)
    .bind(marker)
    .execute(connection)
    .await?;
    Ok(())
}

/// The finding event types, as SQL.
const FINDING_EVENTS: &str = "('FINDING_RAISED', 'FINDING_RESOLVED')";
/// Finding events `f` and `e` of one finding (rule, asset, message), as SQL.
const SAME_FINDING: &str = "f.rule_id = e.rule_id
    and f.payload ->> 'asset_id' = e.payload ->> 'asset_id'
    and f.payload ->> 'message' = e.payload ->> 'message'";

/// The batch that `batch` rolled back, if it is a rollback.
async fn target_of_rollback(
    connection: &mut PgConnection,
    batch: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    let target: Option<(Option<Uuid>,)> = sqlx::query_as(
        "select (payload ->> 'target_correlation_id')::uuid from workflow_events
         where correlation_id = $1 and event_type = 'BATCH_STARTED'
           and payload ->> 'kind' = 'rollback'",
    )
    .bind(batch)
    .fetch_optional(connection)
    .await?;
    Ok(target.and_then(|(target,)| target))
}

/// When `target` is itself a rollback, this one redoes what it undid: the changes it
/// had marked rolled back on the restored aggregates are live again, and a rollback of
/// their batch (one a partial rollback left to finish) must undo them once more.
async fn unmark_redone(
    connection: &mut PgConnection,
    target: Uuid,
    restorations: &[Restoration],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "delete from event_rollbacks r using workflow_events e
         where r.rolled_back_by = $1 and e.event_id = r.event_id and e.aggregate_id = any($2)",
    )
    .bind(target)
    .bind(ids(restorations))
    .execute(connection)
    .await?;
    Ok(())
}

/// When `target` redid what a rollback X undid (it rolled X back), this one undoes
/// that again: the changes X had undone on the restored aggregates (those of the batch
/// X rolled back) are undone once more, and marked rolled back by X as they were
/// before `target` cleared the marks ([`unmark_redone`]). Before, after a rollback, a
/// rollback of it and a rollback of that, the first batch's changes were in no
/// rollback's marks although undone: its dry runs counted them as conflicts and a
/// cascade tried to undo them again.
async fn remark_undone(
    connection: &mut PgConnection,
    target: Uuid,
    restorations: &[Restoration],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into event_rollbacks (event_id, rolled_back_by)
         select undone.event_id, redone.correlation_id
         from workflow_events redo
         join workflow_events redone
           on redone.aggregate_id = redo.aggregate_id and redone.event_type = 'ROLLBACK'
          and redone.correlation_id = (redo.payload ->> 'rolled_back_correlation_id')::uuid
         join workflow_events undone
           on undone.aggregate_id = redo.aggregate_id
          and undone.correlation_id = (redone.payload ->> 'rolled_back_correlation_id')::uuid
         where redo.correlation_id = $1 and redo.event_type = 'ROLLBACK'
           and redo.aggregate_id = any($2)
         on conflict (event_id) do nothing",
    )
    .bind(target)
    .bind(ids(restorations))
    .execute(connection)
    .await?;
    Ok(())
}

fn aggregate_type(name: &str) -> AggregateType {
    name.parse().unwrap_or(AggregateType::Asset)
}
