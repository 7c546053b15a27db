//! `command-service rebuild [--check]`: the command side's current-state tables folded
//! again from the event log, the source of truth (SPEC §2).
//!
//! Every change event carries the whole state after it, every finding event the
//! finding, every `RULE_DEFINED` the rule version, and the batch events how each batch
//! went; so each table is one statement over `workflow_events` into a temporary twin.
//! `--check` compares the twins with the tables at one snapshot and changes nothing.
//! A rebuild folds and compares without locks, at one snapshot; then it locks the
//! tables (command writers wait), brings the twins up to date with the few events
//! appended since that snapshot, and rewrites only the rows that differ, so the locks
//! are held for the catch-up and the difference, not for the fold.
//! `execution_snapshots` is not rebuilt: it is the record of what each batch found,
//! which rollbacks read, kept beside the log like the log itself.

use sqlx::{Connection, PgConnection};

/// The change event types: each carries `{"before", "after"}` of its aggregate.
const CHANGE_EVENTS: &str = "'ASSET_CREATED', 'ASSET_UPDATED', 'ASSET_DELETED', \
     'CABLE_CREATED', 'CABLE_UPDATED', 'CABLE_DELETED', 'RELATIONSHIP_CREATED', \
     'RELATIONSHIP_DELETED', 'ROLLBACK'";

/// How long a rebuild keeps trying to take the tables' locks before it gives up.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);
/// The pause between two tries.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// One current-state table and how the log folds into it.
///
/// A table's rows are rewritten by **unit**, the value of its first column (a uuid):
/// an asset, cable, relationship, rule (all its versions) or batch, or the open
/// findings of one asset.
struct Table {
    name: &'static str,
    /// The columns the fold determines, the unit first: compared by `--check`,
    /// written by a rebuild.
    columns: &'static str,
    /// Columns of the twin beyond the table's (`text`), which the catch-up reads.
    hidden: &'static [&'static str],
    /// A `select` of `columns` (then `hidden`) folded from a relation of events.
    fold: fn(events: &str) -> String,
    /// Brings the twin (`rebuilt_<name>`) up to date with the events appended since it
    /// was folded (`fresh_events`), and adds the units whose rows it replaced or added
    /// to `differing_<name>`: one statement.
    catch_up: fn() -> String,
}

/// The events a rebuild appended after its fold, copied while it holds the locks.
const FRESH: &str = "fresh_events";

/// Assets, cables and relationships: the `after` of each aggregate's last change
/// event, unless that was a deletion.
fn latest_states(events: &str, aggregate_type: &str, table: &str, columns: &str) -> String {
    format!(
        "select {columns}
         from (select distinct on (aggregate_id) payload -> 'after' as after
               from {events}
               where aggregate_type = '{aggregate_type}' and event_type in ({CHANGE_EVENTS})
               order by aggregate_id, position desc) last,
              jsonb_populate_record(null::{table}, last.after)
         where jsonb_typeof(last.after) = 'object'"
    )
}

/// The catch-up of a table whose rows each event fully determines (the last event
/// on a row's key decides it): the twin's rows of the keys (`key`) that the fresh
/// events name (`fresh_keys`) are replaced by the fold of the fresh events.
fn replace_keys(table: &Table, key: &str, fresh_keys: &str) -> String {
    let name = table.name;
    let columns = table.columns;
    let unit = unit_of(columns);
    let fold = (table.fold)(FRESH);
    format!(
        "with stale as (delete from rebuilt_{name} where ({key}) in ({fresh_keys})
                        returning {unit}),
              fresh as (insert into rebuilt_{name} ({columns}) {fold} returning {unit})
         insert into differing_{name} (unit)
         select {unit} from stale union select {unit} from fresh"
    )
}

/// The catch-up of assets, cables or relationships (`TABLES[index]`).
fn replace_states(index: usize, aggregate_type: &str) -> String {
    replace_keys(
        &TABLES[index],
        "id",
        &format!("select aggregate_id from {FRESH} where aggregate_type = '{aggregate_type}'"),
    )
}

const ASSET_COLUMNS: &str = "id, tag, asset_type, discipline, name, area, properties, version";
const CABLE_COLUMNS: &str =
    "id, tag, from_asset, to_asset, cable_type, discipline, properties, version";
const RELATIONSHIP_COLUMNS: &str = "id, kind, from_asset, to_asset, properties, version";
const BATCH_COLUMNS: &str = "correlation_id, kind, status, actor, version, rolled_back_by";

/// The open findings: those whose last event is a raise. A reopening by a rollback
/// names the batch, rule version and time of the first raise.
fn open_findings(events: &str) -> String {
    format!(
        "select asset_id, rule_id, message, severity, correlation_id, rule_version, raised_at
         from (select distinct on (asset_id, rule_id, message) *
               from (select (payload ->> 'asset_id')::uuid as asset_id, rule_id,
                         payload ->> 'message' as message, event_type, position,
                         payload ->> 'severity' as severity,
                         coalesce((payload ->> 'raised_in')::uuid, correlation_id)
                             as correlation_id,
                         coalesce((payload ->> 'raised_by_rule_version')::int, rule_version)
                             as rule_version,
                         coalesce((payload ->> 'raised_at')::timestamptz, occurred_at)
                             as raised_at
                     from {events}
                     where event_type in ('FINDING_RAISED', 'FINDING_RESOLVED')) finding
               order by asset_id, rule_id, message, position desc) last
         where event_type = 'FINDING_RAISED'"
    )
}

/// Every rule version.
fn rule_versions(events: &str) -> String {
    format!(
        "select aggregate_id, aggregate_version::int, payload -> 'definition' ->> 'name',
             payload -> 'definition' ->> 'discipline',
             (payload -> 'definition' ->> 'priority')::int,
             (payload -> 'definition' ->> 'enabled')::boolean, payload -> 'definition',
             actor, occurred_at
         from {events}
         where event_type = 'RULE_DEFINED'"
    )
}

/// Each batch from its events: kind and actor from BATCH_STARTED, status from how it
/// ended unless a rollback (the last one) undid it. Timings and the request the batch
/// was started with are not compared: a rebuild keeps them where the row exists and
/// takes the events' times where it does not. The twin also keeps the two parts of
/// the status (`rolled_status`, `ended_status`), so that a catch-up can tell which
/// one newer events change.
fn batches(events: &str) -> String {
    format!(
        "select started.correlation_id, started.payload ->> 'kind',
             coalesce(rolled.status, ended.status, 'running'),
             started.actor, versions.version, rolled.correlation_id, rolled.status,
             ended.status
         from {events} started
         join (select aggregate_id, max(aggregate_version) as version
               from {events} where aggregate_type = 'batch'
               group by aggregate_id) versions
           on versions.aggregate_id = started.correlation_id
         left join (select distinct on (correlation_id) correlation_id,
                        case event_type when 'BATCH_COMPLETED' then 'completed'
                                        else 'failed' end as status
                    from {events}
                    where event_type in ('BATCH_COMPLETED', 'BATCH_FAILED')
                    order by correlation_id, position desc) ended
           on ended.correlation_id = started.correlation_id
         left join (select distinct on (payload ->> 'target_correlation_id')
                        (payload ->> 'target_correlation_id')::uuid as target,
                        payload ->> 'status' as status, correlation_id
                    from {events}
                    where event_type = 'BATCH_ROLLED_BACK'
                    order by payload ->> 'target_correlation_id', position desc) rolled
           on rolled.target = started.correlation_id
         where started.event_type = 'BATCH_STARTED'"
    )
}

/// The batches that the fresh events tell more about (their own events, or a
/// rollback of them), each from those events and what the twin knew before.
fn batches_caught_up() -> String {
    format!(
        "with touched as (select aggregate_id as id from {FRESH} where aggregate_type = 'batch'
                          union
                          select (payload ->> 'target_correlation_id')::uuid from {FRESH}
                          where event_type = 'BATCH_ROLLED_BACK'),
              started as (select correlation_id as id, payload ->> 'kind' as kind, actor
                          from {FRESH} where event_type = 'BATCH_STARTED'),
              versions as (select aggregate_id as id, max(aggregate_version) as version
                           from {FRESH} where aggregate_type = 'batch'
                           group by aggregate_id),
              ended as (select distinct on (correlation_id) correlation_id as id,
                            case event_type when 'BATCH_COMPLETED' then 'completed'
                                            else 'failed' end as status
                        from {FRESH} where event_type in ('BATCH_COMPLETED', 'BATCH_FAILED')
                        order by correlation_id, position desc),
              rolled as (select distinct on (payload ->> 'target_correlation_id')
                             (payload ->> 'target_correlation_id')::uuid as target,
                             payload ->> 'status' as status, correlation_id
                         from {FRESH} where event_type = 'BATCH_ROLLED_BACK'
                         order by payload ->> 'target_correlation_id', position desc),
              caught as (select t.id, coalesce(s.kind, p.kind) as kind,
                             coalesce(s.actor, p.actor) as actor,
                             coalesce(v.version, p.version) as version,
                             coalesce(r.correlation_id, p.rolled_back_by) as rolled_back_by,
                             case when r.target is not null then r.status
                                  else p.rolled_status end as rolled_status,
                             coalesce(e.status, p.ended_status) as ended_status
                         from touched t
                         left join started s on s.id = t.id
                         left join rebuilt_batches p on p.correlation_id = t.id
                         left join versions v on v.id = t.id
                         left join ended e on e.id = t.id
                         left join rolled r on r.target = t.id
                         where s.id is not null or p.correlation_id is not null),
              stale as (delete from rebuilt_batches
                        where correlation_id in (select id from caught)
                        returning correlation_id),
              added as (insert into rebuilt_batches
                            ({BATCH_COLUMNS}, rolled_status, ended_status)
                        select id, kind, coalesce(rolled_status, ended_status, 'running'),
                            actor, version, rolled_back_by, rolled_status, ended_status
                        from caught
                        returning correlation_id)
         insert into differing_batches (unit)
         select correlation_id from stale union select correlation_id from added"
    )
}

const TABLES: [Table; 6] = [
    Table {
        name: "assets",
        columns: ASSET_COLUMNS,
        hidden: &[],
        fold: |events| latest_states(events, "asset", "assets", ASSET_COLUMNS),
        catch_up: || replace_states(0, "asset"),
    },
    Table {
        name: "cables",
        columns: CABLE_COLUMNS,
        hidden: &[],
        fold: |events| latest_states(events, "cable", "cables", CABLE_COLUMNS),
        catch_up: || replace_states(1, "cable"),
    },
    Table {
        name: "relationships",
        columns: RELATIONSHIP_COLUMNS,
        hidden: &[],
        fold: |events| {
            latest_states(
                events,
                "relationship",
                "relationships",
                RELATIONSHIP_COLUMNS,
            )
        },
        catch_up: || replace_states(2, "relationship"),
    },
    Table {
        name: "findings",
        columns: "asset_id, rule_id, message, severity, correlation_id, rule_version, raised_at",
        hidden: &[],
        fold: open_findings,
        catch_up: || {
            replace_keys(
                &TABLES[3],
                "asset_id, rule_id, message",
                &format!(
                    "select (payload ->> 'asset_id')::uuid, rule_id, payload ->> 'message'
                     from {FRESH} where event_type in ('FINDING_RAISED', 'FINDING_RESOLVED')"
                ),
            )
        },
    },
    Table {
        name: "rules",
        columns: "id, version, name, discipline, priority, enabled, definition, defined_by, \
                  defined_at",
        hidden: &[],
        fold: rule_versions,
        // Versions are never replaced, only added.
        catch_up: || {
            replace_keys(
                &TABLES[4],
                "id, version",
                &format!(
                    "select aggregate_id, aggregate_version::int from {FRESH}
                     where event_type = 'RULE_DEFINED'"
                ),
            )
        },
    },
    Table {
        name: "batches",
        columns: BATCH_COLUMNS,
        hidden: &["rolled_status", "ended_status"],
        fold: batches,
        catch_up: batches_caught_up,
    },
];

/// The first of `columns`: the unit a table's rows are rewritten by.
fn unit_of(columns: &str) -> &str {
    columns.split(',').next().unwrap_or(columns).trim()
}

/// Each rebuilt table with the columns the fold determines (key first).
pub fn tables() -> impl Iterator<Item = (&'static str, &'static str)> {
    TABLES.iter().map(|table| (table.name, table.columns))
}

/// Why a rebuild did not run.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(
        "writers kept the state tables locked for {} s; try again when the service is \
         quieter",
        LOCK_PATIENCE.as_secs()
    )]
    Busy,
    #[error(
        "{0} batch(es) are running: wait until they end (a batch whose executor died is \
         marked failed after BATCH_STALE_AFTER_SECS), then rebuild"
    )]
    Running(i64),
}

/// How one table compares with the fold of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    pub table: &'static str,
    /// Rows the fold of the log gives.
    pub folded: i64,
    /// Rows the table held.
    pub rows: i64,
    /// Rows of the fold that the table lacks or holds otherwise.
    pub missing: i64,
    /// Rows of the table that the fold does not give.
    pub extra: i64,
    /// Keys (first column) of up to five differing rows.
    pub sample: Vec<String>,
}

impl TableReport {
    pub fn agrees(&self) -> bool {
        self.missing == 0 && self.extra == 0
    }
}

/// Fold the whole log into each table's temporary twin, `rebuilt_<table>`, indexed
/// by unit; they live as long as the caller's transaction (if it rolls back) or
/// connection.
async fn fold(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    for table in &TABLES {
        let name = table.name;
        let unit = unit_of(table.columns);
        sqlx::query(&format!(
            "create temporary table rebuilt_{name} (like {name} including defaults)"
        ))
        .execute(&mut *connection)
        .await?;
        let mut inserted = table.columns.to_owned();
        for column in table.hidden {
            sqlx::query(&format!(
                "alter table rebuilt_{name} add column {column} text"
            ))
            .execute(&mut *connection)
            .await?;
            inserted.push_str(", ");
            inserted.push_str(column);
        }
        sqlx::query(&format!(
            "insert into rebuilt_{name} ({inserted}) {}",
            (table.fold)("workflow_events")
        ))
        .execute(&mut *connection)
        .await?;
        sqlx::query(&format!("create index on rebuilt_{name} ({unit})"))
            .execute(&mut *connection)
            .await?;
        sqlx::query(&format!("analyze rebuilt_{name}"))
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// The rows of the twin the table lacks or holds otherwise (`missing`) and the rows
/// of the table the twin lacks (`extra`), of the units `scope` admits.
fn differences(table: &Table, scope: &str) -> String {
    let name = table.name;
    let columns = table.columns;
    format!(
        "with missing as (select {columns} from rebuilt_{name} where {scope}
                          except all select {columns} from {name} where {scope}),
              extra as (select {columns} from {name} where {scope}
                        except all select {columns} from rebuilt_{name} where {scope})"
    )
}

/// Compare each twin with its table, within `scope` of a table (an SQL condition on
/// its columns; `{unit}` and `{name}` are replaced).
async fn compare(
    connection: &mut PgConnection,
    scope: &str,
) -> Result<Vec<TableReport>, sqlx::Error> {
    let mut reports = Vec::with_capacity(TABLES.len());
    for table in &TABLES {
        let name = table.name;
        let unit = unit_of(table.columns);
        let scope = scope.replace("{unit}", unit).replace("{name}", name);
        let (folded, rows, missing, extra, sample): (i64, i64, i64, i64, Vec<String>) =
            sqlx::query_as(&format!(
                "{},
                      keys as (select {unit}::text as key from missing
                               union select {unit}::text from extra)
                 select (select count(*) from rebuilt_{name}), (select count(*) from {name}),
                        (select count(*) from missing), (select count(*) from extra),
                        array(select key from keys order by 1 limit 5)",
                differences(table, &scope)
            ))
            .fetch_one(&mut *connection)
            .await?;
        reports.push(TableReport {
            table: name,
            folded,
            rows,
            missing,
            extra,
            sample,
        });
    }
    Ok(reports)
}

/// Compare every current-state table with the fold of the log, at one snapshot of
/// both, and change nothing.
pub async fn check(database_url: &str) -> Result<Vec<TableReport>, sqlx::Error> {
    let mut connection = PgConnection::connect(database_url).await?;
    let mut transaction = connection.begin().await?;
    // One snapshot for the log and the tables; the transaction writes only its
    // temporary tables and is rolled back.
    sqlx::query("set transaction isolation level repeatable read")
        .execute(&mut *transaction)
        .await?;
    fold(&mut transaction).await?;
    let reports = compare(&mut transaction, "true").await?;
    transaction.rollback().await?;
    Ok(reports)
}

/// Replace the rows of the current-state tables that differ from the fold of the
/// log, in one transaction that holds the tables' locks (command writers in flight
/// finish first, later ones wait until it commits) for as long as it takes to catch
/// up with the events appended since the fold and to rewrite the differing rows.
pub async fn rebuild(database_url: &str) -> Result<Rebuilt, RebuildError> {
    let mut folded = Folded::fold(database_url).await?;
    folded.replace().await
}

/// What a rebuild did.
#[derive(Debug)]
pub struct Rebuilt {
    /// How the tables compared with the log before (the rows it rewrote).
    pub reports: Vec<TableReport>,
    /// The last position of the log the fold read, without locks.
    pub folded_to: i64,
    /// How long the fold took.
    pub fold_time: std::time::Duration,
    /// Events appended between the fold and the locks, which the rebuild caught up
    /// with.
    pub caught_up: i64,
    /// How long it held the tables' locks.
    pub held: std::time::Duration,
}

/// The log folded into the twins at one snapshot, without locks: the first half of
/// a rebuild.
pub struct Folded {
    connection: PgConnection,
    /// The last position the twins include.
    position: i64,
    fold_time: std::time::Duration,
}

impl Folded {
    /// Fold the log and find the units whose rows differ from the tables, at one
    /// snapshot of both, taking no locks.
    pub async fn fold(database_url: &str) -> Result<Folded, RebuildError> {
        let started = std::time::Instant::now();
        let mut connection = PgConnection::connect(database_url).await?;
        refuse_while_running(&mut connection).await?;
        let mut transaction = connection.begin().await?;
        sqlx::query("set transaction isolation level repeatable read")
            .execute(&mut *transaction)
            .await?;
        // Positions commit in order (one append lock, held to commit), so the
        // snapshot holds every event up to the last position it sees and none after.
        let position: i64 =
            sqlx::query_scalar("select coalesce(max(position), 0) from workflow_events")
                .fetch_one(&mut *transaction)
                .await?;
        fold(&mut transaction).await?;
        for table in &TABLES {
            let name = table.name;
            let unit = unit_of(table.columns);
            sqlx::query(&format!(
                "create temporary table differing_{name} as
                 {} select {unit} as unit from missing union select {unit} from extra",
                differences(table, "true")
            ))
            .execute(&mut *transaction)
            .await?;
        }
        // The twins outlive the transaction: they are the connection's.
        transaction.commit().await?;
        Ok(Folded {
            connection,
            position,
            fold_time: started.elapsed(),
        })
    }

    /// Take the tables' locks, bring the twins up to the end of the log, and rewrite
    /// the rows of every unit that differed at the fold or that events have changed
    /// since. A row changed since the fold by something that appended no event (a
    /// hand edit) is left as it is: the next check finds it.
    pub async fn replace(&mut self) -> Result<Rebuilt, RebuildError> {
        let deadline = tokio::time::Instant::now() + LOCK_PATIENCE;
        let mut transaction = loop {
            let mut transaction = self.connection.begin().await?;
            if locked(&mut transaction).await? {
                break transaction;
            }
            transaction.rollback().await?;
            if tokio::time::Instant::now() >= deadline {
                return Err(RebuildError::Busy);
            }
            tokio::time::sleep(LOCK_RETRY).await;
        };
        let held = std::time::Instant::now();
        // A running execution could not write its heartbeat while the tables are
        // held, and another replica's sweep would then fail it while it runs.
        refuse_while_running(&mut transaction).await?;
        let last: i64 =
            sqlx::query_scalar("select coalesce(max(position), 0) from workflow_events")
                .fetch_one(&mut *transaction)
                .await?;
        let mut caught_up = 0;
        if last > self.position {
            // Positions have no gaps but those of rolled-back appends, so the fresh
            // events are at most that many, and the limit makes the planner walk the
            // log's primary key even where its statistics do not know them yet.
            caught_up = sqlx::query(&format!(
                "create temporary table {FRESH} as
                 select * from workflow_events where position > $1 order by position limit $2"
            ))
            .bind(self.position)
            .bind(last - self.position)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
            for table in &TABLES {
                sqlx::query(&(table.catch_up)())
                    .execute(&mut *transaction)
                    .await?;
            }
        }
        for table in &TABLES {
            sqlx::query(&format!("analyze differing_{}", table.name))
                .execute(&mut *transaction)
                .await?;
        }
        let reports = compare(
            &mut transaction,
            "{unit} in (select unit from differing_{name})",
        )
        .await?;
        for table in &TABLES {
            let name = table.name;
            let columns = table.columns;
            let unit = unit_of(columns);
            let differing = format!("{unit} in (select unit from differing_{name})");
            if name == "batches" {
                // The rows keep their request and timings; a missing row takes its
                // events'.
                sqlx::query(&format!(
                    "delete from batches where {differing} and not exists
                         (select 1 from rebuilt_batches r
                          where r.correlation_id = batches.correlation_id)"
                ))
                .execute(&mut *transaction)
                .await?;
                sqlx::query(&format!(
                    "insert into batches (correlation_id, kind, status, actor, version,
                         rolled_back_by, started_at, heartbeat_at, finished_at)
                     select r.correlation_id, r.kind, r.status, r.actor, r.version,
                         r.rolled_back_by, times.started_at, times.last_at,
                         case when r.status <> 'running' then times.last_at end
                     from rebuilt_batches r
                     join (select correlation_id, min(occurred_at) as started_at,
                               max(occurred_at) as last_at
                           from workflow_events
                           where aggregate_type = 'batch' and {differing}
                           group by correlation_id) times using (correlation_id)
                     on conflict (correlation_id) do update
                         set kind = excluded.kind, status = excluded.status,
                             actor = excluded.actor, version = excluded.version,
                             rolled_back_by = excluded.rolled_back_by"
                ))
                .execute(&mut *transaction)
                .await?;
            } else {
                sqlx::query(&format!("delete from {name} where {differing}"))
                    .execute(&mut *transaction)
                    .await?;
                sqlx::query(&format!(
                    "insert into {name} ({columns}) select {columns} from rebuilt_{name}
                     where {differing}"
                ))
                .execute(&mut *transaction)
                .await?;
            }
        }
        transaction.commit().await?;
        Ok(Rebuilt {
            reports,
            folded_to: self.position,
            fold_time: self.fold_time,
            caught_up: i64::try_from(caught_up).unwrap_or(i64::MAX),
            held: held.elapsed(),
        })
    }
}

async fn refuse_while_running(connection: &mut PgConnection) -> Result<(), RebuildError> {
    let running: i64 = sqlx::query_scalar("select count(*) from batches where status = 'running'")
        .fetch_one(&mut *connection)
        .await?;
    if running > 0 {
        return Err(RebuildError::Running(running));
    }
    Ok(())
}

/// Take every table's exclusive lock without waiting: `false` if a writer holds one
/// (the caller lets go of those it took and tries again). Waiting for one while
/// holding others deadlocked with writers that hold row locks in one table and want
/// another (a rollback deleting links, then assets; a cable PATCH checking its ends),
/// and Postgres then aborted the writer (a 409) or the rebuild. Every transaction
/// that appends events writes one of these tables (a batch's row at least), so once
/// they are all held no event commits until the rebuild does.
async fn locked(connection: &mut PgConnection) -> Result<bool, sqlx::Error> {
    for table in &TABLES {
        let taken = sqlx::query(&format!(
            "lock table {} in exclusive mode nowait",
            table.name
        ))
        .execute(&mut *connection)
        .await;
        match taken {
            Ok(_) => {}
            // lock_not_available
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("55P03") => {
                return Ok(false)
            }
            Err(error) => return Err(error),
        }
    }
    Ok(true)
}

/// The reports as a table for a terminal.
pub fn render(reports: &[TableReport]) -> String {
    let mut out = format!(
        "{:<14} {:>12} {:>12} {:>10} {:>10}\n",
        "table", "log fold", "table rows", "missing", "extra"
    );
    for report in reports {
        out.push_str(&format!(
            "{:<14} {:>12} {:>12} {:>10} {:>10}",
            report.table, report.folded, report.rows, report.missing, report.extra
        ));
        if !report.sample.is_empty() {
            out.push_str(&format!("  e.g. {}", report.sample.join(", ")));
        }
        out.push('\n');
    }
    out
}
