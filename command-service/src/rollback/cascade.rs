//! Rolling back a batch, and in cascade mode the later batches in its way first.

use super::analyze::{analyze, Analysis, AnalysisCounts, Cleared};
use super::restore::{restore, RollbackOutcome};
use super::{Mode, RollbackError};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeSet, HashMap, HashSet};
use uuid::Uuid;

/// Most batches one cascade may roll back: a longer chain is better reviewed by an
/// engineer batch by batch.
pub const MAX_CASCADE: usize = 50;

/// Lock `correlation_id`'s batch row and check it can be rolled back; whether it was
/// partially rolled back already.
pub async fn lock_batch(
    connection: &mut PgConnection,
    correlation_id: Uuid,
) -> Result<Partially, RollbackError> {
    let row: Option<(String, Option<Uuid>)> = sqlx::query_as(
        "select status, rolled_back_by from batches where correlation_id = $1 for update",
    )
    .bind(correlation_id)
    .fetch_optional(&mut *connection)
    .await?;
    match row {
        None => Err(RollbackError::NotFound(correlation_id)),
        Some((status, _)) if status == "running" => {
            Err(RollbackError::StillRunning(correlation_id))
        }
        Some((status, Some(rolled_back_by))) if status == "rolled_back" => {
            // The rollbacks of that rollback, of that one, and so on: each redoes or
            // undoes the batch's changes in turn, and only the last one tells which
            // holds now.
            let chain: Vec<Uuid> = sqlx::query_scalar(
                "with recursive chain (correlation_id, depth) as (
                     select $1::uuid, 0
                     union all
                     select b.rolled_back_by, chain.depth + 1
                     from chain join batches b on b.correlation_id = chain.correlation_id
                     where b.status = 'rolled_back' and b.rolled_back_by is not null
                       and chain.depth < 1000
                 )
                 select correlation_id from chain where depth > 0 order by depth",
            )
            .bind(rolled_back_by)
            .fetch_all(&mut *connection)
            .await?;
            let last = chain.last().copied();
            // An odd count of rollbacks after the first redoes the changes.
            let (redone_by, undone_again_by) = match chain.len() % 2 {
                1 => (last, None),
                _ => (None, last),
            };
            Err(RollbackError::AlreadyRolledBack {
                correlation_id,
                rolled_back_by,
                redone_by,
                undone_again_by,
            })
        }
        Some((status, _)) => Ok(Partially(status == "partially_rolled_back")),
    }
}

/// Whether a batch was partially rolled back already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partially(pub bool);

/// Whether `mode` would roll back the batch `analysis` describes. Strict refuses any
/// conflict. Partial refuses when every aggregate left conflicts and no finding is left
/// to undo (the batch raised or resolved none, or a partial rollback undid them
/// already): it would restore nothing, and only add an empty batch that the batch would
/// name as its rollback. Cascade clears the way first ([`preview`] says whether it
/// would).
pub fn goes_ahead(analysis: &Analysis, mode: Mode, partially: Partially) -> bool {
    match mode {
        _ if analysis.conflict_count == 0 => true,
        Mode::Strict => false,
        Mode::Partial => !analysis.restorations.is_empty() || (analysis.findings && !partially.0),
        Mode::Cascade => true,
    }
}

/// Roll back one batch in the caller's transaction, per `mode` (strict or partial).
pub async fn rollback_one(
    connection: &mut PgConnection,
    actor: &str,
    correlation_id: Uuid,
    mode: Mode,
) -> Result<RollbackOutcome, RollbackError> {
    let partially = lock_batch(connection, correlation_id).await?;
    let analysis = analyze(connection, correlation_id).await?;
    // Cascade mode: the way is clear by now, or this batch conflicts still.
    let mode_here = match mode {
        Mode::Cascade => Mode::Strict,
        mode => mode,
    };
    if !goes_ahead(&analysis, mode_here, partially) {
        return Err(RollbackError::Conflicts(analysis));
    }
    restore(connection, actor, analysis, mode, None).await
}

/// Cascade, first part: while `correlation_id` conflicts, roll back the newest later
/// batch in its way (itself by cascade), each in its own transaction; the rollbacks
/// made, oldest first. The target itself is left for the caller to roll back
/// ([`rollback_one`] in `Mode::Cascade`), in a transaction of its own choosing (the one
/// that claimed the request's `Idempotency-Key` before the cascade began). A later batch found rolled back
/// meanwhile (by a concurrent cascade) is out of the way already.
///
/// The cascade's own rollbacks are never in the way: each changes the aggregates it
/// restores after the target, so counting them made the cascade roll back its own
/// rollback, redoing what it had undone, until its step limit (two later batches that
/// changed the same asset were enough). Nor is any other rollback of a later batch
/// ([`in_the_way`]). A batch still in the way after the cascade
/// rolled it back is a conflict the cascade cannot clear, and ends it.
pub async fn clear_the_way(
    pool: &PgPool,
    actor: &str,
    correlation_id: Uuid,
) -> Result<Vec<Uuid>, RollbackError> {
    let mut cascaded = Vec::new();
    let mut undone = HashSet::new();
    let mut stack = vec![correlation_id];
    // Every step pushes a batch, rolls one back or pops one another request rolled
    // back: bounded, even if the analysis named such a batch again.
    let mut steps = 0;
    while let Some(&current) = stack.last() {
        steps += 1;
        if cascaded.len() > MAX_CASCADE || steps > 3 * MAX_CASCADE {
            return Err(RollbackError::CascadeTooLong(MAX_CASCADE));
        }
        let mut transaction = pool.begin().await?;
        match lock_batch(&mut transaction, current).await {
            Err(RollbackError::AlreadyRolledBack { .. }) if current != correlation_id => {
                stack.pop();
                continue;
            }
            locked => {
                locked?;
            }
        }
        let analysis = analyze(&mut transaction, current).await?;
        let candidates: Vec<Uuid> = analysis
            .later_batches
            .iter()
            .filter(|batch| !cascaded.contains(*batch))
            .copied()
            .collect();
        let in_the_way = in_the_way(&mut transaction, current, candidates).await?;
        match newest(&mut transaction, &in_the_way).await? {
            Some(later) if !stack.contains(&later) && !undone.contains(&later) => {
                transaction.rollback().await?;
                stack.push(later);
            }
            Some(_) => return Err(RollbackError::Conflicts(analysis)),
            None if current == correlation_id => return Ok(cascaded),
            None => {
                let outcome = restore(
                    &mut transaction,
                    actor,
                    analysis,
                    Mode::Cascade,
                    Some(correlation_id),
                )
                .await?;
                transaction.commit().await?;
                stack.pop();
                undone.insert(current);
                cascaded.push(outcome.correlation_id);
            }
        }
    }
    Err(RollbackError::NotFound(correlation_id))
}

/// The rollbacks cascades of `correlation_id` made on their way, oldest first: this
/// request's, and those of an earlier attempt that stopped before the end.
pub async fn cascaded_for(
    connection: &mut PgConnection,
    correlation_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "select correlation_id from batches
         where kind = 'rollback' and request->>'cascade_of' = $1::text
         order by started_at, correlation_id",
    )
    .bind(correlation_id)
    .fetch_all(connection)
    .await
}

/// What a cascade would do, as its dry run answers it.
#[derive(Debug)]
pub struct CascadePreview {
    /// The batches it would roll back before the target, in that order.
    pub order: Vec<Uuid>,
    /// What the target's rollback would do after them.
    pub counts: AnalysisCounts,
    /// Whether the target would be rolled back in the end.
    pub would_roll_back: bool,
}

/// Preview the cascade rollback of `target` (analysed as `analysis`), writing nothing
/// and locking nothing: [`clear_the_way`] walked on analyses alone. Each batch it would
/// roll back is taken to return what it touched to before it, but for what conflicts
/// in its own analysis and nothing it rolls back clears (its pre-batch state unknown);
/// those stay in the way of the batches before it. As the cascade re-analyses after
/// each rollback, a conflict whose content the rollbacks so far bring back to the
/// batch's own result (a later batch set a value back) no longer counts.
pub async fn preview(
    connection: &mut PgConnection,
    analysis: &Analysis,
) -> Result<CascadePreview, RollbackError> {
    let target = analysis.correlation_id;
    let mut analyses: HashMap<Uuid, Analysis> = HashMap::new();
    let mut cleared = Cleared::default();
    let mut order = Vec::new();
    let mut stack = vec![target];
    let mut steps = 0;
    let mut gives_up = false;
    while let Some(&current) = stack.last() {
        steps += 1;
        if order.len() > MAX_CASCADE || steps > 3 * MAX_CASCADE {
            gives_up = true;
            break;
        }
        if current != target {
            let status: Option<String> =
                sqlx::query_scalar("select status from batches where correlation_id = $1")
                    .bind(current)
                    .fetch_optional(&mut *connection)
                    .await?;
            match status.as_deref() {
                Some("rolled_back") => {
                    stack.pop();
                    continue;
                }
                Some("running") | None => {
                    gives_up = true;
                    break;
                }
                Some(_) => {}
            }
        }
        let analysed = match current == target {
            true => analysis,
            false => match analyses.entry(current) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(analyze(&mut *connection, current).await?)
                }
            },
        };
        // Rollbacks of batches after this one are out of its way already: taken as
        // undone, as the cascade's own rollbacks are.
        let later: BTreeSet<Uuid> = analysed
            .pending
            .iter()
            .flat_map(|pending| pending.later_batches.iter().copied())
            .filter(|batch| !cleared.rolled.contains(batch))
            .collect();
        let later: Vec<Uuid> = later.into_iter().collect();
        let kept = in_the_way(&mut *connection, current, later.clone()).await?;
        cleared
            .rolled
            .extend(later.into_iter().filter(|batch| !kept.contains(batch)));
        cleared.returned = returned(&mut *connection, analysed, &cleared.rolled).await?;
        let in_the_way: BTreeSet<Uuid> = analysed
            .still_conflicting(&cleared)
            .flat_map(|pending| pending.later_batches.iter().copied())
            .filter(|batch| !cleared.rolled.contains(batch))
            .collect();
        let in_the_way: Vec<Uuid> = in_the_way.into_iter().collect();
        match newest(&mut *connection, &in_the_way).await? {
            Some(later) if !stack.contains(&later) => stack.push(later),
            Some(_) => {
                gives_up = true;
                break;
            }
            None if current == target => break,
            None => {
                let left: Vec<Uuid> = analysed
                    .still_conflicting(&cleared)
                    .map(|pending| pending.aggregate_id)
                    .collect();
                cleared.stuck.extend(left);
                cleared.rolled.insert(current);
                order.push(current);
                stack.pop();
            }
        }
    }
    cleared.returned = returned(&mut *connection, analysis, &cleared.rolled).await?;
    let counts = analysis.counts_after(&cleared);
    Ok(CascadePreview {
        order,
        counts,
        would_roll_back: !gives_up && counts.conflicts == 0,
    })
}

/// The aggregates `analysis`'s batch changed that a later batch changed again, whose
/// content rolling back `rolled` would bring back to the batch's own result: the
/// newest of their later events that `rolled` holds, back to the first one it does not,
/// are undone, and the state before the oldest of those (its batch's snapshot) equals
/// what the batch left (versions aside).
async fn returned(
    connection: &mut PgConnection,
    analysis: &Analysis,
    rolled: &BTreeSet<Uuid>,
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let changed: Vec<(Uuid, i64)> = analysis
        .pending
        .iter()
        .filter(|pending| pending.later_batches.iter().any(|b| rolled.contains(b)))
        .filter_map(|pending| pending.changed_after.map(|at| (pending.aggregate_id, at)))
        .collect();
    if changed.is_empty() {
        return Ok(HashSet::new());
    }
    let rolled: Vec<Uuid> = rolled.iter().copied().collect();
    let returned: Vec<Uuid> = sqlx::query_scalar(
        "with changed as (
             select * from unnest($1::uuid[], $2::int8[]) as c(aggregate_id, after_position)
         ),
         later as (
             select e.aggregate_id, e.correlation_id, e.position,
                 bool_and(e.correlation_id = any($3::uuid[]))
                     over (partition by e.aggregate_id order by e.position desc) as undone
             from changed c
             join workflow_events e on e.aggregate_id = c.aggregate_id and e.position > c.after_position
             where not exists (select 1 from event_rollbacks r where r.event_id = e.event_id)
         ),
         oldest_undone as (
             select distinct on (aggregate_id) aggregate_id, correlation_id
             from later where undone order by aggregate_id, position
         )
         select o.aggregate_id
         from oldest_undone o
         join changed c on c.aggregate_id = o.aggregate_id
         join workflow_events own on own.position = c.after_position
         left join execution_snapshots s
             on s.correlation_id = o.correlation_id and s.aggregate_id = o.aggregate_id
         where (case jsonb_typeof(s.state::jsonb) when 'object' then s.state::jsonb - 'version'
                else nullif(s.state::jsonb, 'null'::jsonb) end)
               is not distinct from
               (case jsonb_typeof(own.payload -> 'after')
                    when 'object' then (own.payload -> 'after') - 'version'
                    else nullif(own.payload -> 'after', 'null'::jsonb) end)",
    )
    .bind(changed.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, at)| *at).collect::<Vec<_>>())
    .bind(&rolled)
    .fetch_all(connection)
    .await?;
    Ok(returned.into_iter().collect())
}

/// Of `later`, the batches that a cascade clearing the way of `current` rolls back: not
/// a rollback of a batch that came after `current`, which only undid what came after
/// it, as the cascade means to (the cascade's own rollbacks, an earlier attempt's, or
/// anyone's); but a rollback of such a rollback (a redo) is, as it brought the later
/// batch's changes back (before, it was passed over too, and the cascade went round
/// the later batch, already rolled back, until its step limit: 422). Rolling one back redid the batch it undid, which was then in the way
/// again and could not be rolled back a second time: the cascade went round until its
/// step limit and answered 422 with the redo written.
async fn in_the_way(
    connection: &mut PgConnection,
    current: Uuid,
    later: Vec<Uuid>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    if later.is_empty() {
        return Ok(later);
    }
    // Down each rollback's chain of targets to the first batch that is no rollback: an
    // odd number of rollbacks undid it, an even number redid it (a rollback of a
    // rollback brought a later batch's changes back, and is in the way like it).
    let passed: HashSet<Uuid> = sqlx::query_scalar(
        "with recursive chain (start, hops, kind, target) as (
             select b.correlation_id, 1, b.kind, (b.request ->> 'target_correlation_id')::uuid
             from batches b where b.correlation_id = any($1) and b.kind = 'rollback'
             union all
             select c.start, c.hops + 1, t.kind, (t.request ->> 'target_correlation_id')::uuid
             from chain c join batches t on t.correlation_id = c.target
             where t.kind = 'rollback' and c.hops < 1000
         )
         select c.start
         from chain c
         join batches undone on undone.correlation_id = c.target
         where undone.kind <> 'rollback' and c.hops % 2 = 1
           and undone.started_at > (select started_at from batches where correlation_id = $2)",
    )
    .bind(&later)
    .bind(current)
    .fetch_all(&mut *connection)
    .await?
    .into_iter()
    .collect();
    Ok(later
        .into_iter()
        .filter(|batch| !passed.contains(batch))
        .collect())
}

/// The most recent of the batches `later` (by their last event).
async fn newest(
    connection: &mut PgConnection,
    later: &[Uuid],
) -> Result<Option<Uuid>, sqlx::Error> {
    if later.is_empty() {
        return Ok(None);
    }
    let newest: Option<(Uuid,)> = sqlx::query_as(
        "select correlation_id from workflow_events where correlation_id = any($1)
         group by correlation_id order by max(position) desc limit 1",
    )
    .bind(later)
    .fetch_optional(connection)
    .await?;
    Ok(newest.map(|(id,)| id))
}
