//! `command-service rebuild [--check]`: the command side's current-state tables folded
//! again from the event log, the source of truth (SPEC §2).
//!
//! Every change event carries the whole state after it, every finding event the
//! finding, every `RULE_DEFINED` the rule version, and the batch events how each batch
//! went; so each table is one statement over `workflow_events` into a temporary twin.
//! `--check` compares the twins with the tables at one snapshot and changes nothing;
//! a rebuild locks the tables (command writers wait), replaces their rows with the
//! twins' and commits. `execution_snapshots` is not rebuilt: it is the record of what
//! each batch found, which rollbacks read, kept beside the log like the log itself.

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
struct Table {
    name: &'static str,
    /// The columns the fold determines, key first: compared by `--check`, written by
    /// a rebuild.
    columns: &'static str,
    /// A `select` of `columns` from the log.
    fold: fn() -> String,
}

/// Assets, cables and relationships: the `after` of each aggregate's last change
/// event, unless that was a deletion.
fn latest_states(aggregate_type: &str, table: &str, columns: &str) -> String {
    format!(
        "select {columns}
         from (select distinct on (aggregate_id) payload -> 'after' as after
               from workflow_events
               where aggregate_type = '{aggregate_type}' and event_type in ({CHANGE_EVENTS})
               order by aggregate_id, position desc) last,
              jsonb_populate_record(null::{table}, last.after)
         where jsonb_typeof(last.after) = 'object'"
    )
}

const ASSET_COLUMNS: &str = "id, tag, asset_type, discipline, name, area, properties, version";
const CABLE_COLUMNS: &str =
    "id, tag, from_asset, to_asset, cable_type, discipline, properties, version";
const RELATIONSHIP_COLUMNS: &str = "id, kind, from_asset, to_asset, properties, version";

const TABLES: [Table; 6] = [
    Table {
        name: "assets",
        columns: ASSET_COLUMNS,
        fold: || latest_states("asset", "assets", ASSET_COLUMNS),
    },
    Table {
        name: "cables",
        columns: CABLE_COLUMNS,
        fold: || latest_states("cable", "cables", CABLE_COLUMNS),
    },
    Table {
        name: "relationships",
        columns: RELATIONSHIP_COLUMNS,
        fold: || latest_states("relationship", "relationships", RELATIONSHIP_COLUMNS),
    },
    // The open findings: those whose last event is a raise. A reopening by a rollback
    // names the batch, rule version and time of the first raise.
    Table {
        name: "findings",
        columns: "asset_id, rule_id, message, severity, correlation_id, rule_version, raised_at",
        fold: || {
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
                         from workflow_events
                         where event_type in ('FINDING_RAISED', 'FINDING_RESOLVED')) finding
                   order by asset_id, rule_id, message, position desc) last
             where event_type = 'FINDING_RAISED'"
                .to_owned()
        },
    },
    Table {
        name: "rules",
        columns: "id, version, name, discipline, priority, enabled, definition, defined_by, \
                  defined_at",
        fold: || {
            "select aggregate_id, aggregate_version::int, payload -> 'definition' ->> 'name',
                 payload -> 'definition' ->> 'discipline',
                 (payload -> 'definition' ->> 'priority')::int,
                 (payload -> 'definition' ->> 'enabled')::boolean, payload -> 'definition',
                 actor, occurred_at
             from workflow_events
             where event_type = 'RULE_DEFINED'"
                .to_owned()
        },
    },
    // Each batch from its events: kind and actor from BATCH_STARTED, status from how it
    // ended unless a rollback (the last one) undid it. Timings and the request the
    // batch was started with are not compared: a rebuild keeps them where the row
    // exists and takes the events' times where it does not.
    Table {
        name: "batches",
        columns: "correlation_id, kind, status, actor, version, rolled_back_by",
        fold: || {
            "select started.correlation_id, started.payload ->> 'kind',
                 coalesce(rolled.status, case ended.event_type
                     when 'BATCH_COMPLETED' then 'completed'
                     when 'BATCH_FAILED' then 'failed'
                     else 'running' end),
                 started.actor, versions.version, rolled.correlation_id
             from workflow_events started
             join (select aggregate_id, max(aggregate_version) as version
                   from workflow_events where aggregate_type = 'batch'
                   group by aggregate_id) versions
               on versions.aggregate_id = started.correlation_id
             left join (select distinct on (correlation_id) correlation_id, event_type
                        from workflow_events
                        where event_type in ('BATCH_COMPLETED', 'BATCH_FAILED')
                        order by correlation_id, position desc) ended
               on ended.correlation_id = started.correlation_id
             left join (select distinct on (payload ->> 'target_correlation_id')
                            (payload ->> 'target_correlation_id')::uuid as target,
                            payload ->> 'status' as status, correlation_id
                        from workflow_events
                        where event_type = 'BATCH_ROLLED_BACK'
                        order by payload ->> 'target_correlation_id', position desc) rolled
               on rolled.target = started.correlation_id
             where started.event_type = 'BATCH_STARTED'"
                .to_owned()
        },
    },
];

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

/// Fold the log into a temporary twin of each table (`rebuilt_<table>`, dropped at
/// commit) and compare; the caller's transaction decides what becomes of them.
async fn fold_and_compare(connection: &mut PgConnection) -> Result<Vec<TableReport>, sqlx::Error> {
    let mut reports = Vec::with_capacity(TABLES.len());
    for table in &TABLES {
        let name = table.name;
        let columns = table.columns;
        let key = columns.split(',').next().unwrap_or(columns);
        sqlx::query(&format!(
            "create temporary table rebuilt_{name} (like {name} including defaults) on commit drop"
        ))
        .execute(&mut *connection)
        .await?;
        let folded = sqlx::query(&format!(
            "insert into rebuilt_{name} ({columns}) {}",
            (table.fold)()
        ))
        .execute(&mut *connection)
        .await?
        .rows_affected();
        let (rows, missing, extra, sample): (i64, i64, i64, Vec<String>) =
            sqlx::query_as(&format!(
                "with missing as (select {columns} from rebuilt_{name}
                                  except all select {columns} from {name}),
                      extra as (select {columns} from {name}
                                except all select {columns} from rebuilt_{name}),
                      keys as (select {key}::text as key from missing
                               union select {key}::text from extra)
                 select (select count(*) from {name}), (select count(*) from missing),
                        (select count(*) from extra),
                        array(select key from keys order by 1 limit 5)"
            ))
            .fetch_one(&mut *connection)
            .await?;
        reports.push(TableReport {
            table: name,
            folded: i64::try_from(folded).unwrap_or(i64::MAX),
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
    let reports = fold_and_compare(&mut transaction).await?;
    transaction.rollback().await?;
    Ok(reports)
}

/// Replace the rows of every current-state table with the fold of the log, in one
/// transaction that holds the tables' locks: command writers in flight finish first,
/// later ones wait until it commits. Reports how the tables compared before.
pub async fn rebuild(database_url: &str) -> Result<Vec<TableReport>, RebuildError> {
    let mut connection = PgConnection::connect(database_url).await?;
    let deadline = tokio::time::Instant::now() + LOCK_PATIENCE;
    let mut transaction = loop {
        let mut transaction = connection.begin().await?;
        if locked(&mut transaction).await? {
            break transaction;
        }
        transaction.rollback().await?;
        if tokio::time::Instant::now() >= deadline {
            return Err(RebuildError::Busy);
        }
        tokio::time::sleep(LOCK_RETRY).await;
    };
    // A running execution could not write its heartbeat while the tables are held (a
    // fold of a million events holds them for seconds), and another replica's sweep
    // would then fail it while it runs.
    let running: i64 = sqlx::query_scalar("select count(*) from batches where status = 'running'")
        .fetch_one(&mut *transaction)
        .await?;
    if running > 0 {
        transaction.rollback().await?;
        return Err(RebuildError::Running(running));
    }
    let reports = fold_and_compare(&mut transaction).await?;
    for table in &TABLES {
        let name = table.name;
        let columns = table.columns;
        if name == "batches" {
            // The rows keep their request and timings; a missing row takes its events'.
            sqlx::query(
                "delete from batches b
                 where not exists (select 1 from rebuilt_batches r
                                   where r.correlation_id = b.correlation_id)",
            )
            .execute(&mut *transaction)
            .await?;
            sqlx::query(
                "insert into batches (correlation_id, kind, status, actor, version,
                     rolled_back_by, started_at, heartbeat_at, finished_at)
                 select r.correlation_id, r.kind, r.status, r.actor, r.version,
                     r.rolled_back_by, times.started_at, times.last_at,
                     case when r.status <> 'running' then times.last_at end
                 from rebuilt_batches r
                 join (select correlation_id, min(occurred_at) as started_at,
                           max(occurred_at) as last_at
                       from workflow_events where aggregate_type = 'batch'
                       group by correlation_id) times using (correlation_id)
                 on conflict (correlation_id) do update
                     set kind = excluded.kind, status = excluded.status,
                         actor = excluded.actor, version = excluded.version,
                         rolled_back_by = excluded.rolled_back_by",
            )
            .execute(&mut *transaction)
            .await?;
        } else {
            sqlx::query(&format!("delete from {name}"))
                .execute(&mut *transaction)
                .await?;
            sqlx::query(&format!(
                "insert into {name} ({columns}) select {columns} from rebuilt_{name}"
            ))
            .execute(&mut *transaction)
            .await?;
        }
    }
    transaction.commit().await?;
    Ok(reports)
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
