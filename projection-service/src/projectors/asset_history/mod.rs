//! The asset-history read model: `rm_events` (every event, with the columns the
//! timeline and histories filter on, and the diff of each change), `rm_asset_links`
//! (the positions of the cable and relationship changes of each asset at their ends,
//! [`link_ends`], which its history lists too), `rm_aggregates` (the current state of
//! every asset, cable and relationship) and `rm_findings` (the open findings,
//! [`findings`]).
//!
//! The tables are written with one statement each per batch (arrays bound as
//! parameters and `unnest`ed), because a rule run produces tens of thousands of
//! events per second and a statement per event would not keep up.

mod findings;
mod rows;

pub use rows::{asset_id, diff, latest_states, link_ends, sides, AggregateState};

use super::Projector;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::HashMap;
use synapse_shared::{EventEnvelope, EventType};
use uuid::Uuid;

/// Projects every event into `rm_events` and every change into `rm_aggregates`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AssetHistoryProjector;

/// Its checkpoint name.
pub const NAME: &str = "asset_history";

impl Projector for AssetHistoryProjector {
    fn name(&self) -> &'static str {
        NAME
    }

    /// `rm_events` rows are keyed by position: no other batch writes them, and they
    /// are most of the projection's work.
    fn writes_ahead(&self) -> bool {
        true
    }

    async fn write_ahead(
        &self,
        connection: &mut PgConnection,
        events: &[&EventEnvelope],
    ) -> Result<(), sqlx::Error> {
        insert_events(connection, events).await
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&EventEnvelope],
    ) -> Result<(), sqlx::Error> {
        mark_rolled_back(connection, events).await?;
        findings::apply(connection, events).await?;
        upsert_states(connection, &latest_states(events)).await
    }
}

/// Show a rolled-back batch's events as rolled back, without touching their content:
/// a `ROLLBACK` event marks the target batch's events on its aggregate, and
/// `BATCH_ROLLED_BACK` marks the target batch's own batch-level events. The targets
/// precede the rollback in the log, so they are already in `rm_events`.
///
/// One statement for each kind, each reading through one index: the aggregate's events
/// (`rm_events_aggregate_idx`, see [`MARK_AGGREGATE_ROLLBACKS`]) for a `ROLLBACK`, the
/// batch's (`rm_events_correlation_idx`) for a `BATCH_ROLLED_BACK`, whose target is a
/// whole batch anyway. Both in one statement (`aggregate_id = m.aggregate_id or
/// m.aggregate_id is null`) read every event of the target batch for every `ROLLBACK`:
/// catching up on a million events, 23% of the samples of the projection's connections
/// were that statement, for one rolled-back batch of 10,000 assets.
async fn mark_rolled_back(
    connection: &mut PgConnection,
    events: &[&EventEnvelope],
) -> Result<(), sqlx::Error> {
    // Rollbacks in log order, one after the other: a rollback of a rollback in the
    // same slice unmarks what the first one marked (`unmark_redone`) only after it did.
    let rollbacks = events.chunk_by(|a, b| {
        let rollback = |event: &EventEnvelope| {
            (matches!(
                event.event_type,
                EventType::Rollback | EventType::BatchRolledBack
            ) || UndoneFinding::of(event).is_some())
            .then_some(event.correlation_id)
        };
        rollback(a) == rollback(b)
    });
    for run in rollbacks {
        mark_rolled_back_by_one(connection, run).await?;
    }
    Ok(())
}

/// [`mark_rolled_back`] for events of which the rollback events are of one batch.
async fn mark_rolled_back_by_one(
    connection: &mut PgConnection,
    events: &[&EventEnvelope],
) -> Result<(), sqlx::Error> {
    let mut on_aggregates = RolledBack::default();
    let mut aggregates: Vec<Uuid> = Vec::new();
    let mut batch_level = RolledBack::default();
    let findings: Vec<UndoneFinding> = events
        .iter()
        .filter_map(|event| UndoneFinding::of(event))
        .collect();
    for event in events {
        match event.event_type {
            EventType::Rollback if on_aggregates.add(event, "rolled_back_correlation_id") => {
                aggregates.push(event.aggregate_id);
            }
            EventType::BatchRolledBack => {
                batch_level.add(event, "target_correlation_id");
            }
            _ => {}
        }
    }
    if !on_aggregates.targets.is_empty() {
        unmark_redone(connection, &on_aggregates.targets, &aggregates).await?;
        sqlx::query(MARK_AGGREGATE_ROLLBACKS)
            .bind(on_aggregates.targets)
            .bind(aggregates)
            .bind(on_aggregates.rollbacks)
            .execute(&mut *connection)
            .await?;
    }
    // An event already marked keeps its first rollback, as the command side's
    // `event_rollbacks` does (a partial rollback, then another of the same batch).
    if !batch_level.targets.is_empty() {
        sqlx::query(
            "update rm_events e set rolled_back = true, rolled_back_by = m.rollback
             from unnest($1::uuid[], $2::uuid[]) as m(target, rollback)
             where e.correlation_id = m.target and e.aggregate_type = 'batch'
               and e.event_type not in ('FINDING_RAISED', 'FINDING_RESOLVED')
               and not e.rolled_back",
        )
        .bind(batch_level.targets)
        .bind(batch_level.rollbacks)
        .execute(&mut *connection)
        .await?;
    }
    if !findings.is_empty() {
        mark_findings(connection, &findings).await?;
    }
    Ok(())
}

/// A finding event of a rollback: it closes (`FINDING_RESOLVED`) or reopens
/// (`FINDING_RAISED`) a finding the target batch had raised or resolved.
struct UndoneFinding {
    rollback: Uuid,
    target: Uuid,
    event_type: &'static str,
    rule_id: Uuid,
    asset_id: Uuid,
    message: String,
}

impl UndoneFinding {
    fn of(event: &EventEnvelope) -> Option<Self> {
        if !matches!(
            event.event_type,
            EventType::FindingRaised | EventType::FindingResolved
        ) {
            return None;
        }
        let text = |key: &str| event.payload.get(key).and_then(Value::as_str);
        Some(Self {
            rollback: event.correlation_id,
            target: text("rolled_back_correlation_id")?.parse().ok()?,
            event_type: event.event_type.as_str(),
            rule_id: event.rule_id?,
            asset_id: text("asset_id")?.parse().ok()?,
            message: text("message")?.to_owned(),
        })
    }
}

/// As the command side's `rollback::restore::mark_findings`: the target's finding
/// event that a rollback's finding event undoes (same finding, the other type) is
/// rolled back by it; where the target is a rollback that had undone the same finding
/// event of its own target, that one is live again. Before, a rollback marked every
/// finding event of its target, and a rollback of it left them marked.
async fn mark_findings(
    connection: &mut PgConnection,
    findings: &[UndoneFinding],
) -> Result<(), sqlx::Error> {
    let column = |pick: fn(&UndoneFinding) -> Uuid| findings.iter().map(pick).collect::<Vec<_>>();
    let types: Vec<&str> = findings.iter().map(|f| f.event_type).collect();
    let messages: Vec<&str> = findings.iter().map(|f| f.message.as_str()).collect();
    sqlx::query(
        "update rm_events e set rolled_back = false, rolled_back_by = null
         from unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[])
             as m(target, event_type, rule_id, asset_id, message)
         where e.asset_id = m.asset_id and e.rolled_back_by = m.target
           and e.event_type = m.event_type and e.rule_id = m.rule_id
           and e.payload ->> 'message' = m.message",
    )
    .bind(column(|f| f.target))
    .bind(&types)
    .bind(column(|f| f.rule_id))
    .bind(column(|f| f.asset_id))
    .bind(&messages)
    .execute(&mut *connection)
    .await?;
    let marks: Vec<(Uuid, Uuid, &UndoneFinding)> =
        findings.iter().map(|f| (f.target, f.rollback, f)).collect();
    mark_undone_findings(connection, &marks).await?;
    // Where the target was a redo, the events of the rollback it redid that are live
    // again undo their own target's once more (`rollback::restore::mark_findings`).
    let mut targets: Vec<Uuid> = column(|f| f.target);
    targets.sort_unstable();
    targets.dedup();
    let undone = targets_of_rollbacks(connection, &targets).await?;
    let mut middle: Vec<Uuid> = undone.values().copied().collect();
    middle.sort_unstable();
    middle.dedup();
    let first = targets_of_rollbacks(connection, &middle).await?;
    let redone: Vec<(Uuid, Uuid, &UndoneFinding)> = findings
        .iter()
        .filter_map(|f| {
            let undone = *undone.get(&f.target)?;
            Some((*first.get(&undone)?, undone, f))
        })
        .collect();
    mark_undone_findings(connection, &redone).await
}

/// For each (batch, marker, finding event): the event of `batch` of the same finding
/// and the other type is undone by it, and marked rolled back by `marker`.
async fn mark_undone_findings(
    connection: &mut PgConnection,
    marks: &[(Uuid, Uuid, &UndoneFinding)],
) -> Result<(), sqlx::Error> {
    if marks.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "update rm_events e set rolled_back = true, rolled_back_by = m.marker
         from unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[], $6::text[])
             as m(batch, marker, event_type, rule_id, asset_id, message)
         where e.asset_id = m.asset_id and e.correlation_id = m.batch
           and e.event_type in ('FINDING_RAISED', 'FINDING_RESOLVED')
           and e.event_type <> m.event_type and e.rule_id = m.rule_id
           and e.payload ->> 'message' = m.message and not e.rolled_back",
    )
    .bind(marks.iter().map(|(batch, _, _)| *batch).collect::<Vec<_>>())
    .bind(
        marks
            .iter()
            .map(|(_, marker, _)| *marker)
            .collect::<Vec<_>>(),
    )
    .bind(
        marks
            .iter()
            .map(|(_, _, f)| f.event_type)
            .collect::<Vec<_>>(),
    )
    .bind(marks.iter().map(|(_, _, f)| f.rule_id).collect::<Vec<_>>())
    .bind(marks.iter().map(|(_, _, f)| f.asset_id).collect::<Vec<_>>())
    .bind(
        marks
            .iter()
            .map(|(_, _, f)| f.message.as_str())
            .collect::<Vec<_>>(),
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Of `batches`, the rollbacks, each with the batch it rolled back.
async fn targets_of_rollbacks(
    connection: &mut PgConnection,
    batches: &[Uuid],
) -> Result<HashMap<Uuid, Uuid>, sqlx::Error> {
    if batches.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "select correlation_id, (payload ->> 'target_correlation_id')::uuid from rm_events
         where correlation_id = any($1) and event_type = 'BATCH_STARTED'
           and payload ->> 'kind' = 'rollback'",
    )
    .bind(batches)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(batch, target)| Some((batch, target?)))
        .collect())
}

/// A rollback of a rollback redoes what that one undid: the events it had marked
/// rolled back on the aggregates it restores are live again, as the command side's
/// `event_rollbacks` says (`rollback::restore::unmark_redone`). Per `ROLLBACK` (target
/// batch `targets[i]` on aggregate `aggregates[i]`): only where the target is itself a
/// rollback (it has `ROLLBACK` events), the aggregate's events it had marked. Before,
/// the change a redo brought back stayed flagged rolled back in every read, and
/// `include_rolled_back=false` hid it.
async fn unmark_redone(
    connection: &mut PgConnection,
    targets: &[Uuid],
    aggregates: &[Uuid],
) -> Result<(), sqlx::Error> {
    let mut distinct = targets.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let rollbacks: Vec<Uuid> = sqlx::query_scalar(
        "select target from unnest($1::uuid[]) as t(target)
         where exists (select 1 from rm_events
                       where correlation_id = t.target and event_type = 'ROLLBACK')",
    )
    .bind(&distinct)
    .fetch_all(&mut *connection)
    .await?;
    if rollbacks.is_empty() {
        return Ok(());
    }
    let (redone_targets, redone_aggregates): (Vec<Uuid>, Vec<Uuid>) = targets
        .iter()
        .zip(aggregates)
        .filter(|(target, _)| rollbacks.contains(target))
        .map(|(target, aggregate)| (*target, *aggregate))
        .unzip();
    sqlx::query(
        "update rm_events e set rolled_back = false, rolled_back_by = null
         from unnest($1::uuid[], $2::uuid[]) as m(target, aggregate_id)
         where e.aggregate_id = m.aggregate_id and e.rolled_back_by = m.target",
    )
    .bind(&redone_targets)
    .bind(&redone_aggregates)
    .execute(&mut *connection)
    .await?;
    // Where the target itself redid what a rollback X undid, that is undone again:
    // the events X had undone on the aggregate are X's once more, as the command
    // side's `rollback::restore::remark_undone` says.
    sqlx::query(
        "update rm_events e set rolled_back = true, rolled_back_by = redone.correlation_id
         from unnest($1::uuid[], $2::uuid[]) as m(target, aggregate_id)
         join rm_events redo
           on redo.aggregate_id = m.aggregate_id and redo.correlation_id = m.target
          and redo.event_type = 'ROLLBACK'
         join rm_events redone
           on redone.aggregate_id = m.aggregate_id and redone.event_type = 'ROLLBACK'
          and redone.correlation_id = (redo.payload ->> 'rolled_back_correlation_id')::uuid
         where e.aggregate_id = m.aggregate_id
           and e.correlation_id = (redone.payload ->> 'rolled_back_correlation_id')::uuid
           and not e.rolled_back",
    )
    .bind(&redone_targets)
    .bind(&redone_aggregates)
    .execute(connection)
    .await?;
    Ok(())
}

/// Marks the events a slice's `ROLLBACK`s undid: per `ROLLBACK`, the events of the
/// batch it names (`$1`) on its aggregate (`$2`), as rolled back by its batch (`$3`).
///
/// Each aggregate's events are read through `rm_events_aggregate_idx` alone (a handful
/// per aggregate) and the batch is checked on those rows: `offset 0` keeps the planner
/// from pushing `correlation_id = m.target` into that scan. Written as one `where`, that
/// condition let the planner AND in `rm_events_correlation_idx`, reading every event of
/// the target batch again for each `ROLLBACK`, whenever the statistics made the batch
/// look small (many small batches in `rm_events`), in custom and generic plans alike.
/// Marking 2,000 aggregates of a 150,000-event batch, in an `rm_events` of 955,000
/// events, took 15.8 s that way (2,000 bitmap scans of 151,000 entries; 20,000
/// aggregates under a generic plan: 170 s) and takes 0.23 s this way (20,000: 2.0 s,
/// most of it the updates themselves), custom or generic. Public so that a test can
/// check its plan.
pub const MARK_AGGREGATE_ROLLBACKS: &str =
    "update rm_events e set rolled_back = true, rolled_back_by = m.rollback
     from unnest($1::uuid[], $2::uuid[], $3::uuid[]) as m(target, aggregate_id, rollback)
     cross join lateral (
         select position, correlation_id from rm_events
         where aggregate_id = m.aggregate_id
         offset 0
     ) as history
     where history.correlation_id = m.target and e.position = history.position
       and not e.rolled_back";

/// Per rollback event: the batch it undid (`targets`) and the rollback's own batch.
#[derive(Default)]
struct RolledBack {
    targets: Vec<Uuid>,
    rollbacks: Vec<Uuid>,
}

impl RolledBack {
    /// Add `event`, whose payload names the batch it undid under `key`; `false` (and
    /// nothing added) when it names none.
    fn add(&mut self, event: &EventEnvelope, key: &str) -> bool {
        let target = event
            .payload
            .get(key)
            .and_then(Value::as_str)
            .and_then(|id| id.parse().ok());
        let Some(target) = target else {
            return false;
        };
        self.targets.push(target);
        self.rollbacks.push(event.correlation_id);
        true
    }
}

/// Append the events to `rm_events`, and the link events' ends to `rm_asset_links`.
///
/// The checkpoint already keeps repeats out, so the rows go in with a plain `insert`:
/// `on conflict do nothing` (speculative insertion into a table with two unique and
/// thirteen other indexes) made the statement a quarter slower. Only rows left behind
/// by hand (a checkpoint reset without its tables), or a replica's last batch that
/// committed as another took over, can collide; then the insert is
/// undone to a savepoint and repeated with `on conflict do nothing`, so a replay over
/// them stays harmless. Link rows are keyed by position too, so they go with their
/// events, undone and repeated alike.
async fn insert_events(
    connection: &mut PgConnection,
    events: &[&EventEnvelope],
) -> Result<(), sqlx::Error> {
    let columns = EventColumns::of(events);
    sqlx::query("savepoint rm_events_insert")
        .execute(&mut *connection)
        .await?;
    let links = LinkColumns::of(events);
    let inserted = async {
        insert_event_rows(connection, &columns, "").await?;
        insert_link_rows(connection, &links, "").await
    };
    match inserted.await {
        Ok(()) => {}
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            tracing::warn!(
                first_position = columns.position.first().copied(),
                "rm_events already holds some of these positions; inserting the rest"
            );
            sqlx::query("rollback to savepoint rm_events_insert")
                .execute(&mut *connection)
                .await?;
            insert_event_rows(connection, &columns, " on conflict do nothing").await?;
            insert_link_rows(connection, &links, " on conflict do nothing").await?;
        }
        Err(error) => return Err(error),
    }
    sqlx::query("release savepoint rm_events_insert")
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// One `insert` of `columns` into `rm_events`, with `conflict` appended.
async fn insert_event_rows(
    connection: &mut PgConnection,
    columns: &EventColumns<'_>,
    conflict: &str,
) -> Result<(), sqlx::Error> {
    let statement = format!(
        "insert into rm_events (
             position, event_id, event_type, aggregate_type, aggregate_id, asset_id,
             correlation_id, causation_id, rule_id, rule_version, discipline, actor,
             occurred_at, payload, diff, aggregate_version, schema_version)
         select * from unnest(
             $1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::uuid[],
             $7::uuid[], $8::uuid[], $9::uuid[], $10::integer[], $11::text[], $12::text[],
             $13::timestamptz[], $14::text[]::json[], $15::text[]::json[], $16::bigint[], $17::smallint[]){conflict}"
    );
    sqlx::query(&statement)
        .bind(&columns.position)
        .bind(&columns.event_id)
        .bind(&columns.event_type)
        .bind(&columns.aggregate_type)
        .bind(&columns.aggregate_id)
        .bind(&columns.asset_id)
        .bind(&columns.correlation_id)
        .bind(&columns.causation_id)
        .bind(&columns.rule_id)
        .bind(&columns.rule_version)
        .bind(&columns.discipline)
        .bind(&columns.actor)
        .bind(&columns.occurred_at)
        .bind(&columns.payload)
        .bind(&columns.diff)
        .bind(&columns.aggregate_version)
        .bind(&columns.schema_version)
        .execute(connection)
        .await?;
    Ok(())
}

/// One `insert` of `links` into `rm_asset_links`, with `conflict` appended; none when
/// the batch changed no link.
async fn insert_link_rows(
    connection: &mut PgConnection,
    links: &LinkColumns,
    conflict: &str,
) -> Result<(), sqlx::Error> {
    if links.position.is_empty() {
        return Ok(());
    }
    let statement = format!(
        "insert into rm_asset_links (asset_id, position)
         select * from unnest($1::uuid[], $2::bigint[]){conflict}"
    );
    sqlx::query(&statement)
        .bind(&links.asset_id)
        .bind(&links.position)
        .execute(connection)
        .await?;
    Ok(())
}

/// The `rm_asset_links` rows of a batch: one per end of each link change event.
#[derive(Default)]
struct LinkColumns {
    asset_id: Vec<Uuid>,
    position: Vec<i64>,
}

impl LinkColumns {
    fn of(events: &[&EventEnvelope]) -> Self {
        let mut columns = Self::default();
        for event in events {
            for end in link_ends(event) {
                columns.asset_id.push(end);
                columns.position.push(event.position);
            }
        }
        columns
    }
}

/// Set the current state of each aggregate, unless the row already reflects a later
/// event (state never moves backwards, whatever order replicas or replays commit in).
async fn upsert_states(
    connection: &mut PgConnection,
    states: &[AggregateState],
) -> Result<(), sqlx::Error> {
    if states.is_empty() {
        return Ok(());
    }
    let aggregate_id: Vec<Uuid> = states.iter().map(|row| row.aggregate_id).collect();
    let aggregate_type: Vec<&str> = states
        .iter()
        .map(|row| row.aggregate_type.as_str())
        .collect();
    let state: Vec<Option<Value>> = states.iter().map(|row| row.state.clone()).collect();
    let version: Vec<i64> = states.iter().map(|row| row.version).collect();
    let last_position: Vec<i64> = states.iter().map(|row| row.last_position).collect();
    sqlx::query(
        "insert into rm_aggregates (aggregate_id, aggregate_type, state, version, last_position)
         select * from unnest($1::uuid[], $2::text[], $3::jsonb[], $4::bigint[], $5::bigint[])
         on conflict (aggregate_id) do update
         set aggregate_type = excluded.aggregate_type,
             state = excluded.state,
             version = excluded.version,
             last_position = excluded.last_position
         where rm_aggregates.last_position < excluded.last_position",
    )
    .bind(aggregate_id)
    .bind(aggregate_type)
    .bind(state)
    .bind(version)
    .bind(last_position)
    .execute(connection)
    .await?;
    Ok(())
}

/// The `rm_events` rows of a batch, column by column, as `unnest` wants them.
#[derive(Default)]
struct EventColumns<'a> {
    position: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<&'static str>,
    aggregate_type: Vec<&'static str>,
    aggregate_id: Vec<Uuid>,
    asset_id: Vec<Option<Uuid>>,
    correlation_id: Vec<Uuid>,
    causation_id: Vec<Option<Uuid>>,
    rule_id: Vec<Option<Uuid>>,
    rule_version: Vec<Option<i32>>,
    discipline: Vec<Option<&'a str>>,
    actor: Vec<&'a str>,
    occurred_at: Vec<DateTime<Utc>>,
    /// JSON text: the columns are `json`, stored and served as written.
    payload: Vec<String>,
    diff: Vec<Option<String>>,
    aggregate_version: Vec<i64>,
    schema_version: Vec<i16>,
}

impl<'a> EventColumns<'a> {
    fn of(events: &[&'a EventEnvelope]) -> Self {
        let mut columns = Self::with_capacity(events.len());
        for event in events {
            columns.push(event);
        }
        columns
    }

    fn with_capacity(capacity: usize) -> Self {
        Self {
            position: Vec::with_capacity(capacity),
            event_id: Vec::with_capacity(capacity),
            event_type: Vec::with_capacity(capacity),
            aggregate_type: Vec::with_capacity(capacity),
            aggregate_id: Vec::with_capacity(capacity),
            asset_id: Vec::with_capacity(capacity),
            correlation_id: Vec::with_capacity(capacity),
            causation_id: Vec::with_capacity(capacity),
            rule_id: Vec::with_capacity(capacity),
            rule_version: Vec::with_capacity(capacity),
            discipline: Vec::with_capacity(capacity),
            actor: Vec::with_capacity(capacity),
            occurred_at: Vec::with_capacity(capacity),
            payload: Vec::with_capacity(capacity),
            diff: Vec::with_capacity(capacity),
            aggregate_version: Vec::with_capacity(capacity),
            schema_version: Vec::with_capacity(capacity),
        }
    }

    fn push(&mut self, event: &'a EventEnvelope) {
        self.position.push(event.position);
        self.event_id.push(event.event_id);
        self.event_type.push(event.event_type.as_str());
        self.aggregate_type.push(event.aggregate_type.as_str());
        self.aggregate_id.push(event.aggregate_id);
        self.asset_id.push(asset_id(event));
        self.correlation_id.push(event.correlation_id);
        self.causation_id.push(event.causation_id);
        self.rule_id.push(event.rule_id);
        self.rule_version.push(event.rule_version);
        self.discipline.push(event.discipline.as_deref());
        self.actor.push(&event.actor);
        self.occurred_at.push(event.occurred_at);
        self.payload.push(event.payload.to_string());
        self.diff.push(diff(event));
        self.aggregate_version.push(event.aggregate_version);
        self.schema_version.push(event.schema_version);
    }
}
