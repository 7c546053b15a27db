//! `projection-service rebuild [PROJECTOR...]`: rebuild read models from the event log
//! into new tables while the old ones keep serving, then swap them in atomically.
//!
//! The new tables live in a scratch schema put first on the connection's
//! `search_path`, so each projector's own SQL (which names its tables unqualified)
//! writes them unchanged. The log is folded up to the live projector's checkpoint;
//! then, in one transaction that holds the live checkpoint row, the remainder up to
//! that checkpoint is applied and the tables are swapped. The live projector simply
//! continues from its checkpoint afterwards: nothing is applied twice or missed.

use crate::projectors::{self, AnyProjector, Projector};
use anyhow::Context;
use sqlx::{Connection, PgConnection};
use synapse_shared::EventEnvelope;

/// Events folded per transaction while rebuilding.
const PAGE: i64 = 2_000;

/// The tables each projector owns.
pub fn tables_of(projector: &str) -> Option<&'static [&'static str]> {
    match projector {
        projectors::asset_history::NAME => Some(&[
            "rm_events",
            "rm_asset_links",
            "rm_aggregates",
            "rm_findings",
        ]),
        projectors::batches::NAME => Some(&["rm_batches", "rm_batch_rules"]),
        projectors::disciplines::NAME => Some(&["rm_disciplines", "rm_discipline_batches"]),
        _ => None,
    }
}

/// How long the swap waits for a lock before it lets go and tries again.
const SWAP_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How many times the swap is tried.
const SWAP_ATTEMPTS: u32 = 30;

/// The names `like ... including all` gave the indexes of `{schema}.{table}`, each with
/// the name its twin on `public.{table}` has (the migrations' names, which later
/// migrations and the query planner's tests use): matched by their definitions, names
/// and schemas aside. An index without a twin keeps its name.
async fn index_names(
    connection: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "select made.indexname, kept.indexname
         from pg_indexes made
         join pg_indexes kept
           on kept.schemaname = 'public' and kept.tablename = made.tablename
          and replace(kept.indexdef, format('INDEX %s ON public.', kept.indexname), 'INDEX ON ')
            = replace(made.indexdef, format('INDEX %s ON %s.', made.indexname, made.schemaname), 'INDEX ON ')
         where made.schemaname = $1 and made.tablename = $2
           and made.indexname <> kept.indexname",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(connection)
    .await
}

/// Whether `error` is Postgres giving up on a lock (`lock_timeout`, 55P03) or breaking
/// a deadlock it saw (40P01).
fn is_lock_timeout(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<sqlx::Error>())
        .filter_map(sqlx::Error::as_database_error)
        .any(|database| matches!(database.code().as_deref(), Some("55P03" | "40P01")))
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub projector: &'static str,
    pub events: u64,
    pub position: i64,
}

/// Rebuild `projector` (by name) from the log at `log_url` into the read database at
/// `read_url`.
pub async fn rebuild(log_url: &str, read_url: &str, projector: &str) -> anyhow::Result<Rebuilt> {
    let Some(projector) = AnyProjector::named(projector) else {
        anyhow::bail!(
            "unknown projector `{projector}`; known: {}",
            projectors::ALL.join(", ")
        );
    };
    rebuild_with(log_url, read_url, projector).await
}

async fn rebuild_with<P: Projector>(
    log_url: &str,
    read_url: &str,
    projector: P,
) -> anyhow::Result<Rebuilt> {
    let name = projector.name();
    let tables = tables_of(name).context("projector without a table list")?;
    let log = synapse_shared::db::connect(log_url, 2).await?;
    let mut read = PgConnection::connect(read_url)
        .await
        .context("connecting to the read database")?;
    claim(&mut read, name).await?;
    let schema = format!("{}{}", scratch_prefix(name), uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("create schema {schema}"))
        .execute(&mut read)
        .await?;
    let result = async {
        for table in tables {
            sqlx::query(&format!(
                "create table {schema}.{table} (like public.{table} including all)"
            ))
            .execute(&mut read)
            .await?;
        }
        sqlx::query(&format!("set search_path to {schema}, public"))
            .execute(&mut read)
            .await?;

        // Fold the log up to where the live projector is now, page by page.
        let target = live_position(&mut read, name).await?;
        let mut applied = 0;
        let mut position = 0;
        while position < target {
            let page = fold_page(&log, &mut read, &projector, position, target).await?;
            if page.0 == 0 {
                break;
            }
            applied += page.0;
            position = page.1;
        }

        // Catch up, unlocked, with what the live projector applied meanwhile, until
        // little is left: the locked catch-up below holds every projector up.
        loop {
            let live = live_position(&mut read, name).await?;
            if live - position <= PAGE {
                break;
            }
            while position < live {
                let page = fold_page(&log, &mut read, &projector, position, live).await?;
                if page.0 == 0 {
                    break;
                }
                applied += page.0;
                position = page.1;
            }
        }

        // Catch up to the live checkpoint and swap, holding the checkpoint row so the
        // live projector waits for the swap. The swap's `drop table` waits for every
        // transaction on the old table, and the live projector may hold one open (the
        // next batch, written ahead) while it waits for that row: a cycle Postgres
        // cannot see, since one wait is in the projector. A lock timeout breaks it:
        // the attempt rolls back (freeing the row) and is made again.
        let mut attempt = 1;
        let (live, caught_up) = loop {
            let mut transaction = read.begin().await?;
            sqlx::query(&format!("set local lock_timeout = '{}ms'", SWAP_LOCK_TIMEOUT.as_millis()))
                .execute(&mut *transaction)
                .await?;
            let swapped = async {
                let (live,): (i64,) = sqlx::query_as(
                    "select position from public.projector_checkpoints where projector = $1 for update",
                )
                .bind(name)
                .fetch_optional(&mut *transaction)
                .await?
                .unwrap_or((0,));
                let (mut at, mut caught_up) = (position, 0);
                loop {
                    let events = synapse_shared::event_log::read_after(&log, at, PAGE).await?;
                    let events: Vec<&EventEnvelope> = events
                        .iter()
                        .filter(|event| event.position <= live)
                        .collect();
                    let Some(last) = events.last().map(|event| event.position) else {
                        break;
                    };
                    projector.project(&mut transaction, &events).await?;
                    caught_up += events.len() as u64;
                    at = last;
                }
                for table in tables {
                    let names = index_names(&mut transaction, &schema, table).await?;
                    sqlx::query(&format!("drop table public.{table}"))
                        .execute(&mut *transaction)
                        .await?;
                    sqlx::query(&format!("alter table {schema}.{table} set schema public"))
                        .execute(&mut *transaction)
                        .await?;
                    for (made, kept) in names {
                        sqlx::query(&format!("alter index public.{made} rename to {kept}"))
                            .execute(&mut *transaction)
                            .await?;
                    }
                }
                anyhow::Ok((live, at, caught_up))
            }
            .await;
            match swapped {
                Ok((live, at, caught_up)) => {
                    transaction.commit().await?;
                    position = at;
                    break (live, caught_up);
                }
                Err(error) if attempt < SWAP_ATTEMPTS && is_lock_timeout(&error) => {
                    transaction.rollback().await?;
                    tracing::info!(projector = name, attempt, "rebuild: the swap waited too long for a lock; trying again");
                    attempt += 1;
                    tokio::time::sleep(SWAP_LOCK_TIMEOUT).await;
                }
                Err(error) => return Err(error),
            }
        };
        applied += caught_up;
        anyhow::Ok(Rebuilt {
            projector: name,
            events: applied,
            position: live.max(position),
        })
    }
    .await;
    let dropped = sqlx::query(&format!("drop schema if exists {schema} cascade"))
        .execute(&mut read)
        .await;
    if let Err(error) = dropped {
        tracing::warn!(%error, %schema, "could not drop the scratch schema");
    }
    result
}

async fn live_position(connection: &mut PgConnection, projector: &str) -> Result<i64, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("select position from public.projector_checkpoints where projector = $1")
            .bind(projector)
            .fetch_optional(connection)
            .await?;
    Ok(row.map_or(0, |(position,)| position))
}

/// Apply the next page of the log after `after` (not past `target`); returns how many
/// events and the last position.
async fn fold_page<P: Projector>(
    log: &sqlx::PgPool,
    read: &mut PgConnection,
    projector: &P,
    after: i64,
    target: i64,
) -> anyhow::Result<(u64, i64)> {
    let events = synapse_shared::event_log::read_after(log, after, PAGE).await?;
    let events: Vec<&EventEnvelope> = events
        .iter()
        .filter(|event| event.position <= target)
        .collect();
    let Some(last) = events.last().map(|event| event.position) else {
        return Ok((0, after));
    };
    let mut transaction = read.begin().await?;
    projector.project(&mut transaction, &events).await?;
    transaction.commit().await?;
    Ok((events.len() as u64, last))
}

/// The scratch schemas of `projector`'s rebuilds are named this and a UUID.
fn scratch_prefix(projector: &str) -> String {
    format!("rebuild_{projector}_")
}

/// Make this connection the one rebuild of `projector` on the read database, and drop
/// the scratch schemas of rebuilds that died before they could (a killed rebuild of
/// the event history left hundreds of MB behind, and the next rebuild left them too).
/// The claim is a session advisory lock: it ends with the connection, however that
/// ends, so a schema found while holding it belongs to no running rebuild.
async fn claim(read: &mut PgConnection, projector: &str) -> anyhow::Result<()> {
    let key = format!("synapse rebuild {projector}");
    let (claimed,): (bool,) = sqlx::query_as("select pg_try_advisory_lock(hashtext($1))")
        .bind(&key)
        .fetch_one(&mut *read)
        .await?;
    if !claimed {
        anyhow::bail!("another rebuild of `{projector}` is running on this read database");
    }
    let prefix = scratch_prefix(projector);
    let schemas: Vec<(String,)> = sqlx::query_as("select nspname::text from pg_namespace")
        .fetch_all(&mut *read)
        .await?;
    for (schema,) in schemas {
        let leftover = schema
            .strip_prefix(&prefix)
            .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        if leftover {
            tracing::info!(%schema, "dropping the scratch schema of an interrupted rebuild");
            sqlx::query(&format!("drop schema {schema} cascade"))
                .execute(&mut *read)
                .await?;
        }
    }
    Ok(())
}
